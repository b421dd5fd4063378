"""A run's lifecycle in one place: start or resume (`arun`), read (`astatus`) and retry (`aretry`) a run, for
scripts, the CLI (which only displays) and the server. Synchronous callers use `doctune.run` / `status` / `retry`
(`doctune.app.runner`), which turn Ctrl-C / SIGTERM into `Interrupted` (checkpoints kept, resumable).

Settings of record: the first start writes the settings to the run's record (secrets masked, endpoint and
generator resolved); a retry uses the last attempt's settings plus explicit `changes`, never the caller's
environment (the API key excepted). Every start, resume and retry is appended to the run's history. The record is
kept in the run's checkpoint database (LangGraph's store) and copied to `DIR/run.json`; the database's copy wins,
so a run on Postgres resumes from any directory that has the URL and the docs, with no local run files. One
process at a time works on a run directory (`DIR/.lock`, an flock the kernel drops when the process dies,
`kill -9` included) and, on Postgres, on a run (an advisory lock that ends with its connection).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from doctune.core.errors import ConfigError, InputError
from doctune.core.settings import Settings, load_settings
from doctune.graph import runrecord
from doctune.graph.driver import RunSummary, compute_run_id, run_pipeline
from doctune.graph.runlock import claim_run, lock_held
from doctune.graph.runstatus import RunStatus, compute_status

if TYPE_CHECKING:
    from doctune.agents.endpoint import EndpointCheck

KNOWN_RUNS = 10  # runs of the database named when a directory has none
log = logging.getLogger(__name__)


# ---------------------------------------------------------------- start / resume


async def arun(docs: list[str], out_dir: Path | str, settings: Settings | None = None, *,
               max_sections: int | None = None, context: Any = None, progress: Any = None,
               check_llm: bool = True) -> RunSummary:
    """Run `docs` into `out_dir`, or resume the run these inputs already started there (same run id).

    Raises InputError (bad docs, bad max_sections, directory in use), AccessError (refused key/model: the run
    stops at once), and lets CancelledError through after recording the attempt as interrupted."""
    out_dir = Path(out_dir)
    if max_sections is not None and (not isinstance(max_sections, int) or max_sections < 1):
        raise InputError(f"max_sections must be a whole number >= 1, not {max_sections!r}")
    settings = settings or load_settings()
    check = await asyncio.to_thread(preflight, docs, settings, check_llm)
    run_id = compute_run_id(docs, max_sections, settings)
    url = settings.checkpoint.url
    async with claim_run(out_dir, url, run_id):
        info = await _begin_run(out_dir, run_id, url, lambda known: runrecord.begin_attempt(
            known, run_id, docs, max_sections, settings, "resume" if known else "run",
            tokens_preflight=check.usage.as_meta()))
        return await _attempt(out_dir, info, url, lambda: run_pipeline(
            docs, out_dir, settings, max_sections=max_sections, run_id=run_id, progress=progress,
            context=context, endpoint_verified=check.verified))


async def _begin_run(out_dir: Path, run_id: str, url: str | None, begin: Callable[[Any], dict[str, Any]]
                     ) -> dict[str, Any]:
    """Read the run's record, append the attempt `begin` makes of it, save it (one database connection)."""
    from doctune.graph.checkpoint import open_persistence
    from doctune.graph.store import put_record

    async with open_persistence(url, out_dir) as (_, store):
        info = begin(await _known(out_dir, run_id, store))
        await put_record(store, info)
    await asyncio.to_thread(runrecord.save_record, out_dir, info)
    return info


async def _load_run(out_dir: Path, run_id: str, url: str | None) -> dict[str, Any] | None:
    from doctune.graph.checkpoint import open_persistence

    async with open_persistence(url, out_dir) as (_, store):
        return await _known(out_dir, run_id, store)


async def _known(out_dir: Path, run_id: str, store: Any) -> dict[str, Any] | None:
    """The run's record: the checkpoint database's (shared by every directory that resumes the run), else the
    one in DIR/run.json if it is this run's; None for a new run."""
    from doctune.graph.store import get_record

    info = await get_record(store, run_id)
    if info is None:
        try:
            info = await asyncio.to_thread(runrecord.load_record, out_dir)
        except InputError:
            return None
    return info if info.get("run_id") == run_id else None


