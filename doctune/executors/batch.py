"""Validating many blocks: bounded concurrency, results in input order, progress callback.

(The executor semaphore inside the validator bounds the compiles; here every block gets its own task.)
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from doctune.schemas import Verdict

if TYPE_CHECKING:
    from doctune.agents.validator import BlockInput, Validator


async def validate_many(
    validator: Validator,
    items: Sequence[BlockInput],
    *,
    on_done: Callable[[int, Verdict], None] | None = None,
) -> list[Verdict]:
    results: list[Verdict | None] = [None] * len(items)

    async def one(i: int, block: BlockInput) -> None:
        v = await validator.validate_block(block)
        results[i] = v
        if on_done is not None:
            on_done(i, v)

    await asyncio.gather(*(one(i, b) for i, b in enumerate(items)))
    return [v for v in results if v is not None]
