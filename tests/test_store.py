"""The run's data in LangGraph's store: append-only pair versions, sections, the run's record, on the real SQLite
database a run uses (and on Postgres under `make test`). No Zig needed."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from doctune.core.schemas import Pair, Section, SectionStats, Verdict
from doctune.graph.checkpoint import open_persistence
from doctune.graph.store import Store, get_record, put_record


def _pair(pid: str, response: str = "```zig\nconst x = 1;\n```") -> Pair:
    return Pair(id=pid, section_id="s1", heading_path="Guide > Vars", source="guide.md", instruction="Declare x.",
                response=response, generator="doc-examples")


def _section(sid: str) -> Section:
    return Section(id=sid, source="guide.md", path=["Guide", sid], level=2, ordinal=0, start_line=1, end_line=3,
                   text=f"## {sid}\n\nSome text.", stats=SectionStats(chars=20, code_blocks=0))


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_a_new_version_is_a_new_item_and_the_old_one_stays(checkpoint_url: str | None, tmp_path: Path) -> None:
    async def go() -> None:
        async with open_persistence(checkpoint_url, tmp_path) as (_, base):
            store = Store(base, "run-a")
            v0 = await store.put_pairs([_pair("p1"), _pair("p2")])
            assert v0 == {"p1": 0, "p2": 0}
            checked = _pair("p1")
            checked.verdict = Verdict(verdict="ok", mode="obj", compiled_only=True)
            v1 = await store.put_pairs([checked], v0)
            assert v1 == {"p1": 1}
            (old,) = await store.get_pairs(["p1"], v0)
            assert old.verdict is None  # what a checkpoint taken before validation still reads
            assert (await store.get_pair("p1", 1)).verdict is not None
            assert await store.find_pair("p1", 2) is None
            latest = await store.latest_pairs()
            assert latest["p1"].verdict is not None and latest["p2"].verdict is None
            with pytest.raises(KeyError, match="p2@1"):
                await store.get_pairs(["p2"], {"p2": 1})
            # A step whose answer may differ when asked again (the judge) never writes over a stored version:
            # after v0 it takes the first free one, whatever an earlier run of the step left.
            assert await store.put_pairs([_pair("p1", "judged")], v0, fresh=True) == {"p1": 2}
            assert (await store.get_pair("p1", 1)).verdict is not None
            assert await store.put_pairs([_pair("p2", "judged")], v0, fresh=True) == {"p2": 1}

    _run(go())


def test_runs_do_not_see_each_others_data(checkpoint_url: str | None, tmp_path: Path) -> None:
    async def go() -> None:
        async with open_persistence(checkpoint_url, tmp_path) as (_, base):
            a, b = Store(base, "run-a"), Store(base, "run-b")
            await a.put_sections([_section("s1"), _section("s2")])
            await a.put_pairs([_pair("p1")])
            assert [s.id for s in await a.all_sections()] == ["s1", "s2"]
            assert await b.all_sections() == [] and await b.latest_pairs() == {}
            assert [s.id for s in await a.get_sections(["s2", "missing", "s1"])] == ["s2", "s1"]
            with pytest.raises(KeyError):
                await b.get_section("s1")

    _run(go())


def test_data_and_record_outlive_the_connection(checkpoint_url: str | None, tmp_path: Path) -> None:
    """What one process wrote, another (here: a second connection after the first closed) reads back."""
    info = {"run_id": "run-r", "docs": ["guide.md"], "settings": {"checkpoint": {"url": None}},
            "attempts": [{"n": 1, "command": "run", "outcome": "interrupted", "path": Path("x")}]}

    async def write() -> None:
        async with open_persistence(checkpoint_url, tmp_path) as (_, base):
            await Store(base, "run-r").put_sections([_section("s1")])
            await put_record(base, info)

    async def read() -> tuple[Any, Any, Any]:
        async with open_persistence(checkpoint_url, tmp_path) as (_, base):
            return (await Store(base, "run-r").get_section("s1"), await get_record(base, "run-r"),
                    await get_record(base, "run-unknown"))

    _run(write())
    section, record, unknown = _run(read())
    assert section.heading_path == "Guide > s1"
    assert record["attempts"][0]["outcome"] == "interrupted" and record["attempts"][0]["path"] == "x"
    assert unknown is None


def test_store_and_checkpointer_share_the_database_under_concurrency(tmp_path: Path) -> None:
    """SQLite: the store uses the saver's connection and lock; concurrent reads, writes and checkpoint reads
    interleave without 'cannot start a transaction within a transaction' or a locked database."""
    async def go() -> None:
        async with open_persistence(None, tmp_path) as (saver, base):
            store = Store(base, "run-c")
            first = await store.put_pairs([_pair(f"p{i}") for i in range(20)])
            jobs = [store.put_pairs([_pair(f"p{i}", f"v{i}")], first) for i in range(20)]
            jobs += [store.get_pairs([f"p{i}"], first) for i in range(20)]
            jobs += [saver.aget_tuple({"configurable": {"thread_id": "run-c"}}) for _ in range(5)]
            await asyncio.gather(*jobs)
            latest = await store.latest_pairs()
            assert {p.response for p in latest.values()} == {f"v{i}" for i in range(20)}
        assert (tmp_path / "state.sqlite").is_file() and not (tmp_path / "store").exists()

    _run(go())


def test_one_process_per_run_directory_and_a_status_poll_does_not_refuse_a_start(tmp_path: Path) -> None:
    """`claim_run` holds DIR/.lock: a second claim on DIR is refused with one line. A status poll (`lock_held`
    takes a shared lock for an instant) that a start meets does not make the start fail: here the poll's shared
    lock is held for 0.2 s, and the start waits it out."""
    import fcntl
    import os
    import threading

    from doctune.core.errors import InputError
    from doctune.graph.runlock import LOCK_FILE, claim_run, lock_held

    out = tmp_path / "run"

    async def go() -> None:
        async with claim_run(out, None, "r1"):
            assert lock_held(out)
            with pytest.raises(InputError, match=rf"is in use by another doctune run \(pid {os.getpid()}\)"):
                async with claim_run(out, None, "r2"):
                    pass
        assert not lock_held(out)
        fd = os.open(out / LOCK_FILE, os.O_RDONLY)
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # a poll, caught in the middle
        threading.Timer(0.2, os.close, (fd,)).start()
        async with claim_run(out, None, "r1"):
            pass

    asyncio.run(go())
