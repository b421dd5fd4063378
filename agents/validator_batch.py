"""Validating many blocks: cache first, then shared compiles where they cannot change a verdict, the rest one
by one; bounded concurrency (the validator's semaphore), results in input order.

Two kinds of batch, each block in its own file (its own namespace), compiled once, then *run once per block*,
each run alone in its sandbox, so no process's outcome ever decides another block's verdict:
- **tests**: one root `test { _ = @import("doctune_blk_0.zig"); … }`, one `zig test` binary with doctune's
  runner; block k's run executes only tests named `doctune_blk_k.*` (DOCTUNE_TESTS) and is judged from the
  runner's report;
- **programs**: one binary whose `main` dispatches on $DOCTUNE_PROG to block k's `main` (with std.start's
  return/error handling), so exit codes, panics, stdout and timeouts stay per block.
Only blocks whose verdict cannot depend on batching qualify (`batchable`): no sibling files or build options,
no libc, no file imports, nothing that behaves differently outside the root module (`@import("root")`,
`std_options`, a `panic` handler, exports, `@src`, `@typeName`, the environment), no expected compile error or
message. Output names the batch file; it is renamed to the block's (`doctune_prog_3.` → `main.`) before
stdout is compared. If a batch does not compile, errors located in a block's own file make that block's
`compile_error` verdict (one compile finds them all); blocks only mentioned in other errors are judged alone;
the rest compile together again.
Cache reads and writes go through a worker thread, once for the lookups and once per finished batch (the event
loop never touches SQLite); a verdict is stored before anyone waiting for it is told.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

from doctune.core.schemas import Verdict
from doctune.executors.base import ExecRequest, ExecResult
from doctune.executors.zigsrc import classify, missing_imports, needs_libc, strip_comments_and_strings

TEST_FILTER_ENV = "DOCTUNE_TESTS"  # doctune's test runner runs only tests whose name starts with this

if TYPE_CHECKING:
    from doctune.agents.validator import BlockInput, Validator

MAX_BATCH = 16
ENV_VAR = "DOCTUNE_PROG"
_ROOT_SENSITIVE = re.compile(
    r'@import\(\s*"root"\s*\)|\bstd_options\b|\bpub\s+(?:fn|const)\s+panic\b|\bexport\b|@export\b|'
    r"\btest_functions\b|@cImport|\busingnamespace\b|@src\b|@typeName\b|\bgetenv\b|\bgetEnvMap\b|"
    r"\benviron\b|@embedFile\b"
)
_DISPATCH_TAIL = """
pub fn main() u8 {
    const which = std.posix.getenv("DOCTUNE_PROG") orelse return 255;
    const idx = std.fmt.parseInt(usize, which, 10) catch return 255;
    inline for (progs, 0..) |p, i| {
        if (i == idx) return callMain(p.main);
    }
    return 255;
}