async def _save_run(out_dir: Path, info: dict[str, Any], url: str | None) -> None:
    """Save the record to the checkpoint database and to DIR/run.json (a copy for people and `doctune status`)."""
    from doctune.graph.checkpoint import open_persistence
    from doctune.graph.store import put_record

    async with open_persistence(url, out_dir) as (_, store):
        await put_record(store, info)
    await asyncio.to_thread(runrecord.save_record, out_dir, info)


async def _end_run(out_dir: Path, info: dict[str, Any], url: str | None, outcome: str, failing: bool) -> None:
    """Record how the attempt ended, even while this task is being cancelled (Ctrl-C). When the attempt itself
    failed (`failing`), a database that cannot be written is logged, not raised over the run's own error."""
    from doctune.graph.checkpoint import await_fully

    info = runrecord.end_attempt(info, outcome)
    try:
        await await_fully(_save_run(out_dir, info, url))
    except Exception as e:
        if not failing:
            raise
        log.warning("could not record the attempt's end in the checkpoint database: %s", e)
        runrecord.save_record(out_dir, info)


async def _attempt(out_dir: Path, info: dict[str, Any], url: str | None, go: Any) -> RunSummary:
    """Await one attempt, recording how it ended; the summary's tokens include those of replaced results."""
    try:
        summary: RunSummary = await go()
    except asyncio.CancelledError:
        await _end_run(out_dir, info, url, "interrupted", failing=True)
        raise
    except BaseException as e:
        why = f"stopped: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        await _end_run(out_dir, info, url, why, failing=True)
        raise
    await _end_run(out_dir, info, url, "completed_with_failures" if summary.failed_sections else "completed",
                   failing=False)
    extra = runrecord.superseded_tokens(info)
    summary.tokens = {k: summary.tokens.get(k, 0) + extra.get(k, 0) for k in ("input", "output")}
    return summary


def preflight(docs: list[str], settings: Settings, check_llm: bool = True) -> EndpointCheck:
    """Check the inputs, the training config and the LLM endpoint before anything is written: a bad doc, a
    misspelled `train.preset` or override, an unreachable endpoint or a refused key/model ends with one line and
    leaves no run state behind. With an LLM, one probe request with the run's key and model (`probe_chat`): when
    it is answered, the run's client needs no first-request gate."""
    from doctune.agents.endpoint import EndpointCheck, check_endpoint, probe_chat
    from doctune.agents.generator import generator_kind
    from doctune.agents.splitter import split_paths

    split_paths(docs, settings.split)
    check_train(settings)
    if check_llm and generator_kind(settings) == "llm":
        check_endpoint(settings.llm)
        return probe_chat(settings.llm)
    return EndpointCheck()


def check_train(settings: Settings) -> None:
    """With training on, resolve `train.*` into the training config now (preset name, override keys and values),
    so a typo fails here rather than after generation. Light: presets and the config model only, no torch."""
    if not settings.train.enabled:
        return
    from doctune.trainer.config import resolve_config

    t = settings.train
    resolve_config(t.preset, overrides=dict(t.overrides), max_steps=t.max_steps, backend=t.backend)


# ---------------------------------------------------------------- status


def _checkpoint_url(run_dir: Path, info: dict[str, Any], given: str | None) -> str | None:
    """Where the run's checkpoints are: the given URL, else the one run.json recorded, else SQLite in run_dir."""
    if given:
        return given
    recorded = ((info.get("settings") or {}).get("checkpoint") or {}).get("url")
    if recorded and runrecord.MASK in recorded:
        raise ConfigError("this run's checkpoints are in a database whose URL is masked in run.json: "
                          "set DOCTUNE_CHECKPOINT__URL (or checkpoint.url in --config)")
    if recorded:
        return str(recorded)
    if not (run_dir / "state.sqlite").is_file():
        raise InputError(f"{run_dir} has no checkpoints (state.sqlite is missing)")
    return None


