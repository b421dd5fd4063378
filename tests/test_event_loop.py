"""Validation never blocks the event loop (what `langgraph dev` enforces with blockbuster in the graph's nodes).

The real local executor and the real SQLite verdict cache, run under blockbuster's full set of detectors
(stricter than `langgraph dev`, which lets some file reads and writes pass): any temp-dir, cgroup, file or SQLite
call made in the event loop raises BlockingError, which would surface as an error or a wrong verdict here.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from doctune.agents.validator import BlockInput, Validator
from doctune.core.schemas import Expect, Verdict
from doctune.core.settings import ValidatorSettings
from doctune.executors.blocking import in_thread
from doctune.executors.local import LocalExecutor

from tests.test_validator import GOOD_FRAGMENT, HELLO, PASSING_TEST, ZIG_CACHE
from tests.test_validator_batch import BLOCKS

blockbuster = pytest.importorskip("blockbuster", reason="blockbuster comes with the [server] extra")

EXTRA = [
    BlockInput(
        id="sibling",
        code='const util = @import("util.zig");\ntest "f" {\n    try @import("std").testing.expect(util.f() == 7);\n}\n',
        files={"util.zig": "pub fn f() u8 {\n    return 7;\n}\n"},
    ),
    BlockInput(id="escape", code=PASSING_TEST, files={"../escape.zig": "const x = 1;\n"}),
    BlockInput(id="no_compile", code="const x: u8 = 300;\n", expect=Expect(outcome="compile_error")),
    BlockInput(id="fragment", code=GOOD_FRAGMENT),
    BlockInput(id="hello", code=HELLO, expect=Expect(stdout="hi\n")),
]


def _validate_twice(tmp: Path, blocks: list[BlockInput], **kw: object) -> tuple[list[Verdict], list[Verdict]]:
    s = ValidatorSettings(cache_path=tmp / "verdicts.sqlite", concurrency=2, **kw)  # type: ignore[arg-type]
    validator = Validator(s, LocalExecutor(s, zig_cache=ZIG_CACHE))  # built off the loop, as the graph does
    validator.executor.cache_key_parts()  # `zig version`, once (the graph's aget_validator does the same)

    async def go() -> tuple[list[Verdict], list[Verdict]]:
        with blockbuster.blockbuster_ctx():
            try:
                first = await validator.validate_many(blocks)
                again = await validator.validate_many(blocks)
                one = await validator.validate_block(blocks[0])
            finally:
                await validator.aclose()
        assert one.cached
        return first, again

    return asyncio.run(go())


def _facts(vs: list[Verdict]) -> list[tuple[object, ...]]:
    return [(v.verdict, v.expected_met, v.stage, v.exit_code, v.mode) for v in vs]


@pytest.mark.zig
def test_sandboxed_validation_and_cache_never_block(tmp_path: Path) -> None:
    blocks = BLOCKS + EXTRA
    first, again = _validate_twice(tmp_path, blocks)
    got = {b.id: v.verdict for b, v in zip(blocks, first, strict=True)}
    assert got == {
        "t1": "ok", "t2": "ok", "t_fail": "test_failure", "t_bad": "compile_error", "p_ok": "ok",
        "p_panic": "runtime_error", "p_err": "runtime_error", "p_exit3": "runtime_error", "p_bad": "compile_error",
        "sibling": "ok", "escape": "unsupported", "no_compile": "compile_error", "fragment": "ok", "hello": "ok",
    }
    # The second pass comes from the cache (read in a worker thread), verdict for verdict.
    assert all(v.cached for v in again)
    assert _facts(again) == _facts(first)


@pytest.mark.zig
def test_unsandboxed_validation_never_blocks(tmp_path: Path) -> None:
    blocks = [BLOCKS[0], BLOCKS[2], BLOCKS[4], EXTRA[4]]
    first, again = _validate_twice(tmp_path, blocks, sandbox="none", unsafe_no_sandbox=True)
    assert [v.verdict for v in first] == ["ok", "test_failure", "ok", "ok"]
    assert all(v.cached for v in again) and _facts(again) == _facts(first)


def test_in_thread_releases_what_a_cancelled_call_made() -> None:
    started, release, undone = threading.Event(), threading.Event(), []

    def make() -> str:
        started.set()
        release.wait(10)
        return "made"

    async def go() -> None:
        task = asyncio.ensure_future(in_thread(make, undo=undone.append))
        await asyncio.to_thread(started.wait, 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert undone == []  # the thread is still running: nothing to release yet
        release.set()
        for _ in range(200):
            if undone:
                break
            await asyncio.sleep(0.01)

    asyncio.run(go())
    assert undone == ["made"]


def test_in_thread_returns_and_raises_like_the_call() -> None:
    async def go() -> None:
        assert await in_thread(lambda a, b: a + b, 2, 3) == 5
        with pytest.raises(ZeroDivisionError):
            await in_thread(lambda: 1 // 0, undo=lambda _: None)

    asyncio.run(go())
