"""The validator agent: decide how to run a Zig block, run it through an executor, and judge the result.

`Validator.validate(code, …)` → `Verdict`. It classifies the block (program → run, tests → test, both → test
then run, fragment → type-checked in a wrapper = `compiled_only`), checks expectations (expected compile error,
error text, stdout), answers `unsupported` for imports it cannot satisfy, retries infrastructure failures with
backoff (never blaming the code), caches verdicts in SQLite, lets identical blocks checked at the same moment
share one check (``SingleFlight``, keyed like the cache) and bounds concurrency. `validate_many` adds
batching of plain test blocks (see ``doctune.agents.validator_batch``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import platform
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from doctune.agents.limits import SingleFlight
from doctune.core.schemas import CodeCheck, ExecMode, Expect, RequestedMode, Verdict, VerdictKind
from doctune.core.settings import ValidatorSettings, default_cache_dir
from doctune.executors import ExecOptions, ExecRequest, ExecResult, Executor, get_executor
from doctune.executors.cache import VerdictCache, cache_key
from doctune.executors.zigsrc import (
    classify,
    errors_only_in_fn_bodies,
    missing_imports,
    needs_companion,
    needs_libc,
    trim_output,
    wrap_fragment,
)

TRIM_BYTES = 4096
_FAILED_RUN = {"runtime_error", "test_failure"}


class BlockInput(BaseModel):
    """One block to validate (the `doctune validate --jsonl` input line; extra fields are ignored)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    id: str
    code: str
    mode: RequestedMode = "auto"
    expect: Expect | None = None
    files: dict[str, str] = Field(default_factory=dict, description="Sibling files the code @imports.")
    options: ExecOptions = Field(
        default_factory=ExecOptions, description="Build settings (libc, target, -O)."
    )
    name: str | None = Field(None, description="Root file name (Zig names the root module after it).")

    @field_validator("files", mode="before")
    @classmethod
    def _files(cls, v: Any) -> Any:
        if v is None:
            return {}
        return dict(v) if not isinstance(v, dict) else v

    @field_validator("options", mode="before")
    @classmethod
    def _options(cls, v: Any) -> Any:
        return exec_options(v)


def exec_options(v: Any) -> ExecOptions:
    """ExecOptions from a dict in the corpus format (`link_libc`, `target`, `optimize`, `additional_options`)."""
    if v is None:
        return ExecOptions()
    if isinstance(v, ExecOptions):
        return v
    extra = tuple(v.get("extra_args") or ()) + tuple(v.get("additional_options") or ())
    return ExecOptions(
        link_libc=bool(v.get("link_libc", False)),
        target=v.get("target") or None,
        optimize=v.get("optimize") or None,
        extra_args=extra,
    )


def is_native(target: str | None) -> bool:
    """Whether binaries for `target` run here (so run/test can execute, not only build)."""
    if not target or target.startswith("native"):
        return True
    arch, _, rest = target.partition("-")
    return arch == platform.machine() and rest.split("-")[0] == "linux"


def default_cache_path() -> Path:
    """The verdict cache of validator settings built alone (not by ``load_settings``, which sets ``cache_path``)."""
    return default_cache_dir() / "verdicts.sqlite"


