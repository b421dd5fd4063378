"""Run-time dependencies of the graph: passed with `context=`, never checkpointed.

Services (validator, generator) are built lazily once per Context, inside the running event loop. The run's data
store is not a service of the Context but of the run: `run_store(runtime)` wraps the store the graph runs with.
A LangGraph server run has no Python context object: its JSON `context` becomes a `ServerRun` (LangGraph coerces
it into the schema `server_run_schema` made, whose defaults the server entry point chose), and `resolve` gives the
Context for its (out_dir, config), built once per server process: runs with the same ones share the validator
(one bound on compiles however many runs are in flight) and the LLM client. Nothing here reads the environment:
settings come from `load_settings`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from doctune.core.errors import ConfigError
from doctune.core.schemas import CodeCheck, ValidateMany, Verdict
from doctune.core.settings import Settings, load_settings
from doctune.graph.store import Store

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

    async def areward_validator(self) -> ValidateMany:
        """GRPO's ``validate_many`` (``doctune.trainer.reward``) over this run's validator: one verdict cache and
        one concurrency bound with the rest of the run. The trainer calls it from its own event-loop thread; the
        validation runs here, on the graph's loop (free while the train node waits for its worker thread)."""
        validator, loop = await self.aget_validator(), asyncio.get_running_loop()

        async def validate_many(checks: list[CodeCheck]) -> list[Verdict]:
            return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(validator.check_many(checks), loop))

        return validate_many

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


@dataclass
class ServerRun:
    """A LangGraph server run's JSON context, ``{"out_dir": ..., "config": ...}`` (both optional): where the store
    and the dataset go, and an optional TOML settings file. Its defaults are the server's (``server_run_schema``)."""

    out_dir: str = "doctune-out"
    config: str | None = None


def server_run_schema(out_dir: str, config: str | None) -> type[ServerRun]:
    """A ``ServerRun`` schema whose defaults are the server's own (the entry point chooses them once)."""
    return dataclasses.make_dataclass("ServerRun", [("out_dir", str, field(default=out_dir)),
                                                    ("config", str | None, field(default=config))],
                                      bases=(ServerRun,))


_BUILD = threading.Lock()  # concurrent first nodes of server runs build a Context once
_SERVED: dict[tuple[str, str | None], Context] = {}  # the server process's services, by (out_dir, config)


def resolve(ctx: Context | ServerRun | None) -> Context:
    """The run's context: the `Context` a caller passed, or for a server run's `ServerRun` the one of its
    (out_dir, config), built once per process (settings from `load_settings(config)`)."""
    if isinstance(ctx, Context):
        return ctx
    if not isinstance(ctx, ServerRun):
        raise ConfigError("the doctune graph needs its run-time services: call it with context=Context(...) "
                          "(or serve it through doctune.app.server:make_graph, which sets a context schema)")
    key = (ctx.out_dir, ctx.config)
    with _BUILD:
        if key not in _SERVED:
            _SERVED[key] = Context(settings=load_settings(ctx.config), out_dir=Path(ctx.out_dir))
        return _SERVED[key]


async def aresolve(ctx: Context | ServerRun | None) -> Context:
    """`resolve` for nodes: a server run's first call reads the TOML file and the environment in a worker thread
    (no blocking I/O in the event loop, which `langgraph dev` refuses)."""
    if isinstance(ctx, Context):
        return ctx
    return await asyncio.to_thread(resolve, ctx)
