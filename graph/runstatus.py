"""What a run's checkpoint says about it: ``RunStatus`` and ``compute_status`` (pure, over a LangGraph snapshot).

States: ``not_started``, ``running`` (another process holds the run's lock), ``interrupted`` (unfinished: killed,
Ctrl-C, or stopped by an error), ``completed`` and ``completed_with_failures`` (finished, some sections failed
because the endpoint or the executor did). Sections are shown by heading path (``Guide > Loops``), with ids kept
for ``--section``.

Where the truth lives: LangGraph merges the section branches' results into the run state only when the whole
fan-out superstep ends, and saves a finished branch's write late. Each section subgraph checkpoints its own steps,
so an unfinished run's sections are counted from the snapshot's tasks and their subgraph states as well.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from doctune.agents.dataset_yield import yield_json
from doctune.graph.names import SECTION

STATES = ("not_started", "running", "interrupted", "completed", "completed_with_failures")


@dataclass
class RunStatus:
    run_id: str
    state: str  # one of STATES
    total: int = 0
    done: int = 0
    failed: int = 0
    pending: int = 0
    accepted: int = 0
    rejected: int = 0
    tokens: dict[str, int] = field(default_factory=lambda: {"input": 0, "output": 0})
    failures: list[dict[str, str]] = field(default_factory=list)  # {"section_id", "heading_path", "error"}
    pending_ids: list[str] = field(default_factory=list)
    section_ids: list[str] = field(default_factory=list)
    pending_headings: list[str] = field(default_factory=list)
    attempts: list[dict[str, Any]] = field(default_factory=list)  # run.json's history (without settings)
    yields: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # {"sources", "sections"}: dataset_yield

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "state": self.state,
            "sections": {"total": self.total, "done": self.done, "failed": self.failed, "pending": self.pending},
            "pairs": {"accepted": self.accepted, "rejected": self.rejected},
            "tokens": dict(self.tokens),
            "failed": list(self.failures),
            "pending": list(self.pending_headings),
            "attempts": list(self.attempts),
            "yield": dict(self.yields),
        }


def _task_section_ids(snap: Any) -> dict[str, str]:
    """task id -> section id for the fan-out tasks that started (their subgraph state holds the section id)."""
    ids: dict[str, str] = {}
    for t in snap.tasks:
        if t.name != SECTION:
            continue
        res = _task_results(t)
        sub = getattr(t.state, "values", None) or {}
        if res:
            ids[t.id] = res[0]["section_id"]
        elif sub.get("section_id"):
            ids[t.id] = sub["section_id"]
    return ids


def _task_results(task: Any) -> list[dict[str, Any]]:
    """The SectionResult a section branch produced: its saved write, else the `results` its subgraph's own last
    checkpoint holds after `finish` (the write is not saved until the superstep's writes are flushed)."""
    res = task.result
    if isinstance(res, dict) and res.get("results"):
        return list(res["results"])
    sub = getattr(task.state, "values", None)  # a StateSnapshot when read with subgraphs=True
    if isinstance(sub, dict) and not getattr(task.state, "next", ()) and sub.get("results"):
        return list(sub["results"])
    return []


def _is_real_error(err: Any) -> bool:
    """A branch that raised (not one cancelled because a sibling raised or the process stopped)."""
    return err is not None and "CancelledError" not in repr(err)


def one_line(err: Any) -> str:
    text = str(err).strip().splitlines()
    return text[0][:300] if text else type(err).__name__


def compute_status(run_id: str, snap: Any, heading: Callable[[str], str] = str, running: bool = False,
                   extra_tokens: dict[str, int] | None = None) -> RunStatus:
    """Sections done/failed/pending, pairs and tokens from a LangGraph state snapshot of the run's thread.

    ``heading`` maps a section id to its heading path; ``extra_tokens`` are tokens spent by results a retry
    replaced (run.json keeps them); ``running`` says another process holds the run."""
    values = snap.values or {}
    if not values and not snap.next and not snap.tasks:
        return RunStatus(run_id=run_id, state="running" if running else "not_started")
    section_ids = list(values.get("section_ids", []))
    results = {r["section_id"]: r for r in values.get("results", [])}
    raised: dict[str, str] = {}
    owners = _task_section_ids(snap)
    for t in snap.tasks:
        if t.name != SECTION:
            continue
        for r in _task_results(t):
            results[r["section_id"]] = r
        if not _task_results(t) and _is_real_error(t.error) and t.id in owners:
            raised[owners[t.id]] = one_line(t.error)
    failures = [{"section_id": s, "error": one_line(r["error"])} for s, r in results.items() if r.get("error")]
    failures += [{"section_id": s, "error": e} for s, e in raised.items() if s not in results]
    for f in failures:
        f["heading_path"] = heading(f["section_id"])
    failed_ids = {f["section_id"] for f in failures}
    done = [s for s in section_ids if s in results and s not in failed_ids]
    pending = [s for s in section_ids if s not in results and s not in failed_ids]
    kept = values.get("kept")
    accepted = len(kept) if kept is not None else sum(len(r["accepted"]) for r in results.values())
    rejected = sum(len(r["rejected"]) for r in results.values()) + len(values.get("dropped", []))
    if running:
        state = "running"
    elif snap.next or snap.tasks:
        state = "interrupted"
    else:
        state = "completed_with_failures" if failures else "completed"
    extra = extra_tokens or {}
    tokens = {k: sum((r.get("tokens") or {}).get(k, 0) for r in results.values()) + extra.get(k, 0)
              for k in ("input", "output")}
    return RunStatus(run_id=run_id, state=state, total=len(section_ids), done=len(done), failed=len(failures),
                     pending=len(pending), accepted=accepted, rejected=rejected, tokens=tokens,
                     failures=failures, pending_ids=pending, section_ids=section_ids,
                     pending_headings=[heading(s) for s in pending],
                     yields=yield_json(results.values(), heading, section_ids))
