"""`doctune status RUN_DIR [--json]` and `doctune retry RUN_DIR [--section ID]`: a run as its checkpoint sees it.

Defines `RunStatus` (sections done/failed/pending, pairs, tokens — `--json` prints the stable object
`{"sections": {"total", "done", "failed", "pending"}, "pairs": {"accepted", "rejected"}, "tokens": {"input",
"output"}}` plus `run_id`, `state` and `failed`), `compute_status` (pure, over a LangGraph `StateSnapshot`),
`read_status` and `retry_run`.

Where the truth lives: LangGraph merges the section branches' results into the run state only when the whole
fan-out superstep ends, and saves a finished branch's write late (with `max_concurrency` set, checkpoint writes
queue behind the waiting branches). Each section subgraph checkpoints its own steps, though, so an unfinished
run's sections are counted from the snapshot's tasks and their subgraph states as well as from `results`.

Retry uses LangGraph, not a second bookkeeping: an unfinished run (killed, or stopped by a section that raised) is
resumed — LangGraph re-runs only the branches without a successful write. A finished run whose results record
failed sections (`error` set) is forked at the fan-out checkpoint with the other sections' results carried over;
`fan_out` sends only sections without a result, so finished sections are never redone.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from doctune.cli.common import console, out, settings_from
from doctune.errors import ConfigError, InputError

STATES = ("not_started", "incomplete", "failed", "complete")


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
    failures: list[dict[str, str]] = field(default_factory=list)  # {"section_id", "error"}
    pending_ids: list[str] = field(default_factory=list)
    section_ids: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "state": self.state,
            "sections": {"total": self.total, "done": self.done, "failed": self.failed, "pending": self.pending},
            "pairs": {"accepted": self.accepted, "rejected": self.rejected},
            "tokens": dict(self.tokens),
            "failed": list(self.failures),
        }


def _task_section_ids(snap: Any) -> dict[str, str]:
    """task id -> section id for the fan-out tasks that started (their subgraph state holds the section id)."""
    ids: dict[str, str] = {}
    for t in snap.tasks:
        if t.name != "section":
            continue
        res = _task_results(t)
        sub = getattr(t.state, "values", None) or {}
        if res:
            ids[t.id] = res[0]["section_id"]
        elif sub.get("section_id"):
            ids[t.id] = sub["section_id"]
    return ids


def _task_results(task: Any) -> list[dict[str, Any]]:
    """The SectionResult a section branch produced: its saved write, else (the write is not saved until the
    superstep's writes are flushed) the `results` its subgraph's own last checkpoint holds after `finish`."""
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


def compute_status(run_id: str, snap: Any) -> RunStatus:
    """Sections done/failed/pending, pairs and tokens from a LangGraph state snapshot of the run's thread."""
    values = snap.values or {}
    if not values and not snap.next and not snap.tasks:
        return RunStatus(run_id=run_id, state="not_started")
    section_ids = list(values.get("section_ids", []))
    results = {r["section_id"]: r for r in values.get("results", [])}
    raised: dict[str, str] = {}
    owners = _task_section_ids(snap)
    for t in snap.tasks:
        if t.name != "section":
            continue
        for r in _task_results(t):
            results[r["section_id"]] = r
        if not _task_results(t) and _is_real_error(t.error) and t.id in owners:
            raised[owners[t.id]] = _one_line(t.error)
    failures = [{"section_id": s, "error": _one_line(r["error"])} for s, r in results.items() if r.get("error")]
    failures += [{"section_id": s, "error": e} for s, e in raised.items() if s not in results]
    failed_ids = {f["section_id"] for f in failures}
    done = [s for s in section_ids if s in results and s not in failed_ids]
    pending = [s for s in section_ids if s not in results and s not in failed_ids]
    kept = values.get("kept")
    accepted = len(kept) if kept is not None else sum(len(r["accepted"]) for r in results.values())
    rejected = sum(len(r["rejected"]) for r in results.values()) + len(values.get("dropped", []))
    if not snap.next and not snap.tasks:  # tasks all with results but no next: killed between two checkpoints
        state = "complete"
    elif raised or any(_is_real_error(t.error) for t in snap.tasks):
        state = "failed"
    else:
        state = "incomplete"
    tokens = {k: sum((r.get("tokens") or {}).get(k, 0) for r in results.values()) for k in ("input", "output")}
    return RunStatus(run_id=run_id, state=state, total=len(section_ids), done=len(done), failed=len(failures),
                     pending=len(pending), accepted=accepted, rejected=rejected, tokens=tokens,
                     failures=failures, pending_ids=pending, section_ids=section_ids)


def _one_line(err: Any) -> str:
    text = str(err).strip().splitlines()
    return text[0][:300] if text else type(err).__name__


# ---------------------------------------------------------------- run directory -> checkpoint


def load_run_info(run_dir: Path) -> dict[str, Any]:
    """The run's run.json (run id, docs, max_sections, public settings)."""
    f = run_dir / "run.json"
    if not f.is_file():
        raise InputError(f"{run_dir} is not a doctune run directory (no run.json; start it with `doctune run`)")
    try:
        info = json.loads(f.read_text(encoding="utf-8"))
        info["run_id"], info["docs"]  # noqa: B018 - both must be there
    except (ValueError, KeyError, TypeError) as e:
        raise InputError(f"{f} is damaged ({type(e).__name__}: {e}); re-run `doctune run` with the same inputs") from None
    return info


def checkpoint_url(run_dir: Path, info: dict[str, Any], configured: str | None) -> str | None:
    """Where the run's checkpoints are: the configured URL, else the one run.json recorded, else SQLite."""
    if configured:
        return configured
    recorded = ((info.get("settings") or {}).get("checkpoint") or {}).get("url")
    if recorded and "*" in recorded:  # masked: the URL carried a password
        raise ConfigError("this run's checkpoints are in a database whose URL is masked in run.json: "
                          "set DOCTUNE_CHECKPOINT__URL (or checkpoint.url in --config)")
    if recorded:
        return recorded
    if not (run_dir / "state.sqlite").is_file():
        raise InputError(f"{run_dir} has no checkpoints (state.sqlite is missing)")
    return None


async def read_status(run_dir: Path, settings: Any) -> RunStatus:
    from doctune.graph.checkpoint import open_checkpointer
    from doctune.graph.graph import build_graph

    info = load_run_info(run_dir)
    url = checkpoint_url(run_dir, info, settings.checkpoint.url)
    async with open_checkpointer(url, run_dir) as saver:
        graph = build_graph(checkpointer=saver)
        snap = await graph.aget_state({"configurable": {"thread_id": info["run_id"]}}, subgraphs=True)
    return compute_status(info["run_id"], snap)


# ---------------------------------------------------------------- retry


async def retry_run(run_dir: Path, settings: Any, section: str | None = None, show_progress: bool = True) -> Any:
    """Re-run only the failed or pending sections of the run in `run_dir`, then curate and export again."""
    from doctune.runner import compute_run_id, run_pipeline

    info = load_run_info(run_dir)
    run_id, docs, max_sections = info["run_id"], info["docs"], info.get("max_sections")
    url = checkpoint_url(run_dir, info, settings.checkpoint.url)
    settings = settings.model_copy(update={"checkpoint": settings.checkpoint.model_copy(update={"url": url})})
    if compute_run_id(docs, max_sections, settings) != run_id:
        console.print(f"[yellow]note:[/] inputs or settings differ from those of {run_id}; retrying that run "
                      "with the current settings", highlight=False)
    status = await read_status(run_dir, settings)
    if section is not None:
        _check_section(section, status, info)
    if status.state in ("not_started", "incomplete", "failed"):
        # LangGraph resumes the interrupted superstep: only branches without a successful write run again.
        return await run_pipeline(docs, run_dir, settings, max_sections=max_sections, run_id=run_id,
                                  show_progress=show_progress)
    targets = [section] if section else [f["section_id"] for f in status.failures]
    if not targets:
        return None
    await _fork_without(run_dir, settings, run_id, targets)
    return await run_pipeline(docs, run_dir, settings, max_sections=max_sections, run_id=run_id,
                              show_progress=show_progress)


def _check_section(section: str, status: RunStatus, info: dict[str, Any]) -> None:
    if section in {f["section_id"] for f in status.failures} or section in status.pending_ids:
        return
    if section not in status.section_ids:
        raise InputError(f"section {section} is not part of run {info['run_id']} (see `doctune status --json`)")
    raise InputError(f"section {section} finished without error: nothing to retry")


async def _fork_without(run_dir: Path, settings: Any, run_id: str, targets: list[str]) -> None:
    """Fork the finished run at its fan-out checkpoint, carrying over every section result but the targets'."""
    from doctune.graph.checkpoint import open_checkpointer
    from doctune.graph.graph import build_graph

    config = {"configurable": {"thread_id": run_id}}
    async with open_checkpointer(settings.checkpoint.url, run_dir) as saver:
        graph = build_graph(checkpointer=saver)
        latest = await graph.aget_state(config)
        keep = [r for r in latest.values.get("results", []) if r["section_id"] not in targets]
        fan_out_point = None
        async for snap in graph.aget_state_history(config):
            if "section" in snap.next:
                fan_out_point = snap  # history runs newest first: keep the earliest (the original fan-out)
        if fan_out_point is None:
            raise InputError(f"run {run_id} has no fan-out checkpoint to retry from")
        await graph.aupdate_state(fan_out_point.config, {"results": keep}, as_node="split")


# ---------------------------------------------------------------- commands


def print_status(s: RunStatus) -> None:
    t = Table(title=f"doctune run {s.run_id} ({s.state.replace('_', ' ')})", show_header=False)
    t.add_column(style="bold")
    t.add_column()
    t.add_row("sections", f"{s.total} total: [green]{s.done} done[/], [red]{s.failed} failed[/], {s.pending} pending")
    t.add_row("pairs", f"[green]{s.accepted} accepted[/], [red]{s.rejected} rejected[/]")
    t.add_row("tokens in/out", f"{s.tokens['input']} / {s.tokens['output']}")
    for f in s.failures[:10]:
        t.add_row(f"failed {f['section_id']}", f["error"])
    if len(s.failures) > 10:
        t.add_row("", f"... and {len(s.failures) - 10} more (--json lists all)")
    console.print(t)
    if s.state in ("incomplete", "failed") or s.failed:
        console.print("re-run only what is missing: [bold]doctune retry[/] RUN_DIR [--section ID]")


RunDir = Annotated[Path, typer.Argument(help="The run's output directory (has run.json).")]
Config = Annotated[Path | None, typer.Option("--config", "-c", help="TOML settings file (checkpoint.url, ...).")]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")]
SectionOpt = Annotated[str | None, typer.Option("--section", help="Retry only this failed or pending section.")]
Concurrency = Annotated[int | None, typer.Option("--concurrency", min=1, help="Sections in parallel.")]


def status(run_dir: RunDir, as_json: AsJson = False, config: Config = None) -> None:
    """Sections done/failed/pending, pairs accepted/rejected and tokens of a (possibly crashed) run."""
    s = asyncio.run(read_status(run_dir, settings_from(config)))
    if as_json:
        out.print_json(json.dumps(s.to_json()))
    else:
        print_status(s)


def retry(run_dir: RunDir, section: SectionOpt = None, config: Config = None, concurrency: Concurrency = None,
          as_json: AsJson = False) -> None:
    """Re-run only the failed or pending sections of a run (finished sections are kept), then re-export."""
    from doctune.cli.run import print_summary

    settings = settings_from(config, generator={"concurrency": concurrency})
    summary = asyncio.run(retry_run(run_dir, settings, section))
    if summary is None:
        console.print("nothing to retry: every section finished without error")
        return
    print_summary(summary, run_dir)
    if as_json:
        out.print_json(json.dumps(summary.to_json(), default=str))


def register(app: typer.Typer) -> None:
    app.command("status")(status)
    app.command("retry")(retry)
