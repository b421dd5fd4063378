"""Validating many blocks: cache first, plain test blocks batched into shared `zig test` compiles, the rest
one by one; bounded concurrency (the validator's semaphore), results in input order.

A batch is one root file `test { _ = @import("b0.zig"); … }` with each block as its own file, so each keeps
its own namespace. Only blocks whose verdict cannot depend on being batched qualify: test-only code with no
expected failure or stdout, no sibling files or build options, nothing that behaves differently outside the
root module (`@import("root")`, `std_options`, a `panic` handler, `export`ed symbols, libc). If a batch
fails, the blocks its output names are validated alone and the others re-batched once; any doubt left →
every block alone. So a batched `ok` is what the single run would say, and failures always come from a
single run (with the block's own file:line:col).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from doctune.executors.base import ExecRequest
from doctune.executors.zigsrc import classify, missing_imports, needs_libc, strip_comments_and_strings
from doctune.schemas import Verdict

if TYPE_CHECKING:
    from doctune.agents.validator import BlockInput, Validator

MAX_BATCH = 16
_ROOT_SENSITIVE = re.compile(
    r'@import\(\s*"root"\s*\)|\bstd_options\b|\bpub\s+(?:fn|const)\s+panic\b|\bexport\b|@export\b|'
    r"\btest_functions\b|@cImport|\busingnamespace\b"
)
_FILE_REF = re.compile(r"\bb(\d+)\.(?:zig\b|test\.)")


def batchable(validator: Validator, block: BlockInput) -> bool:
    if not validator.settings.batch_tests or not getattr(validator.executor, "supports_batch", False):
        return False
    if block.mode not in ("auto", "test") or block.files or block.options != type(block.options)():
        return False
    if block.expect is not None and (block.expect.outcome != "ok" or block.expect.stdout is not None):
        return False
    code = block.code
    if classify(code) != "test" or needs_libc(code) or missing_imports(code, {}):
        return False
    return not _ROOT_SENSITIVE.search(strip_comments_and_strings(code))


async def validate_many(
    validator: Validator,
    items: Sequence[BlockInput],
    *,
    on_done: Callable[[int, Verdict], None] | None = None,
) -> list[Verdict]:
    results: list[Verdict | None] = [None] * len(items)

    def finish(i: int, v: Verdict, *, store: bool) -> None:
        if store and validator.cache is not None:
            validator.cache.put(validator.key(items[i]), v)
        results[i] = v
        if on_done is not None:
            on_done(i, v)

    pending: list[int] = []
    for i, block in enumerate(items):
        hit = validator.cache.get(validator.key(block)) if validator.cache is not None else None
        if hit is not None:
            finish(i, hit, store=False)
        else:
            pending.append(i)
    batch_ids = [i for i in pending if batchable(validator, items[i])]
    single_ids = [i for i in pending if i not in set(batch_ids)]

    async def single(i: int) -> None:
        finish(i, await validator.judge(items[i]), store=True)

    size = max(2, min(MAX_BATCH, -(-len(batch_ids) // validator.settings.concurrency)))
    chunks = [batch_ids[k : k + size] for k in range(0, len(batch_ids), size)] if len(batch_ids) > 1 else []
    single_ids += batch_ids if not chunks else []
    tasks = [single(i) for i in single_ids]
    tasks += [_run_batch(validator, items, chunk, single, finish, retry=True) for chunk in chunks]
    await asyncio.gather(*tasks)
    return [v for v in results if v is not None]


async def _run_batch(
    validator: Validator,
    items: Sequence[BlockInput],
    ids: list[int],
    single: Callable[[int], object],
    finish: Callable[..., None],
    *,
    retry: bool,
) -> None:
    files = tuple((f"b{k}.zig", items[i].code) for k, i in enumerate(ids))
    root = "test {\n" + "".join(f'    _ = @import("b{k}.zig");\n' for k in range(len(ids))) + "}\n"
    res = await validator.execute(ExecRequest(code=root, mode="test", files=files, root_name="batch.zig"))
    validator.batches += 1
    if res.ok:
        share = round(res.duration_s / len(ids), 3)
        for i in ids:
            v = Verdict(verdict="ok", mode="test", stage="run", exit_code=0, duration_s=share)
            v.executor = validator.executor.name
            v.expected_met = True if items[i].expect is not None else None
            finish(i, v, store=True)
        return
    named = {int(m.group(1)) for m in _FILE_REF.finditer(res.stderr + res.stdout)}
    named = {k for k in named if k < len(ids)}
    if res.infra_error or res.timed_out or res.resource_limit or not named or not retry:
        await asyncio.gather(*(single(i) for i in ids))  # type: ignore[misc]
        return
    suspects = [ids[k] for k in sorted(named)]
    rest = [i for k, i in enumerate(ids) if k not in named]
    jobs = [single(i) for i in suspects]
    if len(rest) > 1:
        jobs.append(_run_batch(validator, items, rest, single, finish, retry=False))
    else:
        jobs += [single(i) for i in rest]
    await asyncio.gather(*jobs)  # type: ignore[arg-type]
