"""Run-time dependencies of the graph: passed with `context=`, never checkpointed.

Services (validator, generator, store) are built lazily once per Context, inside the running event loop.
A LangGraph server run has no Python context object: `resolve(None)` builds one from env settings, and
`resolve({"out_dir": ..., "config": ...})` (a server run's JSON `context`) one for that output dir / TOML file.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from doctune.schemas import Pair, Section
from doctune.settings import Settings, load_settings
from doctune.store import Store

if TYPE_CHECKING:
    from doctune.agents.generator import PairGenerator
    from doctune.agents.validator import Validator


@dataclass(frozen=True)
class Context:
    """Everything a node needs besides its state."""

    settings: Settings
    out_dir: Path
    validator: Validator | None = None  # injected (tests) or built lazily
    generator: PairGenerator | None = None
    endpoint_verified: bool = False  # preflight's probe was answered: the LLM client needs no first-request gate
    _cache: dict[str, Any] = field(default_factory=dict, compare=False, hash=False, repr=False)

    @property
    def store(self) -> Store:
        return Store(self.out_dir / "store")

    @property
    def astore(self) -> AsyncStore:
        """The store for nodes: its file I/O runs in a worker thread, never in the event loop."""
        return AsyncStore(self.store)

    def get_validator(self) -> Validator:
        if self.validator is not None:
            return self.validator
        if "validator" not in self._cache:
            from doctune.agents.validator import Validator

            self._cache["validator"] = Validator(self.settings.validator)
        return self._cache["validator"]

    def get_generator(self) -> PairGenerator:
        if self.generator is not None:
            return self.generator
        if "generator" not in self._cache:
            from doctune.agents.generator import make_generator

            self._cache["generator"] = make_generator(self.settings, endpoint_verified=self.endpoint_verified)
        return self._cache["generator"]

    async def aget_validator(self) -> Validator:
        """`get_validator` for nodes: the first call builds it in a worker thread (it looks for the toolchain and
        the sandbox on disk, which must not block the event loop)."""
        if self.validator is None and "validator" not in self._cache:
            async with self._build_lock():  # concurrent sections: one validator (one cache, one semaphore)
                # Also runs `zig version` once (cached), which the validator's cache keys need.
                await asyncio.to_thread(lambda: self.get_validator().executor.cache_key_parts())
        return self.get_validator()

    async def aget_generator(self) -> PairGenerator:
        """`get_generator` for nodes, built in a worker thread the first time."""
        if self.generator is None and "generator" not in self._cache:
            async with self._build_lock():  # concurrent sections: one client, one rate limiter, one stop flag
                await asyncio.to_thread(self.get_generator)
        return self.get_generator()

    def _build_lock(self) -> asyncio.Lock:
        lock: asyncio.Lock = self._cache.setdefault("build_lock", asyncio.Lock())
        return lock

    async def aclose(self) -> None:
        """Close the services this Context built (injected ones belong to the caller)."""
        for key in ("validator", "generator"):
            svc = self._cache.pop(key, None)
            if svc is not None and hasattr(svc, "aclose"):
                await svc.aclose()


class AsyncStore:
    """Async facade of `Store` (each call in a worker thread): nodes must not block the server's event loop."""

    def __init__(self, store: Store):
        self.sync = store

    async def get_section(self, section_id: str) -> Section:
        return await asyncio.to_thread(self.sync.get_section, section_id)

    async def put_sections(self, sections: list[Section]) -> None:
        await asyncio.to_thread(lambda: [self.sync.put_section(s) for s in sections])

    async def get_pair(self, pair_id: str) -> Pair:
        return await asyncio.to_thread(self.sync.get_pair, pair_id)

    async def get_pairs(self, pair_ids: list[str]) -> list[Pair]:
        return await asyncio.to_thread(lambda: [self.sync.get_pair(p) for p in pair_ids])

    async def put_pairs(self, pairs: list[Pair]) -> None:
        await asyncio.to_thread(lambda: [self.sync.put_pair(p) for p in pairs])

    async def has_pair(self, pair_id: str) -> bool:
        return await asyncio.to_thread(self.sync.has_pair, pair_id)


_DEFAULT: dict[tuple[str, str | None], Context] = {}


def resolve(ctx: Context | Mapping[str, Any] | None) -> Context:
    """The run's context; for server runs (no Context object) one built from DOCTUNE_* env settings.

    A server run may pass a JSON context `{"out_dir": ..., "config": ...}`; missing keys fall back to
    $DOCTUNE_OUT (default ./doctune-out) and $DOCTUNE_CONFIG. One Context per (out_dir, config) is kept.
    """
    if isinstance(ctx, Context):
        return ctx
    opts = dict(ctx or {})
    out = str(opts.get("out_dir") or os.environ.get("DOCTUNE_OUT", "doctune-out"))
    cfg = opts.get("config") or os.environ.get("DOCTUNE_CONFIG") or None
    key = (out, cfg)
    if key not in _DEFAULT:
        _DEFAULT[key] = Context(settings=load_settings(cfg), out_dir=Path(out))
    return _DEFAULT[key]


async def aresolve(ctx: Context | Mapping[str, Any] | None) -> Context:
    """`resolve` for nodes: a server run's first call reads the TOML file and the environment in a worker thread
    (no blocking I/O in the event loop, which `langgraph dev` refuses)."""
    if isinstance(ctx, Context):
        return ctx
    return await asyncio.to_thread(resolve, ctx)
