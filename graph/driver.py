"""Drive one pipeline run: pick the run id, open the checkpointer, start/resume/skip, report progress, summarise.

The lifecycle around it (run.json's settings of record, attempts, the run lock, retry, status) is
`doctune.graph.lifecycle`; scripts call `doctune.run` / `doctune.retry` / `doctune.status` rather than this.
Progress goes to an observer the caller passes (the app's Rich/plain-line `RunProgress`); none: silent.

A run is identified by its inputs (doc contents + the settings that shape the output), so running the same
command again resumes the same LangGraph thread: finished sections are not redone, a finished run is not rerun.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from doctune.core.errors import InputError
from doctune.core.schemas import sha256
from doctune.core.settings import Settings


class Progress(Protocol):
    """What the driver tells a progress display: a context manager fed with section counts and streamed updates."""

    def __enter__(self) -> Progress: ...
    def __exit__(self, *exc: object) -> None: ...
    def sections_done(self, done: int, total: int | None) -> None: ...
    def on_update(self, update: dict[str, Any]) -> None: ...


class NoProgress:
    """The silent observer (scripts, tests, benchmarks)."""

    def __enter__(self) -> NoProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def sections_done(self, done: int, total: int | None) -> None:
        return None

    def on_update(self, update: dict[str, Any]) -> None:
        return None


@dataclass
class RunSummary:
    run_id: str
    status: str  # completed | resumed | already_complete
    generator: str
    sections: int
    sections_total: int
    generated: int
    accepted: int
    rejected: int
    failed_sections: int
    reasons: dict[str, int]
    repairs: dict[int, int]  # k repairs -> accepted pairs
    tokens: dict[str, int]
    wall_s: float
    export: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    evaluation: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _doc_fingerprint(docs: list[str]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for d in docs:
        p = Path(d)
        if not p.exists():
            raise InputError(f"no such file or directory: {d}")
        files = sorted(x for x in p.rglob("*") if x.is_file()) if p.is_dir() else [p]
        out.extend((str(f), sha256(f.read_bytes())) for f in files)
    return out


def compute_run_id(docs: list[str], max_sections: int | None, settings: Settings) -> str:
    """Same inputs and output-shaping settings -> same run id (= LangGraph thread id)."""
    from doctune.agents.generator import generator_kind

    key = {
        "docs": _doc_fingerprint(docs),
        "max_sections": max_sections,
        "split": settings.split.model_dump(mode="json"),
        "generator": settings.generator.model_dump(mode="json", exclude={"concurrency", "sections_in_flight"}),
        "kind": generator_kind(settings),
        "model": settings.llm.model if generator_kind(settings) == "llm" else None,
        "curator": settings.curator.model_dump(mode="json"),
        "train": settings.train.model_dump(mode="json"),
    }
    return "run-" + sha256(json.dumps(key, sort_keys=True), 12)


async def run_pipeline(
    docs: list[str],
    out_dir: Path,
    settings: Settings,
    *,
    max_sections: int | None = None,
    run_id: str | None = None,
    progress: Progress | None = None,
    context: Any = None,
    endpoint_verified: bool = False,
) -> RunSummary:
    """Run (or resume) the graph for `docs` into `out_dir`; returns the summary. `endpoint_verified` (the
    preflight probe was answered) goes to the Context built here; a given `context` carries its own."""
    from doctune.agents.generator import generator_kind
    from doctune.graph import checkpoint
    from doctune.graph.context import Context
    from doctune.graph.graph import build_graph

    t0 = time.monotonic()
    run_id = run_id or compute_run_id(docs, max_sections, settings)
    out_dir.mkdir(parents=True, exist_ok=True)
    ctx = context or Context(settings=settings, out_dir=out_dir, endpoint_verified=endpoint_verified)
    config = {
        "configurable": {"thread_id": run_id},
        # Sections run up to this bound; the LLM client itself keeps to generator.concurrency requests, and the
        # validator to validator.concurrency checks, so a section waiting for its checks holds no LLM slot.
        "max_concurrency": settings.generator.sections_bound(),
        "recursion_limit": 50 + 4 * (settings.generator.max_repairs + 2),
        **trace_config(run_id, docs, settings),
    }
    async with checkpoint.open_persistence(settings.checkpoint.url, out_dir) as (saver, store):
        try:
            status, values = await _drive(build_graph(checkpointer=saver, store=store), docs, max_sections, config,
                                          ctx, progress or NoProgress())
            if status == "already_complete" and not _exported_in(out_dir, values):
                # finished in another directory (same Postgres run): this one gets the outputs too
                from doctune.graph.nodes import write_outputs
                from doctune.graph.store import Store

                values = {**values, "export": await write_outputs(Store(store, run_id), out_dir, values, settings)}
        finally:  # every exit path (an error, Ctrl-C) closes what this run opened: HTTP clients, verdict cache
            if context is None:
                await ctx.aclose()
    _flush_traces()
    return summarize(run_id, status, generator_kind(settings), values, time.monotonic() - t0)


def _exported_in(out_dir: Path, values: dict[str, Any]) -> bool:
    """Did the run's export write into `out_dir` (the paths its export recorded are there)?"""
    paths = [v for k, v in (values.get("export") or {}).items() if isinstance(v, str) and k.endswith(("path", "dir"))]
    return bool(paths) and all(Path(p).resolve().is_relative_to(out_dir.resolve()) and Path(p).exists()
                               for p in paths)


