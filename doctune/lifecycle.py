"""A run's lifecycle in one place: start or resume (`arun`), read (`astatus`) and retry (`aretry`) a run, for
scripts, the CLI (which only displays) and the server. `run` / `status` / `retry` are the same for synchronous
callers (a script, the CLI): they turn Ctrl-C / SIGTERM into `Interrupted` (checkpoints kept, resumable).

Settings of record: the first start writes the settings to `DIR/run.json` (secrets masked, endpoint and generator
resolved); a retry uses the last attempt's settings plus explicit `changes`, never the caller's environment (the
API key excepted). Every start, resume and retry is appended to the run's history. One process at a time works on
a run directory (`DIR/.lock`, an flock the kernel drops when the process dies, `kill -9` included).
"""

from __future__ import annotations

import asyncio
import fcntl
import gc
import os
import signal
import threading
import warnings
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from doctune import runrecord
from doctune.errors import ConfigError, InputError, Interrupted
from doctune.runner import RunSummary, compute_run_id, run_pipeline
from doctune.runstatus import RunStatus, compute_status
from doctune.settings import Settings, load_settings

if TYPE_CHECKING:
    from doctune.agents.endpoint import EndpointCheck

T = TypeVar("T")
LOCK_FILE = ".lock"


# ---------------------------------------------------------------- start / resume


