"""Concurrency primitives the agents share: a bound on LLM requests in flight and single-flight sharing of work.

``RequestLimit`` caps the requests a client has open at one moment (``generator.concurrency``), counted where
the request is made rather than by how many sections the graph runs, so a section waiting for its code checks
holds no LLM slot. ``SingleFlight`` lets callers that ask for the same key at the same moment share one
computation (the validator uses it so identical blocks checked at once cost one compile).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Sequence
from types import TracebackType
from typing import Generic, TypeVar

V = TypeVar("V")


class RequestLimit:
    """At most ``limit`` requests in flight across the tasks of one event loop; an async context manager.

    ``in_flight`` and ``peak`` say how many are open now and at most so far (for tests and progress).
    """

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"a request limit must be at least 1, not {limit}")
        self.limit = limit
        self.in_flight = 0
        self.peak = 0
        self._sem: asyncio.Semaphore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _semaphore(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._sem is None or self._loop is not loop:  # a semaphore belongs to one event loop
            self._sem, self._loop, self.in_flight = asyncio.Semaphore(self.limit), loop, 0
        return self._sem

    async def __aenter__(self) -> None:
        await self._semaphore().acquire()
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.in_flight -= 1
        self._semaphore().release()


Compute = Callable[[list[int], Callable[[int, V], None]], Awaitable[list[V]]]


class SingleFlight(Generic[V]):
    """Callers that ask for the same key while it is being computed get that computation's result.

    ``run(keys, compute)`` computes only the keys nobody else is computing right now: ``compute(indices,
    done)`` gets their positions in ``keys`` and may call ``done(k, value)`` for the k-th of them as soon as it
    is known (waiting callers are released then, not when the whole call ends); it returns the values in order.
    If the computing caller fails or is cancelled, each waiting caller computes its key itself. Nothing is
    kept once a computation ends (that is the cache's job).
    """

    def __init__(self, copy: Callable[[V], V] = lambda v: v) -> None:
        self._running: dict[Hashable, asyncio.Future[V | None]] = {}
        self._copy = copy  # waiting callers get their own copy of a shared value

    @property
    def running(self) -> int:
        return len(self._running)

    async def run(self, keys: Sequence[Hashable], compute: Compute[V],
                  on_done: Callable[[int, V], None] | None = None) -> list[V]:
        loop = asyncio.get_running_loop()
        mine: list[int] = []
        futures: list[asyncio.Future[V | None]] = []
        for i, key in enumerate(keys):
            fut = self._running.get(key)
            if fut is None or fut.get_loop() is not loop:
                fut = self._running[key] = loop.create_future()
                mine.append(i)
            futures.append(fut)

        def done(k: int, value: V) -> None:
            i = mine[k]
            self._settle(keys[i], futures[i], value)
            if on_done is not None:
                on_done(i, value)

        try:
            values = await compute(mine, done) if mine else []
            for k, value in enumerate(values):
                if not futures[mine[k]].done():
                    done(k, value)
        finally:
            for i in mine:  # a failed or cancelled computation releases its waiters (they compute alone)
                self._settle(keys[i], futures[i], None)
        out: list[V] = []
        owned = set(mine)
        for i, fut in enumerate(futures):
            # shield: a waiter's cancellation must not cancel the shared work
            shared: V | None = await asyncio.shield(fut)
            if i not in owned:
                value = self._copy(shared) if shared is not None else await self._alone(keys[i], i, compute)
                if on_done is not None:
                    on_done(i, value)
            else:
                assert shared is not None
                value = shared
            out.append(value)
        return out

    async def _alone(self, key: Hashable, i: int, compute: Compute[V]) -> V:
        """The key whose computing caller failed, computed by this caller (its position in ``compute``'s terms)."""

        async def one(_: list[int], done: Callable[[int, V], None]) -> list[V]:
            return await compute([i], done)

        return (await self.run([key], one))[0]

    def _settle(self, key: Hashable, fut: asyncio.Future[V | None], value: V | None) -> None:
        if not fut.done():
            fut.set_result(value)
        if self._running.get(key) is fut:
            del self._running[key]
