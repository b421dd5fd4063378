"""The executor interface. An executor compiles and runs exactly what it is given; it does not judge.

Deciding *what* to run (program, tests, wrapped fragment) and *what the result means* (verdicts, expectations)
is the validator agent's job (`doctune.agents.validator`).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field

from doctune.core.schemas import ExecMode, ZigTestCounts


@dataclass(frozen=True)
class ExecOptions:
    """Extra build settings (from the language reference's annotations, or a pair's needs)."""

    link_libc: bool = False
    target: str | None = None
    optimize: str | None = None  # Debug | ReleaseSafe | ReleaseFast | ReleaseSmall
    extra_args: tuple[str, ...] = ()


@dataclass(frozen=True)
class ExecRequest:
    """Compile `code` as the root file and run it (`run`), test it (`test`) or only build it (`obj`)."""

    code: str
    mode: ExecMode
    files: tuple[tuple[str, str], ...] = ()  # sibling files (name, content) written next to the root
    options: ExecOptions = field(default_factory=ExecOptions)
    expect_run: bool = True  # False: build only (e.g. non-native target), even in run mode
    root_name: str = "main.zig"  # the root file's name: Zig names the root module (and its types) after it
    check_only: bool = False  # semantic analysis only (-fno-emit-bin), nothing runs; executors may ignore it


@dataclass
class ExecResult:
    """What happened. `stage` is where it stopped: 'compile', 'run' (program/tests executed) or 'setup'."""

    stage: str
    exit_code: int | None
    stdout: str
    stderr: str
    duration_s: float
    timed_out: bool = False
    signal: int | None = None
    resource_limit: bool = False  # killed by a CPU/memory/process/file-size limit
    infra_error: str | None = None  # the executor itself failed: never blame the code
    truncated: bool = False  # output was over the cap and cut
    limit: str | None = None  # with resource_limit: which one (memory, pids, cpu, fsize, output)
    tests: ZigTestCounts | None = None  # test mode with doctune's runner: what the runner reported
    tests_finished: bool = False  # the runner wrote its final record (every selected test returned)
    memory_peak_bytes: int = 0  # the sandbox cgroup's peak memory, when known

    @property
    def ok(self) -> bool:
        if self.infra_error is not None or self.timed_out or self.resource_limit:
            return False
        if self.tests is not None:  # judged per test from the runner's report, never by the exit status
            return self.tests_finished and self.tests.failed == 0 and self.tests.unfinished is None
        return self.exit_code == 0


class Executor(abc.ABC):
    """Runs one request. Implementations must be safe to call concurrently from one event loop."""

    name: str = "executor"

    @abc.abstractmethod
    async def execute(self, req: ExecRequest) -> ExecResult:
        """Compile (and run/test) the request; never raise for bad code, only return a result."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release resources (HTTP clients, temp dirs)."""

    def cache_key_parts(self) -> tuple[str, ...]:
        """What besides the code makes verdicts differ (toolchain version, backend flags)."""
        return (self.name,)