async def _drive(graph: Any, docs: list[str], max_sections: int | None, config: dict[str, Any], ctx: Any,
                 progress: Progress) -> tuple[str, dict[str, Any]]:
    """Start, resume or skip the run's thread; (status, final values)."""
    from doctune.graph.names import SECTION

    snap = await graph.aget_state(config)
    # A killed run can stop after a step's writes were saved but before the next checkpoint was: then the
    # snapshot has tasks (all with results) and no `next`. Only a finished run has neither.
    unfinished = bool(snap.next or snap.tasks)
    if snap.values and not unfinished:
        return "already_complete", snap.values
    status = "resumed" if unfinished else "completed"
    inp = None if unfinished else {"docs": docs, "max_sections": max_sections}
    done_before = sum(1 for t in snap.tasks if t.name == SECTION and t.result is not None)
    with progress as prog:
        prog.sections_done(done_before, len(snap.values.get("section_ids", [])) or None)
        # Run-level updates only: the bar advances when a section branch hands back its result
        # (streaming every subgraph step as well costs ~10% of the run's CPU at 200 sections).
        async for update in graph.astream(inp, config, context=ctx, stream_mode="updates"):
            prog.on_update(update)
    return status, (await graph.aget_state(config)).values


def trace_config(run_id: str, docs: list[str], settings: Settings) -> dict[str, Any]:
    """How the run shows up in LangSmith (when LANGSMITH_TRACING=true): its name, tags and metadata.

    Only public facts: the settings enter as a hash of their masked dump (`public_dict`), never as values.
    """
    from doctune.agents.generator import generator_kind
    from doctune.core.zig import EXPECTED_VERSION

    kind = generator_kind(settings)
    metadata: dict[str, Any] = {
        "run_id": run_id,
        "docs": [Path(d).name for d in docs],
        "settings_hash": sha256(json.dumps(settings.public_dict(), sort_keys=True, default=str), 12),
        "generator": kind,
        "zig_version": EXPECTED_VERSION,
    }
    if kind == "llm":
        metadata["model"] = settings.llm.model
    return {"run_name": f"doctune run {run_id}", "tags": ["doctune", f"generator:{kind}", f"zig-{EXPECTED_VERSION}",
                                                           f"run:{run_id}"], "metadata": metadata}


def _flush_traces() -> None:
    """Send the queued LangSmith runs before the process exits (the client posts from a background thread)."""
    try:
        from langchain_core.tracers.langchain import wait_for_all_tracers
    except ImportError:  # pragma: no cover - langchain-core comes with langgraph
        return
    wait_for_all_tracers()


def summarize(run_id: str, status: str, generator: str, values: dict[str, Any], wall_s: float) -> RunSummary:
    results = values.get("results", [])
    reasons = Counter(r["reason"] for s in results for r in s["rejected"])
    reasons.update(d["reason"] for d in values.get("dropped", []))
    repairs = Counter(k for s in results for k in s["repairs"].values())
    return RunSummary(
        run_id=run_id,
        status=status,
        generator=generator,
        sections=len(values.get("section_ids", [])),
        sections_total=values.get("sections_total", 0),
        generated=sum(s["generated"] for s in results),
        accepted=len(values.get("kept", [])),
        rejected=sum(reasons.values()),
        failed_sections=sum(1 for s in results if s["error"]),
        reasons=dict(reasons),
        repairs=dict(sorted(repairs.items())),
        tokens={k: sum(s["tokens"].get(k, 0) for s in results) for k in ("input", "output")},
        wall_s=round(wall_s, 2),
        export=values.get("export", {}),
        train=values.get("train", {}),
        evaluation=values.get("evaluation", {}),
    )
