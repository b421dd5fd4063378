"""Run the `doctune` CLI and SIGKILL it at the N-th durable write — a real crash at a chosen point.

    python tests/reliability/killer.py [--kill-at N] [--events FILE] -- run DOC --out DIR ...

Counted events, in the order the run makes them: checkpoint saves (`ckpt.put`, `ckpt.writes`, SQLite and
Postgres savers), the run store's writes (`store.sections`, `store.pairs`: one batch each) and the export's files (`export.jsonl`,
`export.dataset`). With `--kill-at N` the process kills itself with SIGKILL just before the N-th event (odd N) or
just after it (even N): no cleanup, no atexit, no flush — like `kill -9` or a power cut. With `--events FILE`
the sequence of event names is written to FILE when the process exits normally (count mode).

Run it by path (not `-m`): the repository root must not shadow the installed `doctune` package.
"""

from __future__ import annotations

import argparse
import atexit
import functools
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

_events: list[str] = []
_kill_at = 0


def _event(name: str, phase: str, idx: int = 0) -> int:
    """Called before ('pre', returns the event's number) and after ('post', with that number) each durable
    write. Events interleave under concurrency, so 'post' is matched by number, not by position."""
    if phase == "pre":
        _events.append(name)
        idx = len(_events)
    if idx == _kill_at and (phase == "pre") == (idx % 2 == 1):
        stage_file = os.environ.get("DOCTUNE_KILLER_STAGE")
        if stage_file:
            Path(stage_file).write_text(f"{name}:{phase}", encoding="utf-8")
        os.kill(os.getpid(), signal.SIGKILL)
    return idx


def _wrap_async(cls: Any, attr: str, name: str) -> None:
    orig = getattr(cls, attr)

    @functools.wraps(orig)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        idx = _event(name, "pre")
        out = await orig(*args, **kwargs)
        _event(name, "post", idx)
        return out

    setattr(cls, attr, wrapper)


def _wrap_sync(owner: Any, attr: str, name: Any) -> None:
    orig = getattr(owner, attr)

    @functools.wraps(orig)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        label = name(*args) if callable(name) else name
        idx = _event(label, "pre")
        out = orig(*args, **kwargs)
        _event(label, "post", idx)
        return out

    setattr(owner, attr, wrapper)


def install() -> None:
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    import doctune.agents.dataset
    import doctune.graph.store

    savers = [AsyncSqliteSaver]
    try:
        from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

        savers.append(AsyncPostgresSaver)
    except ImportError:
        pass
    for cls in savers:
        _wrap_async(cls, "aput", "ckpt.put")
        _wrap_async(cls, "aput_writes", "ckpt.writes")
    _wrap_async(doctune.graph.store.Store, "put_sections", "store.sections")
    _wrap_async(doctune.graph.store.Store, "put_pairs", "store.pairs")
    _wrap_sync(doctune.agents.dataset, "write_jsonl", "export.jsonl")
    _wrap_sync(doctune.agents.dataset, "save_dataset", "export.dataset")


def main() -> None:
    global _kill_at
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kill-at", type=int, default=0)
    p.add_argument("--events", default=None)
    p.add_argument("args", nargs=argparse.REMAINDER)
    a = p.parse_args()
    _kill_at = a.kill_at
    if a.events:
        atexit.register(lambda: Path(a.events).write_text(json.dumps(_events), encoding="utf-8"))
    install()
    from doctune.app.cli import main as doctune_main

    sys.argv = ["doctune", *[x for x in a.args if x != "--"]]
    doctune_main()


if __name__ == "__main__":
    main()