async def arun(docs: list[str], out_dir: Path | str, settings: Settings | None = None, *,
               max_sections: int | None = None, context: Any = None, show_progress: bool = False,
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
    with run_lock(out_dir):
        known = _same_run(out_dir, run_id)
        runrecord.start_attempt(out_dir, run_id, docs, max_sections, settings, "resume" if known else "run",
                                tokens_preflight=check.usage.as_meta())
        return await _attempt(out_dir, lambda: run_pipeline(docs, out_dir, settings, max_sections=max_sections,
                                                            run_id=run_id, show_progress=show_progress,
                                                            context=context, endpoint_verified=check.verified))


def _same_run(out_dir: Path, run_id: str) -> bool:
    try:
        return runrecord.load_record(out_dir)["run_id"] == run_id
    except InputError:
        return False


async def _attempt(out_dir: Path, go: Any) -> RunSummary:
    """Await one attempt, recording how it ended; the summary's tokens include those of replaced results."""
    try:
        summary: RunSummary = await go()
    except asyncio.CancelledError:
        runrecord.finish_attempt(out_dir, "interrupted")
        raise
    except BaseException as e:
        runrecord.finish_attempt(out_dir, f"stopped: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
        raise
    runrecord.finish_attempt(out_dir, "completed_with_failures" if summary.failed_sections else "completed")
    extra = runrecord.superseded_tokens(runrecord.load_record(out_dir))
    summary.tokens = {k: summary.tokens.get(k, 0) + extra.get(k, 0) for k in ("input", "output")}
    return summary


def preflight(docs: list[str], settings: Settings, check_llm: bool = True) -> EndpointCheck:
    """Check the inputs (and the LLM endpoint) before anything is written: a bad doc, an unreachable endpoint or
    a refused key/model ends with one line and leaves no run state behind. With an LLM, one probe request with
    the run's key and model (`probe_chat`): when it is answered, the run's client needs no first-request gate."""
    from doctune.agents.endpoint import EndpointCheck, check_endpoint, probe_chat
    from doctune.agents.generator import generator_kind
    from doctune.agents.splitter import split_paths

    split_paths(docs, settings.split)
    if check_llm and generator_kind(settings) == "llm":
        check_endpoint(settings.llm)
        return probe_chat(settings.llm)
    return EndpointCheck()


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


async def astatus(out_dir: Path | str, checkpoint_url: str | None = None) -> RunStatus:
    """The run in `out_dir` as its checkpoint sees it: running / interrupted / completed (with failures)."""
    out_dir = Path(out_dir)
    info = runrecord.load_record(out_dir)
    return await _status(out_dir, info, _checkpoint_url(out_dir, info, checkpoint_url), lock_held(out_dir))


async def _status(out_dir: Path, info: dict[str, Any], url: str | None, running: bool) -> RunStatus:
    from doctune.graph.checkpoint import open_checkpointer
    from doctune.graph.graph import build_graph
    from doctune.store import Store

    async with open_checkpointer(url, out_dir) as saver:
        graph = build_graph(checkpointer=saver)
        snap = await graph.aget_state({"configurable": {"thread_id": info["run_id"]}}, subgraphs=True)
    store = Store(out_dir / "store")

    def heading(section_id: str) -> str:
        try:
            return store.get_section(section_id).heading_path or section_id
        except (OSError, ValueError):
            return section_id

    st = await asyncio.to_thread(compute_status, info["run_id"], snap, heading, running,
                                 runrecord.superseded_tokens(info))
    st.attempts = [{k: v for k, v in a.items() if k != "settings"} for a in info.get("attempts") or []]
    return st


# ---------------------------------------------------------------- retry


async def aretry(out_dir: Path | str, *, section: str | None = None, changes: dict[str, Any] | None = None,
                 checkpoint_url: str | None = None, show_progress: bool = False,
                 check_llm: bool = True) -> RunSummary | None:
    """Re-run the failed (or, for an unfinished run, the pending) sections with the run's settings of record
    plus `changes` (e.g. ``{"llm": {"model": "m2"}}``), then curate and export again. None: nothing to retry.

    An unfinished run is resumed (LangGraph re-runs only branches without a saved result); a finished one is
    forked at its fan-out with every other section's result carried over, the replaced results' tokens kept in
    the run's history so totals still add up."""
    out_dir = Path(out_dir)
    info = runrecord.load_record(out_dir)
    run_id, docs, max_sections = info["run_id"], info["docs"], info.get("max_sections")
    url = _checkpoint_url(out_dir, info, checkpoint_url or load_settings().checkpoint.url)
    settings = runrecord.settings_of_record(info, changes, url)
    check = await asyncio.to_thread(preflight, docs, settings, check_llm)
    with run_lock(out_dir):
        st = await _status(out_dir, info, url, running=False)  # we hold the lock now
        if section is not None:
            _check_section(section, st)
        superseded = {"input": 0, "output": 0}
        if st.state in ("completed", "completed_with_failures"):
            targets = [section] if section else [f["section_id"] for f in st.failures]
            if not targets:
                return None
            superseded = await _fork_without(out_dir, settings, run_id, targets)
        runrecord.start_attempt(out_dir, run_id, docs, max_sections, settings, "retry", changes, superseded,
                                tokens_preflight=check.usage.as_meta())
        return await _attempt(out_dir, lambda: run_pipeline(docs, out_dir, settings, max_sections=max_sections,
                                                            run_id=run_id, show_progress=show_progress,
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


# ---------------------------------------------------------------- one process per run directory


@contextmanager
def run_lock(out_dir: Path) -> Iterator[None]:
    """Hold `DIR/.lock` for the run (the kernel releases it when the process ends, however it ends)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(out_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InputError(f"{out_dir} is in use by another doctune run (wait for it, or stop it first)") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        yield
    finally:
        os.close(fd)  # closing the descriptor drops the lock


def lock_held(out_dir: Path) -> bool:
    """Is a run working on `out_dir` now (in this or another process)?"""
    path = out_dir / LOCK_FILE
    if not path.is_file():
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


# ---------------------------------------------------------------- synchronous entry points


def run_sync(main: Coroutine[Any, Any, T], resume_hint: str) -> T:
    """Run `main` in a fresh event loop; SIGINT/SIGTERM cancel it and raise `Interrupted` naming `resume_hint`.

    The loop is closed on every exit path (tasks cancelled, worker threads joined), so a script may catch the
    error and start again in the same process."""
    loop = asyncio.new_event_loop()
    task = loop.create_task(main)
    stopped: list[str] = []

    def stop(name: str) -> None:
        # LangGraph drops the coroutines of tasks it had not started yet: nothing is lost, but Python would warn.
        warnings.filterwarnings("ignore", "coroutine '.*' was never awaited", RuntimeWarning)
        stopped.append(name)
        task.cancel()

    def on_error(lp: asyncio.AbstractEventLoop, where: dict[str, Any]) -> None:
        # After Ctrl-C, futures that ended cancelled without anyone left to look at them are expected: not news.
        if not (stopped and isinstance(where.get("exception"), asyncio.CancelledError)):
            lp.default_exception_handler(where)

    loop.set_exception_handler(on_error)
    signals = [signal.SIGINT, signal.SIGTERM] if threading.current_thread() is threading.main_thread() else []
    for sig in signals:
        loop.add_signal_handler(sig, stop, sig.name)
    try:
        result = loop.run_until_complete(task)
    except asyncio.CancelledError:
        if not stopped:
            raise
        result = None
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
        _close_loop(loop)
    if stopped:
        raise Interrupted(f"interrupted ({stopped[0]}); resume with: {resume_hint}")
    return result  # type: ignore[return-value]


def _close_loop(loop: asyncio.AbstractEventLoop) -> None:
    pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for t in pending:
        t.cancel()
    if pending:
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
    # Transports of subprocesses a cancelled step left behind (a compile) close themselves when collected: let
    # that happen while the loop still runs, not after it is closed.
    gc.collect()
    loop.run_until_complete(asyncio.sleep(0))
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.run_until_complete(loop.shutdown_default_executor())
    loop.close()


def run(docs: list[str], out_dir: Path | str, settings: Settings | None = None, **kw: Any) -> RunSummary:
    """`arun` for synchronous callers (`doctune.run(["guide.md"], "out/x")`)."""
    return run_sync(arun(docs, out_dir, settings, **kw), f"doctune retry {out_dir}")


def status(out_dir: Path | str, checkpoint_url: str | None = None) -> RunStatus:
    """`astatus` for synchronous callers."""
    return run_sync(astatus(out_dir, checkpoint_url), f"doctune status {out_dir}")


def retry(out_dir: Path | str, **kw: Any) -> RunSummary | None:
    """`aretry` for synchronous callers (`doctune.retry("out/x", changes={"llm": {"model": "m2"}})`)."""
    return run_sync(aretry(out_dir, **kw), f"doctune retry {out_dir}")