// Mirrors std.start.callMain for a main that is not the root's.
inline fn callMain(comptime m: anytype) u8 {
    const R = @typeInfo(@TypeOf(m)).@"fn".return_type.?;
    switch (R) {
        void => {
            m();
            return 0;
        },
        noreturn, u8 => return m(),
        else => {
            const result = m() catch |err| {
                std.log.err("{s}", .{@errorName(err)});
                if (@errorReturnTrace()) |trace| std.debug.dumpStackTrace(trace.*);
                return 1;
            };
            return switch (@TypeOf(result)) {
                void => 0,
                u8 => result,
                else => @compileError("expected return type of main to be 'void', '!void', 'noreturn', 'u8', or '!u8'"),
            };
        },
    }
}
"""

Finish = Callable[[list[tuple[int, Verdict]]], Awaitable[None]]
Single = Callable[[int], Awaitable[None]]


def batch_kind(validator: Validator, block: BlockInput) -> str | None:
    """'test' or 'run' when the block may share a compile, else None."""
    s = validator.settings
    if not getattr(validator.executor, "supports_batch", False):
        return None
    if block.files or block.options != type(block.options)() or block.mode not in ("auto", "test", "run"):
        return None
    code, exp = block.code, block.expect
    if exp is not None and (exp.error_contains or exp.outcome == "compile_error"):
        return None
    if (
        needs_libc(code)
        or missing_imports(code, {})
        or _ROOT_SENSITIVE.search(strip_comments_and_strings(code))
    ):
        return None
    kind = classify(code)
    if kind == "test" and block.mode in ("auto", "test") and s.batch_tests:
        return "test" if exp is None or exp.stdout is None else None
    if kind == "run" and block.mode in ("auto", "run") and s.batch_programs:
        return "run"
    return None


async def validate_many(
    validator: Validator,
    items: Sequence[BlockInput],
    *,
    on_done: Callable[[int, Verdict], None] | None = None,
) -> list[Verdict]:
    results: list[Verdict | None] = [None] * len(items)
    cache = validator.cache
    keys = [validator.key(b) for b in items] if cache is not None else []

    def record(i: int, v: Verdict) -> None:
        results[i] = v
        if on_done is not None:
            on_done(i, v)

    async def finish(done: list[tuple[int, Verdict]]) -> None:
        if cache is not None:
            await cache.aput_many([(keys[i], v) for i, v in done])
        for i, v in done:
            record(i, v)

    async def single(i: int) -> None:
        await finish([(i, await validator.judge(items[i]))])

    groups: dict[str, list[int]] = {"test": [], "run": [], "single": []}
    hits = await cache.aget_many(keys) if cache is not None else [None] * len(items)
    for i, (block, hit) in enumerate(zip(items, hits, strict=True)):
        if hit is not None:
            record(i, hit)
        else:
            groups[batch_kind(validator, block) or "single"].append(i)
    jobs: list[Awaitable[None]] = []
    for kind in ("run", "test"):
        ids = groups[kind]
        if len(ids) < 2:
            groups["single"] += ids
            continue
        size = max(2, min(MAX_BATCH, -(-len(ids) // validator.settings.concurrency)))
        runner = _run_program_batch if kind == "run" else _run_test_batch
        jobs += [
            runner(validator, items, ids[k : k + size], single, finish, True)
            for k in range(0, len(ids), size)
        ]
    jobs = [single(i) for i in groups["single"]] + jobs
    await asyncio.gather(*jobs)
    return [v for v in results if v is not None]


def _named(output: str, prefix: str, n: int) -> set[int]:
    return {k for k in (int(m.group(1)) for m in re.finditer(rf"\b{prefix}(\d+)\b", output)) if k < n}


async def _run_test_batch(
    validator: Validator,
    items: Sequence[BlockInput],
    ids: list[int],
    single: Single,
    finish: Finish,
    retry: bool,
) -> None:
    """One compile of every block's tests; then each block's tests run alone, selected by name prefix."""
    files = tuple((f"doctune_blk_{k}.zig", items[i].code) for k, i in enumerate(ids))
    root = "test {\n" + "".join(f'    _ = @import("doctune_blk_{k}.zig");\n' for k in range(len(ids))) + "}\n"
    req = ExecRequest(code=root, mode="test", files=files, root_name="doctune_batch.zig")
    envs = [{TEST_FILTER_ENV: f"doctune_blk_{k}."} for k in range(len(ids))]
    await _compile_once_run_each(validator, items, ids, req, envs, "doctune_blk_", single, finish, retry)


async def _compile_once_run_each(
    validator: Validator,
    items: Sequence[BlockInput],
    ids: list[int],
    req: ExecRequest,
    envs: list[dict[str, str]],
    prefix: str,
    single: Single,
    finish: Finish,
    retry: bool,
) -> None:
    """The batch's one compile, then one run per block (``envs`` select it); a failed compile is sorted out per
    block (``_after_failed_compile``), the runs are judged each alone (``_judge_runs``)."""
    compiled, runs = await validator.execute_many(req, envs)
    validator.batches += 1
    if not compiled.ok or len(runs) != len(ids):
        await _after_failed_compile(validator, items, ids, compiled, prefix, single, finish, retry)
        return
    await _judge_runs(validator, items, ids, compiled, runs, req.mode, single, finish)


async def _after_failed_compile(
    validator: Validator,
    items: Sequence[BlockInput],
    ids: list[int],
    compiled: ExecResult,
    prefix: str,
    single: Single,
    finish: Finish,
    retry: bool,
) -> None:
    """A batch that did not compile: blocks whose own file has an error are compile errors (no cross-file
    imports are batched, so an error located in a block's file is that block's); blocks only mentioned in
    other errors are judged alone; the rest are re-batched once."""
    runner = _run_test_batch if prefix == "doctune_blk_" else _run_program_batch
    if compiled.infra_error or compiled.timed_out or compiled.resource_limit or compiled.stage != "compile":
        await asyncio.gather(*(single(i) for i in ids))
        return
    own, mentioned = errors_by_file(compiled.stderr, prefix, len(ids))
    mode = "test" if prefix == "doctune_blk_" else "run"
    share = compiled.duration_s / len(ids)
    done: list[tuple[int, Verdict]] = []
    for k, text in own.items():
        i = ids[k]
        res = ExecResult("compile", compiled.exit_code, "", text, compiled.duration_s)
        _rename(res, f"{prefix}{k}", items[i].name)
        done.append((i, validator.to_verdict(res, mode, items[i].expect, fragment=False, duration=share)))  # type: ignore[arg-type]
    await finish(done)
    doubt = [ids[k] for k in sorted(mentioned) if k not in own]
    rest = [i for k, i in enumerate(ids) if k not in own and i not in doubt]
    jobs = [single(i) for i in doubt]
    # Progress made (errors attributed): the rest compile together again; no progress: only once more.
    if len(rest) > 1 and (own or (doubt and retry)):
        jobs.append(runner(validator, items, rest, single, finish, retry))
    else:
        jobs += [single(i) for i in rest]
    await asyncio.gather(*jobs)


def errors_by_file(stderr: str, prefix: str, n: int) -> tuple[dict[int, str], set[int]]:
    """Compiler output cut at each `file:line:col: error:` line: errors located in `<prefix>k.zig` (k → text),
    and the blocks only mentioned inside other errors' text."""
    own: dict[int, list[str]] = {}
    mentioned: set[int] = set()
    chunks = re.split(r"(?m)^(?=\S[^\n]*:\d+:\d+: error: )", stderr)
    for chunk in chunks:
        m = re.match(rf"{re.escape(prefix)}(\d+)\.zig:\d+:\d+: error: ", chunk)
        if m and int(m.group(1)) < n:
            own.setdefault(int(m.group(1)), []).append(chunk)
        elif re.match(r"\S[^\n]*:\d+:\d+: error: ", chunk):
            mentioned |= _named(chunk, prefix, n)
    return {k: "".join(v) for k, v in own.items()}, mentioned


