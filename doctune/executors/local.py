"""The local executor: the `ziglang` wheel's Zig 0.14.0, compile and run as two sandboxed steps.

Every request gets a fresh temp dir (sources, output binary). The compiler uses this executor's private Zig
cache (never the user's ~/.cache/zig), which only the compiler writes; the compiled program then runs in its own
sandbox without the cache or the toolchain (see ``doctune.executors.sandbox``). Each step runs in its own cgroup
where one can be made (memory + pids), tests with doctune's runner, and its outcome is read from channels the
code cannot write (``doctune.executors.steps``). Runs get a uid of their own (``doctune.executors.uids``).
File work (the temp dir, its sources, its removal) runs in a worker thread, one hop per request and not per file:
the executor is called from graph nodes in the server's event loop, which must never block.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from doctune.core.settings import ValidatorSettings, default_cache_dir
from doctune.core.zig import zig_dir, zig_version
from doctune.executors import uids
from doctune.executors.base import ExecRequest, ExecResult, Executor
from doctune.executors.blocking import in_thread
from doctune.executors.cgroups import Cgroup
from doctune.executors.channels import TEST_RUNNER, supervisor_binary
from doctune.executors.sandbox import (
    SANDBOX_UID,
    Limits,
    Watch,
    compile_argv,
    resolve_sandbox,
    rlimit_preexec,
    run_argv,
)
from doctune.executors.steps import Step, run_step

_SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\- ]*\.zig$")
# Compiler output that means the toolchain/cache failed, not the code (seen under parallel compiles).
_INFRA_PATTERNS = re.compile(
    r"unable to (?:load|open|create|write|rename|spawn|make path|check cache)|"
    r"ProcessFdQuotaExceeded|SystemResources|FileBusy|failed to spawn|LLVM ERROR|"
    r"error: (?:FileNotFound|AccessDenied|Unexpected|OutOfMemory|PathAlreadyExists)\s*$",
    re.MULTILINE,
)
_COMPILER_OOM = re.compile(r"^error: OutOfMemory\s*$", re.MULTILINE)
_USER_ERROR = re.compile(r"^\S[^\n]*:\d+:\d+: error: ", re.MULTILINE)


TEST_FILTER_ENV = "DOCTUNE_TESTS"  # in a run env of execute_many: which tests of the binary this run is for
RUN_PIDS = 128  # processes + threads per run sandbox (cgroup pids.max, and RLIMIT_NPROC for its own uid)


def default_zig_cache() -> Path:
    """The Zig cache of validator settings built alone (not by ``load_settings``, which sets ``zig_cache_dir``)."""
    return default_cache_dir() / "zig-cache"


class LocalExecutor(Executor):
    """Compiles with the local Zig and runs the result, sandboxed with bubblewrap when available."""

    name = "local"
    supports_batch = True  # several files in one compile (see doctune.agents.validator_batch)
    supports_check_only = True  # ExecRequest.check_only is honoured

    def __init__(
        self, settings: ValidatorSettings, *, zig_cache: Path | None = None, kill_on_output: bool = True
    ) -> None:
        self.settings = settings
        # Runaway output (16x the cap) ends the program as a resource limit; Codapi-like callers keep going.
        self.kill_after = 16 * settings.output_limit_bytes if kill_on_output else 1 << 62
        self.bwrap = resolve_sandbox(settings.sandbox, settings.unsafe_no_sandbox)
        self.toolchain = zig_dir()
        cache = zig_cache or settings.zig_cache_dir or default_zig_cache()
        self.zig_cache = Path(cache).expanduser().resolve()
        self.zig_cache.mkdir(parents=True, exist_ok=True)
        self.limits = Limits(
            cpu_s=max(1, int(settings.run_timeout_s) + 1),
            address_space_mb=settings.memory_mb,
            nproc=RUN_PIDS,
            fsize_mb=16,
            # Without a cgroup, open files x file size is what bounds memfd memory (64 x 16 MiB).
            nofile=256 if Cgroup.available() else 64,
        )
        # The compiler is trusted but the comptime code it evaluates is not: CPU seconds always, and an
        # address-space cap where no cgroup bounds its memory.
        self.compile_limits = Limits(cpu_s=int(settings.compile_timeout_s * 2) + 1)
        self.compile_limits_no_cgroup = Limits(
            cpu_s=self.compile_limits.cpu_s, address_space_mb=settings.compile_memory_mb + 1024
        )
        self.supervisor = supervisor_binary(self.toolchain / "zig", self.zig_cache) if self.bwrap else None
        # Read once here (executors are built off the event loop), not per cache key.
        self.runner_digest = hashlib.sha256(TEST_RUNNER.read_bytes()).hexdigest()[:12]
        # One uid per concurrent sandbox, across processes (doctune.executors.uids); only root can switch to it.
        self._uids = uids.POOL if self.bwrap and os.geteuid() == 0 else None

    @property
    def sandboxed(self) -> bool:
        return self.bwrap is not None

    def cache_key_parts(self) -> tuple[str, ...]:
        flags = "fast" if self.settings.fast_backend else "llvm"
        return (
            self.name,
            zig_version(),
            flags,
            f"mem{self.settings.memory_mb}",
            f"t{self.settings.run_timeout_s}",
            f"sbx{self.settings.sandbox_memory_mb}-cc{self.settings.compile_memory_mb}",
            "bwrap" if self.bwrap else "unsandboxed",
            "runner-" + self.runner_digest,
        )

    async def execute(self, req: ExecRequest) -> ExecResult:
        compiled, runs = await self.execute_many(req, [{}])
        if not runs:
            return compiled
        ran = runs[0]
        ran.duration_s += compiled.duration_s
        return ran

    async def execute_many(
        self, req: ExecRequest, run_envs: Sequence[dict[str, str]]
    ) -> tuple[ExecResult, list[ExecResult]]:
        """Compile once, then run the binary once per entry of `run_envs` (extra environment variables).

        Returns the compile result and the run results ([] when nothing ran: compile failed, obj, no run).
        """
        emit = not req.check_only and (req.mode != "obj" or req.expect_run)
        fast = emit and self.settings.fast_backend and _fast_backend_ok(req)
        compiled, runs = await self._build_and_run(req, run_envs, emit=emit, fast=fast)
        if not fast or (compiled.ok and all(r.ok for r in runs)):
            return compiled, runs
        # The self-hosted backend lacks some features (C ABI, global asm, ...): a failure only counts when
        # LLVM, the default backend, confirms it, so fast verdicts match LLVM's on every failure.
        redo = [k for k, r in enumerate(runs) if not r.ok] if compiled.ok else list(range(len(run_envs)))
        compiled2, runs2 = await self._build_and_run(req, [run_envs[k] for k in redo], emit=emit, fast=False)
        if not compiled.ok or not compiled2.ok:
            return compiled2, runs2
        for k, r in zip(redo, runs2, strict=True):
            runs[k] = r
        return compiled, runs

    async def _build_and_run(
        self, req: ExecRequest, run_envs: Sequence[dict[str, str]], *, emit: bool, fast: bool
    ) -> tuple[ExecResult, list[ExecResult]]:
        name = req.root_name if _SAFE_NAME.match(req.root_name) else "main.zig"
        # One worker-thread hop writes every file; on cancellation the thread's temp dir is removed all the same.
        tmp, problem = await in_thread(_work_dir, name, req.code, req.files, undo=lambda made: made[0].cleanup())
        try:
            if problem is not None:
                return _setup_error(problem), []
            src, out = Path(tmp.name, "src"), Path(tmp.name, "out")
            compiled = await self._compile(req, name, src, out, emit=emit, fast=fast)
            if compiled.infra_error or not compiled.ok or not emit or req.mode == "obj" or not req.expect_run:
                return compiled, []
            return compiled, [await self._run(out / "prog", env, req.mode) for env in run_envs]
        finally:
            await in_thread(tmp.cleanup)

    def zig_command(
        self, req: ExecRequest, name: str, *, zig: str, out_dir: str, emit: bool, fast: bool = False
    ) -> list[str]:
        """The compile command (paths as the sandbox sees them)."""
        sub = {"run": "build-exe", "test": "test", "obj": "build-obj"}[req.mode]
        cmd = [zig, sub, name]
        if req.mode == "test":
            cmd.append("--test-no-exec")
        cmd.append(f"-femit-bin={out_dir}/prog" if emit else "-fno-emit-bin")
        opts = req.options
        if opts.link_libc:
            cmd.append("-lc")
        if opts.target:
            cmd += ["-target", opts.target]
        if opts.optimize:
            cmd += ["-O", opts.optimize]
        if fast and emit:
            cmd += ["-fno-llvm", "-fno-lld"]
        cmd += list(opts.extra_args)
        return cmd

    async def _compile(
        self, req: ExecRequest, name: str, src: Path, out: Path, *, emit: bool, fast: bool
    ) -> ExecResult:
        step = Step(
            "compile",
            timeout_s=self.settings.compile_timeout_s,
            cap=self.settings.output_limit_bytes,
            memory_bytes=self.settings.compile_memory_mb << 20,
            pids=4096,
            cwd=str(src),
        )
        limits = self.compile_limits if Cgroup.available() else self.compile_limits_no_cgroup
        # doctune's runner is Linux code and only matters when the tests run here; other targets only build.
        runner = req.mode == "test" and req.expect_run

        def build(status_fd: int, json_fd: int, extra: dict[str, str]) -> list[str]:
            cmd = self.zig_command(req, name, zig="/zig/zig", out_dir="/out", emit=emit, fast=fast)
            if runner:
                cmd += ["--test-runner", "/doctune/test_runner.zig"]
            return compile_argv(
                self.bwrap,  # type: ignore[arg-type]
                cmd,
                src=src,
                out=out,
                toolchain=self.toolchain,
                cache=self.zig_cache,
                watch=Watch(self.supervisor, status_fd, json_fd),  # type: ignore[arg-type]
                limits=limits,
                extra_ro=((TEST_RUNNER, "/doctune/test_runner.zig"),),
            )

        if not self.bwrap:
            zig = str(self.toolchain / "zig")
            cmd = self.zig_command(req, name, zig=zig, out_dir=str(out), emit=emit, fast=fast)
            step.sandboxed = False
            step.argv = cmd + (["--test-runner", str(TEST_RUNNER)] if runner else [])
            step.env = {
                "PATH": "/usr/bin:/bin",
                "HOME": str(self.zig_cache),
                "ZIG_GLOBAL_CACHE_DIR": str(self.zig_cache),
                "ZIG_LOCAL_CACHE_DIR": str(self.zig_cache),
            }
            step.preexec = rlimit_preexec(limits)
        result = await run_step(step, build if self.bwrap else None)
        failed = result.infra_error is None and not result.ok and not result.timed_out
        if failed and limits.address_space_mb and _COMPILER_OOM.search(result.stderr):
            # No cgroup: the compiler's own "OutOfMemory" (trusted output) under our address-space cap.
            result.resource_limit, result.limit = True, "memory"
        elif failed and not result.resource_limit and _looks_like_infra(result):
            result.infra_error = "compiler failed without a source error: " + _first_line(result.stderr)
        return result

    async def _run(self, binary: Path, env: dict[str, str], mode: str) -> ExecResult:
        env = dict(env)
        step = Step(
            "run",
            timeout_s=self.settings.run_timeout_s,
            cap=self.settings.output_limit_bytes,
            kill_after=self.kill_after,
            memory_bytes=self.settings.sandbox_memory_mb << 20,
            pids=RUN_PIDS + 8,  # + bwrap, its init and the supervisor
            report=mode == "test",
            test_filter=env.pop(TEST_FILTER_ENV, ""),
        )
        uid = await self._sandbox_uid()
        try:
            if self.bwrap:

                def build(status_fd: int, json_fd: int, extra: dict[str, str]) -> list[str]:
                    return run_argv(
                        self.bwrap,  # type: ignore[arg-type]
                        binary,
                        [],
                        limits=self.limits,
                        watch=Watch(self.supervisor, status_fd, json_fd),  # type: ignore[arg-type]
                        uid=SANDBOX_UID if uid is None else uid,
                        env={**env, **extra},
                    )

                return await run_step(step, build)
            work = await in_thread(_run_dir, binary)
            prog = work / "prog"
            step.sandboxed, step.argv, step.cwd = False, [str(prog)], str(work)
            # Built from scratch: the host's environment (API keys, tokens) never reaches the program.
            step.env = {"PATH": "/usr/bin:/bin", "HOME": str(work), "LANG": "C.UTF-8", **env}
            step.preexec = rlimit_preexec(self.limits)
            return await run_step(step, None)
        finally:
            self._give_back(uid)

    async def _sandbox_uid(self) -> int | None:
        """A uid no other running sandbox has (None: not root, or none left: the sandbox's default uid)."""
        if self._uids is None:
            return None
        uid = self._uids.take()
        return uid if uid is not None else await in_thread(self._uids.claim, undo=self._give_back)

    def _give_back(self, uid: int | None) -> None:
        if uid is not None and self._uids is not None:
            self._uids.give(uid)


def _work_dir(
    name: str, code: str, files: Sequence[tuple[str, str]]
) -> tuple[tempfile.TemporaryDirectory[str], str | None]:
    """A fresh temp dir holding src/ (the root file `name` and its siblings) and an empty out/; the second value
    says why the request is refused (a sibling's name that escapes src/), else None. Blocking: call in a thread."""
    tmp = tempfile.TemporaryDirectory(prefix="doctune-exec-")
    try:
        src, out = Path(tmp.name, "src"), Path(tmp.name, "out")
        src.mkdir()
        out.mkdir()
        (src / name).write_text(code, encoding="utf-8")
        for fname, content in files:
            dest = (src / fname).resolve()
            if not dest.is_relative_to(src.resolve()):
                return tmp, f"file name escapes the work dir: {fname!r}"
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(content, encoding="utf-8")
    except BaseException:
        tmp.cleanup()
        raise
    return tmp, None


def _run_dir(binary: Path) -> Path:
    """An unsandboxed run's own directory beside the binary, holding a copy of it. Blocking: call in a thread."""
    work = Path(tempfile.mkdtemp(prefix="doctune-run-", dir=binary.parent))
    shutil.copy2(binary, work / "prog")
    return work


_FAST_UNSUPPORTED = re.compile(r"\basm\b|\bextern\b|\.\.\.\s*\)|callconv|@cImport|test_functions")


def _fast_backend_ok(req: ExecRequest) -> bool:
    """Whether the self-hosted backend is used at all: native, no libc, no C ABI or assembly."""
    o = req.options
    if o.target or o.link_libc or o.extra_args:
        return False
    return not any(_FAST_UNSUPPORTED.search(code) for code in (req.code, *(c for _, c in req.files)))


def _looks_like_infra(res: ExecResult) -> bool:
    if res.signal is not None:
        return True  # the compiler itself crashed or was killed (limits were attributed before)
    if _USER_ERROR.search(res.stderr):
        return False
    return bool(_INFRA_PATTERNS.search(res.stderr))


def _first_line(text: str) -> str:
    return next((ln.strip() for ln in text.splitlines() if ln.strip()), "(no output)")[:300]


def _setup_error(msg: str) -> ExecResult:
    return ExecResult(stage="setup", exit_code=None, stdout="", stderr=msg, duration_s=0.0, infra_error=None)
