"""Run-time dependencies of the graph: passed with `context=`, never checkpointed.

Services (validator, generator) are built lazily once per Context, inside the running event loop. The run's data
store is not a service of the Context but of the run: `run_store(runtime)` wraps the store the graph runs with.
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
    _cache: dict[str, Any] = field(default_factory=dict, compare=False, hash=False, repr=False)

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

            self._cache["generator"] = make_generator(self.settings)
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


def run_store(runtime: Any, ctx: Context) -> Store:
    """The run's data for a node: the store the graph was compiled with (the run's database) or, under a
    LangGraph server, the server's own; namespaced by the thread (= run id). A graph compiled without a store
    (a script with an in-memory checkpointer) gets an in-memory store that lives as long as its Context."""
    base = runtime.store
    if base is None:
        base = ctx._cache.get("memory_store")
        if base is None:
            from langgraph.store.memory import InMemoryStore

            base = ctx._cache.setdefault("memory_store", InMemoryStore())
    info = getattr(runtime, "execution_info", None)
    return Store(base, getattr(info, "thread_id", None) or "no-thread")


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