async def _find_run(out_dir: Path, checkpoint_url: str | None, run_id: str | None) -> tuple[dict[str, Any], str | None]:
    """The run's record (the database's copy when it has one) and its checkpoint URL: from DIR/run.json, or, given
    `run_id`, from the checkpoint database alone, so a run on Postgres can be read or retried from a directory
    that never held it."""
    from doctune.graph.checkpoint import is_postgres

    if run_id is None:
        try:
            info = runrecord.load_record(out_dir)
        except InputError as e:
            if not is_postgres(checkpoint_url):
                raise
            try:
                known = await _known_runs(out_dir, checkpoint_url)
            except Exception as why:  # the database cannot be read: the missing run.json is still the news
                log.debug("listing the database's runs failed: %s", why)
                raise e from None
            raise InputError(f"{e}; {known}") from None
        url = _checkpoint_url(out_dir, info, checkpoint_url)
        return await _load_run(out_dir, info["run_id"], url) or info, url
    if checkpoint_url is None and not (out_dir / "state.sqlite").is_file():
        raise InputError(f"run {run_id}: {out_dir} holds no checkpoints; set the run's database "
                         "(DOCTUNE_CHECKPOINT__URL, or checkpoint.url in --config)")
    found = await _load_run(out_dir, run_id, checkpoint_url)
    if found is None:
        where = "the checkpoint database" if checkpoint_url else str(out_dir / "state.sqlite")
        raise InputError(f"no run {run_id} in {where}")
    return found, checkpoint_url


async def _known_runs(out_dir: Path, url: str | None) -> str:
    """What to say of the runs a checkpoint database holds: their ids (docs; last attempt's outcome), newest
    first."""
    from doctune.graph.checkpoint import open_persistence
    from doctune.graph.store import list_records

    async with open_persistence(url, out_dir) as (_, store):
        runs = await list_records(store, limit=KNOWN_RUNS + 1)
    if not runs:
        return "the checkpoint database holds no run either"
    def one(r: dict[str, Any]) -> str:
        docs = ", ".join(map(str, r.get("docs") or []))
        return f"{r['run_id']} ({docs}; {((r.get('attempts') or [{}])[-1]).get('outcome', 'no attempt')})"

    more = f", ... (the newest {KNOWN_RUNS} shown)" if len(runs) > KNOWN_RUNS else ""
    return "or name a run of the checkpoint database with --run-id: " + ", ".join(map(one, runs[:KNOWN_RUNS])) + more


async def astatus(out_dir: Path | str, checkpoint_url: str | None = None, *, run_id: str | None = None) -> RunStatus:
    """The run in `out_dir` (or, given `run_id`, that run of the checkpoint database, from any directory) as its
    checkpoint sees it: running / interrupted / completed (with failures)."""
    from doctune.graph.checkpoint import run_in_use

    out_dir = Path(out_dir)
    info, url = await _find_run(out_dir, checkpoint_url, run_id)
    dir_run = run_id is None or _dir_run_id(out_dir) == info["run_id"]  # DIR's lock says nothing of other runs
    return await _status(out_dir, info, url, (dir_run and lock_held(out_dir)) or await run_in_use(url, info["run_id"]))


def _dir_run_id(out_dir: Path) -> str | None:
    try:
        return str(runrecord.load_record(out_dir)["run_id"])
    except InputError:
        return None


async def _status(out_dir: Path, info: dict[str, Any], url: str | None, running: bool) -> RunStatus:
    """The run's status from its checkpoints; section headings and the record (attempts) from its store."""
    from doctune.graph.checkpoint import open_persistence
    from doctune.graph.graph import build_graph
    from doctune.graph.store import Store, get_record

    async with open_persistence(url, out_dir) as (saver, base):
        graph = build_graph(checkpointer=saver, store=base)
        snap = await graph.aget_state({"configurable": {"thread_id": info["run_id"]}}, subgraphs=True)
        info = await get_record(base, info["run_id"]) or info
        sections = await Store(base, info["run_id"]).get_sections(list((snap.values or {}).get("section_ids", [])))
    headings = {s.id: s.heading_path or s.id for s in sections}
    st = await asyncio.to_thread(compute_status, info["run_id"], snap, lambda sid: headings.get(sid, sid), running,
                                 runrecord.superseded_tokens(info))
    st.attempts = [{k: v for k, v in a.items() if k != "settings"} for a in info.get("attempts") or []]
    return st