class Validator:
    """Validates Zig blocks with an executor; safe to share across tasks of one event loop."""

    def __init__(self, settings: ValidatorSettings, executor: Executor | None = None) -> None:
        self.settings = settings
        self.executor = executor or get_executor(settings)
        self.cache = VerdictCache(settings.cache_path or default_cache_path()) if settings.cache else None
        self._sem: asyncio.Semaphore | None = None
        self._sem_loop: asyncio.AbstractEventLoop | None = None
        self.executions = 0  # executor calls (compiles), for stats and the benchmark
        self.batches = 0  # batched `zig test` compiles among them
        self._flights: SingleFlight[Verdict] = SingleFlight(copy=lambda v: v.model_copy(deep=True))

    # ---- public API -------------------------------------------------------------------------------------
    async def validate(
        self,
        code: str,
        *,
        mode: RequestedMode = "auto",
        expect: Expect | None = None,
        files: Sequence[tuple[str, str]] | dict[str, str] = (),
        options: ExecOptions = ExecOptions(),  # noqa: B008 - frozen dataclass, safe as default
        name: str | None = None,
    ) -> Verdict:
        block = BlockInput(
            id="", code=code, mode=mode, expect=expect, files=files, options=options, name=name
        )
        return await self.validate_block(block)

    async def validate_many(
        self, items: Sequence[BlockInput], *, on_done: Callable[[int, Verdict], None] | None = None
    ) -> list[Verdict]:
        """Validate all items concurrently (bounded); results in input order. A block identical to one being
        checked at this moment (same cache key, in this call or another) shares that check."""
        from doctune.agents.validator_batch import validate_many

        return await self._flights.run(
            [self.key(b) for b in items],
            lambda idx, done: validate_many(self, [items[i] for i in idx], on_done=done),
            on_done,
        )

    async def check(self, item: CodeCheck) -> Verdict:
        """One `CodeCheck` (what the trainer and the evaluator hand over), alone: no batch with other blocks."""
        return await self.validate_block(BlockInput(id=item.id, code=item.code, mode=item.mode, expect=item.expect))

    async def check_many(self, items: Sequence[CodeCheck]) -> list[Verdict]:
        """`CodeCheck`s as one `validate_many` (batched where the settings allow); the `ValidateMany` of core."""
        return await self.validate_many(
            [BlockInput(id=c.id, code=c.code, mode=c.mode, expect=c.expect) for c in items])

    async def validate_block(self, block: BlockInput) -> Verdict:
        key = self.key(block)
        return (await self._flights.run([key], lambda _, __: self._validate_one(key, block)))[0]

    async def _validate_one(self, key: str, block: BlockInput) -> list[Verdict]:
        # SQLite in a worker thread: nodes run in the server's event loop, which must not block.
        if self.cache is not None and (hit := (await self.cache.aget_many([key]))[0]) is not None:
            return [hit]
        verdict = await self.judge(block)
        if self.cache is not None:
            await self.cache.aput_many([(key, verdict)])
        return [verdict]

    async def aclose(self) -> None:
        await self.executor.aclose()
        if self.cache is not None:
            await self.cache.aclose()

    # ---- internals --------------------------------------------------------------------------------------
    def key(self, block: BlockInput) -> str:
        return cache_key(
            {
                "code": block.code,
                "files": sorted(block.files.items()),
                "name": block.name,
                "mode": block.mode,
                "expect": block.expect.model_dump() if block.expect else None,
                "options": repr(block.options),
                "executor": self.executor.cache_key_parts(),
                "v": 1,
            }
        )

    def plan(self, block: BlockInput) -> tuple[list[ExecRequest], bool]:
        """The executor requests for a block, and whether it is a compile-only fragment."""
        opts = block.options
        if not opts.link_libc and needs_libc(block.code):
            opts = ExecOptions(
                link_libc=True, target=opts.target, optimize=opts.optimize, extra_args=opts.extra_args
            )
        base: dict[str, Any] = {
            "files": tuple(sorted(block.files.items())),
            "options": opts,
            "expect_run": is_native(opts.target),
            "root_name": block.name or "main.zig",
        }
        if block.mode != "auto":
            return [ExecRequest(code=block.code, mode=block.mode, **base)], False
        kind = classify(block.code)
        if kind != "fragment" and needs_companion(block.code):
            # extern fns defined by a companion file the doc does not show: only an object file can be built.
            return [ExecRequest(code=block.code, mode="obj", **base)], True
        if kind == "fragment":
            return [ExecRequest(code=wrap_fragment(block.code), mode="obj", **base)], True
        if kind == "both":
            return [ExecRequest(code=block.code, mode=m, **base) for m in ("test", "run")], False
        return [ExecRequest(code=block.code, mode=kind, **base)], False

    async def judge(self, block: BlockInput) -> Verdict:
        missing = missing_imports(block.code, block.files)
        if missing:
            return Verdict(
                verdict="unsupported",
                stage="setup",
                stderr=f"imports not available to a single-file check: {', '.join(missing)}",
                executor=self.executor.name,
            )
        reqs, fragment = self.plan(block)
        if (pre := await self._expected_compile_error(block, reqs[0], fragment)) is not None:
            return pre
        total, res, mode = 0.0, None, reqs[0].mode
        for req in reqs:
            res = await self.execute(req)
            total += res.duration_s
            mode = req.mode
            if not res.ok:
                break
        assert res is not None
        if (
            fragment
            and res.stage == "compile"
            and not res.ok
            and await self._compiles_unreferenced(reqs[0], res, block)
        ):
            return Verdict(
                verdict="unsupported",
                mode="obj",
                compiled_only=True,
                stage="compile",
                stderr="a fragment that compiles only while its declarations are unused (as the doc shows it); "
                "analysing them fails:\n" + trim_output(res.stderr, TRIM_BYTES // 2),
                duration_s=round(total + res.duration_s, 3),
                executor=self.executor.name,
            )
        return self.to_verdict(res, mode, block.expect, fragment=fragment, duration=total)

    async def _compiles_unreferenced(self, req: ExecRequest, res: ExecResult, block: BlockInput) -> bool:
        """The fragment wrapper references every declaration; Zig analyses a function's body only when it is
        used. When every error lies in a function body and the bare fragment builds, the error comes from what
        the wrapper forced, not from the code as the doc shows it (langref's `divide`)."""
        if block.expect is not None and block.expect.outcome != "ok":
            return False
        if res.infra_error or res.resource_limit or res.timed_out:
            return False
        if not errors_only_in_fn_bodies(block.code, res.stderr, req.root_name):
            return False
        bare = await self.execute(dataclasses.replace(req, code=block.code))
        return bare.ok

    async def _expected_compile_error(
        self, block: BlockInput, req: ExecRequest, fragment: bool
    ) -> Verdict | None:
        """A block expected not to compile is first only type-checked (about half the cost of a build).

        Sema errors are the same with or without code generation; when the check passes, the caller does the
        full build, so errors found only by codegen/linking are still seen: the verdict is unchanged.
        """
        if block.expect is None or block.expect.outcome != "compile_error" or fragment:
            return None
        if not getattr(self.executor, "supports_check_only", False):
            return None
        res = await self.execute(dataclasses.replace(req, check_only=True))
        if res.ok or res.infra_error or res.timed_out or res.stage != "compile":
            return None
        return self.to_verdict(res, req.mode, block.expect, fragment=False, duration=res.duration_s)

    def _semaphore(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._sem is None or self._sem_loop is not loop:
            self._sem, self._sem_loop = asyncio.Semaphore(self.settings.concurrency), loop
        return self._sem

    async def execute(self, req: ExecRequest) -> ExecResult:
        """Run one request; infrastructure failures are retried with exponential backoff."""
        attempts = 1 + self.settings.max_infra_retries
        res: ExecResult | None = None
        for i in range(attempts):
            async with self._semaphore():
                self.executions += 1
                res = await self.executor.execute(req)
            if res.infra_error is None:
                return res
            if i + 1 < attempts:
                await asyncio.sleep(min(8.0, 0.5 * 2**i))
        assert res is not None
        return res

    async def execute_many(
        self, req: ExecRequest, run_envs: list[dict[str, str]]
    ) -> tuple[ExecResult, list[ExecResult]]:
        """Compile once and run once per environment (batched programs); infra failures retried like `execute`."""
        attempts = 1 + self.settings.max_infra_retries
        out: tuple[ExecResult, list[ExecResult]] | None = None
        for i in range(attempts):
            async with self._semaphore():
                self.executions += 1
                out = await self.executor.execute_many(req, run_envs)  # type: ignore[attr-defined]
            if out[0].infra_error is None and all(r.infra_error is None for r in out[1]):
                return out
            if i + 1 < attempts:
                await asyncio.sleep(min(8.0, 0.5 * 2**i))
        assert out is not None
        return out

    def to_verdict(
        self, res: ExecResult, mode: ExecMode, expect: Expect | None, *, fragment: bool, duration: float
    ) -> Verdict:
        kind = result_kind(res, mode)
        if (
            kind == "ok"
            and expect is not None
            and expect.stdout is not None
            and mode == "run"
            and res.stage == "run"
        ):
            if not same_stdout(
                res.stdout, expect.stdout, stripped=getattr(self.executor, "output_stripped", False)
            ):
                kind = "wrong_output"
        stderr = res.stderr if res.infra_error is None else f"infra: {res.infra_error}\n{res.stderr}"
        return Verdict(
            verdict=kind,
            expected_met=expected_met(kind, res, expect),
            mode=mode,
            compiled_only=fragment,
            stage=res.stage,
            exit_code=res.exit_code,
            stdout=trim_output(res.stdout, TRIM_BYTES),
            stderr=trim_output(stderr, TRIM_BYTES),
            duration_s=round(duration, 3),
            executor=self.executor.name,
            tests=res.tests if mode == "test" else None,
            limit=(res.limit or "memory") if kind == "resource_limit" else None,
        )


def same_stdout(got: str, want: str, *, stripped: bool) -> bool:
    """Exact match; executors that trim output (Codapi) are compared modulo surrounding whitespace."""
    return got.strip() == want.strip() if stripped else got == want


def result_kind(res: ExecResult, mode: ExecMode) -> VerdictKind:
    """What happened, as a verdict kind (before expectations)."""
    if res.infra_error is not None:
        return "infra_error"
    if res.timed_out:
        return "timeout"
    if res.resource_limit:
        return "resource_limit"
    if res.ok:
        return "ok"
    if res.stage == "compile":
        return "compile_error"
    if res.stage == "setup":
        return "unsupported"
    if mode == "test" and res.tests is not None:
        # Judged from the runner's report: a failed test, or a binary that ended before the final report.
        return "test_failure"
    if res.exit_code == 1 and "error: OutOfMemory" in res.stderr:
        return "resource_limit"  # an allocation refused by our address-space limit, returned from main
    if mode == "test" and res.signal is None:
        return "test_failure"
    return "runtime_error"


def expected_met(kind: VerdictKind, res: ExecResult, expect: Expect | None) -> bool | None:
    """Whether the observed outcome is the one the block's expectation states (None: no expectation)."""
    if expect is None or kind in ("infra_error", "unsupported"):
        return None
    if expect.outcome == "ok":
        return kind == "ok"
    if expect.outcome == "compile_error":
        met = kind == "compile_error"
    else:  # runtime_error | test_failure: the build worked, running it failed (panic, failed test, exit != 0)
        # An OutOfMemory returned from main is reported as resource_limit, but it is a runtime failure too.
        met = kind in _FAILED_RUN or (kind == "resource_limit" and res.exit_code == 1)
    if met and expect.error_contains:
        met = expect.error_contains in res.stderr or expect.error_contains in res.stdout
    return met


def validate_sync(code: str, settings: ValidatorSettings | None = None, **kw: Any) -> Verdict:
    """Validate one block from synchronous code (starts and closes its own event loop)."""

    async def _go() -> Verdict:
        v = Validator(settings or ValidatorSettings())
        try:
            return await v.validate(code, **kw)
        finally:
            await v.aclose()

    return asyncio.run(_go())


def validator_service(settings: ValidatorSettings) -> tuple[Any, Any]:
    """(validate_many, close) over one ``Validator``, created on first use inside the trainer's event loop (its
    semaphore and HTTP client belong to that loop)."""
    held: list[Validator] = []

    async def validate_many(checks: list[CodeCheck]) -> list[Any]:
        if not held:
            held.append(Validator(settings))
        return await held[0].check_many(checks)

    async def close() -> None:
        if held:
            await held.pop().aclose()

    return validate_many, close
