"""Yield and difficulty of a run, per source and per section: sections -> pairs generated -> accepted by evidence
level -> repairs needed (what the dataset card and ``doctune status`` show).

Computed from the run state's section results alone (``graph.state.SectionResult``: counts, accepted ids, the
repairs and evidence of each accepted pair, the section's source and heading), so a status of a big run reads no
pair files. Results checkpointed before evidence was recorded count their pairs as ``unknown``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from doctune.core.schemas import EVIDENCE_RANK

LEVELS = sorted((k for k in EVIDENCE_RANK if k != "none"), key=EVIDENCE_RANK.__getitem__, reverse=True)


@dataclass
class Yield:
    """One row: a section, or a source (its sections added up)."""

    name: str  # heading path (section) or document (source)
    source: str
    section_id: str | None = None
    sections: int = 0
    failed: int = 0  # sections that failed (infrastructure)
    generated: int = 0
    accepted: Counter[str] = field(default_factory=Counter)  # evidence level -> pairs accepted by validation
    rejected: int = 0
    repaired: int = 0  # accepted pairs that needed at least one repair
    repairs: int = 0  # repair rounds those pairs needed

    def add(self, other: Yield) -> None:
        for f in ("sections", "failed", "generated", "rejected", "repaired", "repairs"):
            setattr(self, f, getattr(self, f) + getattr(other, f))
        self.accepted.update(other.accepted)

    def to_json(self) -> dict[str, Any]:
        row: dict[str, Any] = {"source": self.source, "sections": self.sections, "failed": self.failed,
                               "generated": self.generated, "accepted": sum(self.accepted.values()),
                               "evidence": dict(self.accepted), "rejected": self.rejected,
                               "repaired": self.repaired, "repairs": self.repairs}
        if self.section_id is not None:
            row = {"section_id": self.section_id, "heading_path": self.name, **row}
        return row


def section_yields(results: Iterable[Mapping[str, Any]], heading: Callable[[str], str] = str,
                   order: Iterable[str] = (), source: Callable[[str], str] = lambda sid: "?") -> list[Yield]:
    """One row per section result (in ``order`` of section ids where given, then by source and heading);
    ``heading`` and ``source`` describe sections whose result predates the recorded heading and source."""
    rows = []
    for r in results:
        sid, evidence, repairs = r["section_id"], r.get("evidence") or {}, r.get("repairs") or {}
        accepted = Counter(evidence.get(pid, "unknown") for pid in r.get("accepted", []))
        repaired = [n for pid, n in repairs.items() if n > 0]
        rows.append(Yield(name=r.get("heading_path") or heading(sid), source=r.get("source") or source(sid),
                          section_id=sid, sections=1, failed=int(bool(r.get("error"))),
                          generated=r.get("generated", 0), accepted=accepted, rejected=len(r.get("rejected", [])),
                          repaired=len(repaired), repairs=sum(repaired)))
    rank = {sid: i for i, sid in enumerate(order)}
    return sorted(rows, key=lambda y: (rank.get(y.section_id or "", len(rank)), y.source, y.name))


def source_yields(sections: Iterable[Yield]) -> list[Yield]:
    """The sections' rows added up per source (sources in order of first appearance)."""
    by_source: dict[str, Yield] = {}
    for s in sections:
        by_source.setdefault(s.source, Yield(name=s.source, source=s.source)).add(s)
    return list(by_source.values())


def yield_json(results: Iterable[Mapping[str, Any]], heading: Callable[[str], str] = str,
               order: Iterable[str] = ()) -> dict[str, list[dict[str, Any]]]:
    """``{"sources": [...], "sections": [...]}`` rows (see ``Yield.to_json``)."""
    sections = section_yields(results, heading, order)
    return {"sources": [y.to_json() for y in source_yields(sections)], "sections": [y.to_json() for y in sections]}


def evidence_text(accepted: Mapping[str, int]) -> str:
    """'tested 3, ran 2' (strongest first; levels with no pairs left out)."""
    keys = [k for k in LEVELS if accepted.get(k)] + sorted(k for k in accepted if k not in LEVELS and accepted[k])
    return ", ".join(f"{k} {accepted[k]}" for k in keys) or "-"


def markdown_rows(rows: Iterable[Yield], first: str) -> list[str]:
    """A Markdown table: one row per ``Yield``, ``first`` naming the first column (source | section)."""
    out = [f"| {first} | sections | generated | accepted (by evidence) | rejected | repaired (rounds) |",
           "|---|---|---|---|---|---|"]
    for y in rows:
        failed = f" ({y.failed} failed)" if y.failed else ""
        out.append(f"| {y.name} | {y.sections}{failed} | {y.generated} | {sum(y.accepted.values())}: "
                   f"{evidence_text(y.accepted)} | {y.rejected} | {y.repaired} ({y.repairs}) |")
    return out


# attempts-to-pass -> difficulty tag: validations the pair needed (1 = passed first time, k = after k-1 repairs)
DIFFICULTY = {1: "easy", 2: "medium"}


def difficulty(attempts: int) -> str | None:
    """The difficulty tag of a pair that passed on attempt ``attempts`` (None: never validated, e.g. hand-written)."""
    return None if attempts < 1 else DIFFICULTY.get(attempts, "hard")