# ---------------------------------------------------------------- retry


async def aretry(out_dir: Path | str, *, section: str | None = None, changes: dict[str, Any] | None = None,
                 checkpoint_url: str | None = None, progress: Any = None, check_llm: bool = True,
                 run_id: str | None = None) -> RunSummary | None:
    """Re-run the failed (or, for an unfinished run, the pending) sections with the run's settings of record
    plus `changes` (e.g. ``{"llm": {"model": "m2"}}``), then curate and export again. None: nothing to retry.

    An unfinished run is resumed (LangGraph re-runs only branches without a saved result); a finished one is
    forked at its fan-out with every other section's result carried over, the replaced results' tokens kept in
    the run's history so totals still add up. `run_id`: the run of the checkpoint database to retry (on
    Postgres, from a directory that never held it), else the one DIR/run.json names."""
    out_dir = Path(out_dir)
    info, url = await _find_run(out_dir, checkpoint_url or load_settings().checkpoint.url, run_id)
    run_id, docs, max_sections = info["run_id"], info["docs"], info.get("max_sections")
    settings = runrecord.settings_of_record(info, changes, url)
    check = await asyncio.to_thread(preflight, docs, settings, check_llm)
    async with claim_run(out_dir, url, run_id):
        st = await _status(out_dir, info, url, running=False)  # we hold the run now
        if section is not None:
            _check_section(section, st)
        superseded = {"input": 0, "output": 0}
        if st.state in ("completed", "completed_with_failures"):
            targets = [section] if section else [f["section_id"] for f in st.failures]
            if not targets:
                return None
            superseded = await _fork_without(out_dir, settings, run_id, targets)
        info = runrecord.begin_attempt(info, run_id, docs, max_sections, settings, "retry", changes, superseded,
                                       tokens_preflight=check.usage.as_meta())
        await _save_run(out_dir, info, url)
        return await _attempt(out_dir, info, url, lambda: run_pipeline(
            docs, out_dir, settings, max_sections=max_sections, run_id=run_id, progress=progress,
            endpoint_verified=check.verified))


def _check_section(section: str, st: RunStatus) -> None:
    if section in {f["section_id"] for f in st.failures} or section in st.pending_ids:
        return
    if section not in st.section_ids:
        raise InputError(f"section {section} is not part of run {st.run_id} (see `doctune status --json`)")
    raise InputError(f"section {section} finished without error: nothing to retry")


async def _fork_without(run_dir: Path, settings: Settings, run_id: str, targets: list[str]) -> dict[str, int]:
    """Fork the finished run at its fan-out checkpoint, carrying over every section result but the targets';
    returns the tokens the dropped results had spent."""
    from doctune.graph.checkpoint import open_checkpointer
    from doctune.graph.graph import build_graph
    from doctune.graph.names import SECTION, SPLIT

    config = {"configurable": {"thread_id": run_id}}
    async with open_checkpointer(settings.checkpoint.url, run_dir) as saver:
        graph = build_graph(checkpointer=saver)
        latest = await graph.aget_state(config)
        results = latest.values.get("results", [])
        keep = [r for r in results if r["section_id"] not in targets]
        dropped = [r for r in results if r["section_id"] in targets]
        fan_out_point = None
        async for snap in graph.aget_state_history(config):
            if SECTION in snap.next:
                fan_out_point = snap  # history runs newest first: keep the earliest (the original fan-out)
        if fan_out_point is None:
            raise InputError(f"run {run_id} has no fan-out checkpoint to retry from")
        await graph.aupdate_state(fan_out_point.config, {"results": keep}, as_node=SPLIT)
    return {k: sum((r.get("tokens") or {}).get(k, 0) for r in dropped) for k in ("input", "output")}
