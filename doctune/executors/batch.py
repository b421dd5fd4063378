"""Validating many blocks: cache first, then shared compiles where they cannot change a verdict, the rest one
by one; bounded concurrency (the validator's semaphore), results in input order.

Two kinds of batch, each block in its own file (its own namespace):
- **tests**: one root `test { _ = @import("doctune_blk_0.zig"); … }` and one `zig test` run;
- **programs**: one binary whose `main` dispatches on $DOCTUNE_PROG to block k's `main` (with std.start's
  return/error handling); it is compiled once and then *run once per program*, each run alone in its sandbox,
  so exit codes, panics, stdout and timeouts stay per block.
Only blocks whose verdict cannot depend on batching qualify (`batchable`): no sibling files or build options,
no libc, nothing that behaves differently outside the root module (`@import("root")`, `std_options`, a
`panic` handler, exports, `@src`, `@typeName`, the environment), no expected compile error, no expected
stdout or message (output names the batch file instead of `main`). If a batch does not compile, or a test
batch fails, the blocks its output names are validated alone and the others re-batched once; any doubt left →
every block alone. Failures in test batches always come from a single run (with the block's file:line:col).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

from doctune.executors.base import ExecRequest, ExecResult
from doctune.executors.zigsrc import classify, missing_imports, needs_libc, strip_comments_and_strings
from doctune.schemas import Verdict

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

Finish = Callable[[int, Verdict], None]
Single = Callable[[int], Awaitable[None]]


def batch_kind(validator: Validator, block: BlockInput) -> str | None:
    """'test' or 'run' when the block may share a compile, else None."""
    s = validator.settings
    if not getattr(validator.executor, "supports_batch", False):
        return None
    if block.files or block.options != type(block.options)() or block.mode not in ("auto", "test", "run"):
        return None
    code, exp = block.code, block.expect
    if exp is not None and (exp.stdout is not None or exp.error_contains or exp.outcome == "compile_error"):
        return None
    if (
        needs_libc(code)
        or missing_imports(code, {})
        or _ROOT_SENSITIVE.search(strip_comments_and_strings(code))
    ):
        return None
    kind = classify(code)
    if kind == "test" and block.mode in ("auto", "test") and s.batch_tests:
        return "test" if exp is None or exp.outcome == "ok" else None
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

    def finish(i: int, v: Verdict, store: bool = True) -> None:
        if store and validator.cache is not None:
            validator.cache.put(validator.key(items[i]), v)
        results[i] = v
        if on_done is not None:
            on_done(i, v)

    async def single(i: int) -> None:
        finish(i, await validator.judge(items[i]))

    groups: dict[str, list[int]] = {"test": [], "run": [], "single": []}
    for i, block in enumerate(items):
        hit = validator.cache.get(validator.key(block)) if validator.cache is not None else None
        if hit is not None:
            finish(i, hit, store=False)
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


async def _isolate(
    validator: Validator,
    items: Sequence[BlockInput],
    ids: list[int],
    named: set[int],
    single: Single,
    finish: Finish,
    runner: Callable[..., Awaitable[None]],
    retry: bool,
) -> None:
    """After a failed batch: the named blocks alone, the rest re-batched once (or alone when in doubt)."""
    if not named or not retry:
        await asyncio.gather(*(single(i) for i in ids))
        return
    rest = [i for k, i in enumerate(ids) if k not in named]
    jobs = [single(ids[k]) for k in sorted(named)]
    if len(rest) > 1:
        jobs.append(runner(validator, items, rest, single, finish, False))
    else:
        jobs += [single(i) for i in rest]
    await asyncio.gather(*jobs)


async def _run_test_batch(
    validator: Validator,
    items: Sequence[BlockInput],
    ids: list[int],
    single: Single,
    finish: Finish,
    retry: bool,
) -> None:
    files = tuple((f"doctune_blk_{k}.zig", items[i].code) for k, i in enumerate(ids))
    root = "test {\n" + "".join(f'    _ = @import("doctune_blk_{k}.zig");\n' for k in range(len(ids))) + "}\n"
    res = await validator.execute(
        ExecRequest(code=root, mode="test", files=files, root_name="doctune_batch.zig")
    )
    validator.batches += 1
    if res.ok:
        share = round(res.duration_s / len(ids), 3)
        for i in ids:
            met = True if items[i].expect is not None else None
            finish(i, _verdict(validator, "ok", "test", res, share, met))
        return
    doubt = res.infra_error or res.timed_out or res.resource_limit
    named = set() if doubt else _named(res.stderr + res.stdout, "doctune_blk_", len(ids))
    await _isolate(validator, items, ids, named, single, finish, _run_test_batch, retry)


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
    compiled, runs = await validator.execute_many(req, [{ENV_VAR: str(k)} for k in range(len(ids))])
    validator.batches += 1
    if not compiled.ok or len(runs) != len(ids):
        named = (
            set()
            if compiled.infra_error or compiled.timed_out
            else _named(compiled.stderr, "doctune_prog_", len(ids))
        )
        await _isolate(validator, items, ids, named, single, finish, _run_program_batch, retry)
        return
    share = compiled.duration_s / len(ids)
    for k, (i, run) in enumerate(zip(ids, runs, strict=True)):
        if run.infra_error is not None:
            await single(i)  # the sandbox failed for this run: judge it alone (with its own retries)
            continue
        stem = (items[i].name or "main.zig").removesuffix(".zig")
        run.stdout = run.stdout.replace(f"doctune_prog_{k}.", f"{stem}.")
        run.stderr = run.stderr.replace(f"doctune_prog_{k}.zig", f"{stem}.zig").replace(
            f"doctune_prog_{k}.", f"{stem}."
        )
        v = validator.to_verdict(run, "run", items[i].expect, fragment=False, duration=run.duration_s + share)
        finish(i, v)


def _verdict(
    validator: Validator, kind: str, mode: str, res: ExecResult, share: float, met: bool | None
) -> Verdict:
    return Verdict(
        verdict=kind,  # type: ignore[arg-type]
        expected_met=met,
        mode=mode,  # type: ignore[arg-type]
        stage="run",
        exit_code=0,
        duration_s=share,
        executor=validator.executor.name,
    )
