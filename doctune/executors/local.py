"""The local executor: the `ziglang` wheel's Zig 0.14.0, compile and run as two sandboxed steps.

Every request gets a fresh temp dir (sources, output binary). The compiler uses this executor's private Zig
cache (never the user's ~/.cache/zig), which only the compiler writes; the compiled program then runs in its own
sandbox without the cache or the toolchain (see ``doctune.executors.sandbox``).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from doctune.executors.base import ExecRequest, ExecResult, Executor
from doctune.executors.proc import ProcResult, run_process
from doctune.executors.sandbox import Limits, compile_argv, resolve_sandbox, rlimit_preexec, run_argv
from doctune.settings import ValidatorSettings
from doctune.zig import zig_dir, zig_version

_SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\- ]*\.zig$")
# Compiler output that means the toolchain/cache failed, not the code (seen under parallel compiles).
_INFRA_PATTERNS = re.compile(
    r"^bwrap: |unable to (?:load|open|create|write|rename|spawn|make path|check cache)|"
    r"ProcessFdQuotaExceeded|SystemResources|FileBusy|failed to spawn|LLVM ERROR|"
    r"error: (?:FileNotFound|AccessDenied|Unexpected|OutOfMemory|PathAlreadyExists)\s*$",
    re.MULTILINE,
)
_USER_ERROR = re.compile(r"^\S[^\n]*:\d+:\d+: error: ", re.MULTILINE)


def default_zig_cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "doctune" / "zig-cache"


class LocalExecutor(Executor):
    """Compiles with the local Zig and runs the result, sandboxed with bubblewrap when available."""

    name = "local"
    supports_batch = True  # several files in one compile (see doctune.executors.batch)
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
            nproc=128,
            fsize_mb=16,
        )

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
            "bwrap" if self.bwrap else "unsandboxed",
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
        with tempfile.TemporaryDirectory(prefix="doctune-exec-") as tmp:
            src, out = Path(tmp, "src"), Path(tmp, "out")
            src.mkdir()
            out.mkdir()
            (src / name).write_text(req.code, encoding="utf-8")
            for fname, content in req.files:
                dest = (src / fname).resolve()
                if not dest.is_relative_to(src.resolve()):
                    return _setup_error(f"file name escapes the work dir: {fname!r}"), []
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_text(content, encoding="utf-8")
            compiled = await self._compile(req, name, src, out, emit=emit, fast=fast)
            if compiled.infra_error or not compiled.ok or not emit or req.mode == "obj" or not req.expect_run:
                return compiled, []
            return compiled, [await self._run_confirmed(out / "prog", env) for env in run_envs]

    async def _run_confirmed(self, binary: Path, env: dict[str, str]) -> ExecResult:
        """Run; a failure is run once more (milliseconds), and one that does not reproduce is not blamed on the
        code: under parallel load spurious failures happen (the corpus notes some), real ones repeat."""
        first = await self._run(binary, env)
        if first.ok or first.timed_out or first.resource_limit or first.infra_error:
            return first
        if (await self._run(binary, env)).ok:
            first.infra_error = (
                "run failed, then passed when repeated: not reproducible (host load or flaky code)"
            )
        return first

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
        timeout = self.settings.compile_timeout_s
        cap = self.settings.output_limit_bytes
        if self.bwrap:
            cmd = self.zig_command(req, name, zig="/zig/zig", out_dir="/out", emit=emit, fast=fast)
            argv = compile_argv(
                self.bwrap, cmd, src=src, out=out, toolchain=self.toolchain, cache=self.zig_cache
            )
            res = await run_process(argv, timeout_s=timeout, cap=cap)
        else:
            cmd = self.zig_command(
                req, name, zig=str(self.toolchain / "zig"), out_dir=str(out), emit=emit, fast=fast
            )
            env = {
                **os.environ,
                "ZIG_GLOBAL_CACHE_DIR": str(self.zig_cache),
                "ZIG_LOCAL_CACHE_DIR": str(self.zig_cache),
            }
            res = await run_process(cmd, timeout_s=timeout, cap=cap, env=env, cwd=str(src))
        result = _to_result("compile", res)
        if result.infra_error is None and not result.ok and not result.timed_out and _looks_like_infra(res):
            result.infra_error = "compiler failed without a source error: " + _first_line(res.stderr)
        return result

    async def _run(self, binary: Path, env: dict[str, str]) -> ExecResult:
        timeout = self.settings.run_timeout_s
        cap = self.settings.output_limit_bytes
        if self.bwrap:
            argv = run_argv(self.bwrap, binary, [], limits=self.limits, env=env)
            res = await run_process(argv, timeout_s=timeout, cap=cap, kill_after=self.kill_after)
        else:
            work = Path(tempfile.mkdtemp(prefix="doctune-run-", dir=binary.parent))
            prog = work / "prog"
            shutil.copy2(binary, prog)
            res = await run_process(
                [str(prog)],
                timeout_s=timeout,
                cap=cap,
                kill_after=self.kill_after,
                cwd=str(work),
                env={**os.environ, **env},
                preexec_fn=rlimit_preexec(self.limits),
            )
        result = _to_result("run", res)
        if self.bwrap and res.returncode == 1 and res.stderr.startswith("bwrap: "):
            result.infra_error = "sandbox failed to start: " + _first_line(res.stderr)
        elif res.signal == 9 and not res.timed_out and not res.output_exceeded:
            # We only SIGKILL on timeout/output; the CPU limit ends a program with SIGXCPU first.
            result.infra_error = "program killed by SIGKILL from outside the sandbox (host out of memory?)"
        return result


def _to_result(stage: str, res: ProcResult) -> ExecResult:
    sig = res.signal
    return ExecResult(
        stage=stage,
        exit_code=res.returncode,
        stdout=res.stdout,
        stderr=res.stderr,
        duration_s=res.duration_s,
        timed_out=res.timed_out,
        signal=sig,
        # SIGXCPU / SIGXFSZ come from rlimits; runaway output is a limit of ours.
        resource_limit=res.output_exceeded or sig in (24, 25),
        infra_error=res.start_error,
        truncated=res.truncated,
    )


_FAST_UNSUPPORTED = re.compile(r"\basm\b|\bextern\b|\.\.\.\s*\)|callconv|@cImport|test_functions")


def _fast_backend_ok(req: ExecRequest) -> bool:
    """Whether the self-hosted backend is used at all: native, no libc, no C ABI or assembly."""
    o = req.options
    if o.target or o.link_libc or o.extra_args:
        return False
    return not any(_FAST_UNSUPPORTED.search(code) for code in (req.code, *(c for _, c in req.files)))


def _looks_like_infra(res: ProcResult) -> bool:
    if res.returncode is not None and res.returncode < 0:
        return True  # the compiler itself crashed or was killed
    if _USER_ERROR.search(res.stderr):
        return False
    return bool(_INFRA_PATTERNS.search(res.stderr))


def _first_line(text: str) -> str:
    return next((ln.strip() for ln in text.splitlines() if ln.strip()), "(no output)")[:300]


def _setup_error(msg: str) -> ExecResult:
    return ExecResult(stage="setup", exit_code=None, stdout="", stderr=msg, duration_s=0.0, infra_error=None)