def _rename(res: ExecResult, stem_from: str, name: str | None) -> None:
    """Output names the batch file (`doctune_blk_3.zig`, test `doctune_blk_3.test.x`): name the block's."""
    stem = (name or "main.zig").removesuffix(".zig")
    for attr in ("stdout", "stderr"):
        text = (
            getattr(res, attr).replace(f"{stem_from}.zig", f"{stem}.zig").replace(f"{stem_from}.", f"{stem}.")
        )
        setattr(res, attr, text)
    if res.tests is not None:
        res.tests.failed_names = [t.replace(f"{stem_from}.", f"{stem}.") for t in res.tests.failed_names]
        if res.tests.unfinished:
            res.tests.unfinished = res.tests.unfinished.replace(f"{stem_from}.", f"{stem}.")


async def _run_program_batch(
    validator: Validator,
    items: Sequence[BlockInput],
    ids: list[int],
    single: Single,
    finish: Finish,
    retry: bool,
) -> None:
    files = tuple((f"doctune_prog_{k}.zig", items[i].code) for k, i in enumerate(ids))
    imports = ", ".join(f'@import("doctune_prog_{k}.zig")' for k in range(len(ids)))
    root = f'const std = @import("std");\nconst progs = .{{ {imports} }};\n' + _DISPATCH_TAIL
    req = ExecRequest(code=root, mode="run", files=files, root_name="doctune_dispatch.zig")
    envs = [{ENV_VAR: str(k)} for k in range(len(ids))]
    await _compile_once_run_each(validator, items, ids, req, envs, "doctune_prog_", single, finish, retry)


async def _judge_runs(
    validator: Validator,
    items: Sequence[BlockInput],
    ids: list[int],
    compiled: ExecResult,
    runs: list[ExecResult],
    mode: str,
    single: Single,
    finish: Finish,
) -> None:
    """Each block's own run of a shared binary → its verdict (the compile time shared out); a run whose sandbox
    failed, or a test run without the runner's report, is judged alone instead (with its own retries)."""
    prefix = "doctune_blk_" if mode == "test" else "doctune_prog_"
    share = compiled.duration_s / len(ids)
    done: list[tuple[int, Verdict]] = []
    alone: list[int] = []
    for k, (i, run) in enumerate(zip(ids, runs, strict=True)):
        if run.infra_error is not None or (mode == "test" and run.tests is None):
            alone.append(i)
            continue
        _rename(run, f"{prefix}{k}", items[i].name)
        v = validator.to_verdict(run, mode, items[i].expect, fragment=False,  # type: ignore[arg-type]
                                 duration=run.duration_s + share)
        done.append((i, v))
    await finish(done)
    for i in alone:
        await single(i)
