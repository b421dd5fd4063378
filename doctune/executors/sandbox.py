"""Sandboxing of untrusted Zig code: bubblewrap command lines plus resource limits.

Two kinds of sandboxed step, both with no network, a new PID/IPC/UTS namespace, die-with-parent, a read-only
``/usr`` and nothing else of the host:

- **compile**: the (trusted) compiler reads the sources read-only, writes the binary to ``/out`` and uses the
  executor's private Zig cache (read-write). Comptime code cannot do I/O, so the cache is only written by Zig.
- **run**: the untrusted binary sees only a fresh tmpfs ``/work`` with itself bound read-only — no cache, no
  toolchain — and runs under rlimits (CPU seconds, address space, processes, file size, open files) as an
  unprivileged uid (one per concurrent sandbox: Linux counts RLIMIT_NPROC per uid, and not for root).

Both steps start doctune's supervisor (``supervisor.zig``) inside the sandbox: it reports the child's real wait
status on a pipe (bwrap itself turns death by signal n into exit 128+n), and bwrap's ``--json-status-fd`` says
whether the sandbox came up at all. Total memory and process count are bounded per sandbox by a cgroup where
one can be made (``doctune.executors.cgroups``).

Without bubblewrap nothing is isolated; the executor refuses to run unless the user opted in
(``validator.unsafe_no_sandbox``); rlimits are still applied.
"""

from __future__ import annotations

import functools
import os
import resource
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from doctune.core.errors import ToolchainError

SANDBOX_UID = 65534  # nobody: limits like RLIMIT_NPROC only bind a non-root uid


@dataclass(frozen=True)
class Limits:
    """rlimits for an untrusted step (None = not limited)."""

    cpu_s: int | None = None
    address_space_mb: int | None = None
    nproc: int | None = None
    fsize_mb: int | None = None
    nofile: int | None = None


@functools.cache
def bwrap_path() -> str | None:
    """The bwrap binary, if it exists and can create namespaces here (containers may forbid it)."""
    exe = shutil.which("bwrap")
    if exe is None:
        return None
    try:
        probe = subprocess.run(
            [*_base(exe), "--", "/usr/bin/true"],
            capture_output=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return exe if probe.returncode == 0 else None


def resolve_sandbox(mode: str, unsafe_ok: bool) -> str | None:
    """The bwrap path to use, or None for no sandbox; raises when running unsandboxed was not allowed."""
    if mode in ("auto", "bwrap"):
        exe = bwrap_path()
        if exe is not None:
            return exe
        if mode == "bwrap" or not unsafe_ok:
            raise ToolchainError(
                "bubblewrap (bwrap) is not available or cannot create namespaces here, so untrusted code "
                "cannot be sandboxed; install it (Debian: apt-get install bubblewrap) or accept the risk with "
                "--unsafe-no-sandbox (validator.unsafe_no_sandbox=true)"
            )
        return None
    if not unsafe_ok:
        raise ToolchainError(
            "validator.sandbox='none' needs --unsafe-no-sandbox (validator.unsafe_no_sandbox)"
        )
    return None


def _base(bwrap: str, *, keep_setuid: bool = False) -> list[str]:
    argv = [bwrap, "--die-with-parent", "--new-session"]
    if os.getuid() == 0:
        # No user namespace as root: the run step must be able to switch to an unmapped uid (nobody).
        argv += ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try"]
    else:
        argv.append("--unshare-all")
    if not keep_setuid:
        argv += ["--cap-drop", "ALL"]
    argv += ["--ro-bind", "/usr", "/usr", *_root_links()]
    argv += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--clearenv"]
    argv += ["--setenv", "PATH", "/usr/bin:/bin", "--setenv", "HOME", "/tmp", "--setenv", "LANG", "C.UTF-8"]
    return argv


@functools.cache
def _root_links() -> tuple[str, ...]:
    """/lib, /lib64, /bin, /sbin as the host has them (symlinks into /usr, or directories). Read once, by the
    probe in `bwrap_path` (off the event loop), so building a step's argv does no file I/O."""
    argv: list[str] = []
    for link in ("lib", "lib64", "bin", "sbin"):
        target = Path("/") / link
        if target.is_symlink():
            argv += ["--symlink", os.readlink(target), f"/{link}"]
        elif target.is_dir():
            argv += ["--ro-bind", str(target), f"/{link}"]
    return tuple(argv)


@dataclass(frozen=True)
class Watch:
    """Where bwrap and doctune's supervisor report (fds the child inherits) and the supervisor binary."""

    supervisor: Path
    status_fd: int  # the supervisor writes the program's real wait status here
    json_fd: int  # bwrap's --json-status-fd: child-pid once the sandbox is up, exit-code at the end


def _watched(argv: list[str], watch: Watch) -> list[str]:
    return [
        *argv,
        "--ro-bind",
        str(watch.supervisor),
        "/.doctune-sup",
        "--json-status-fd",
        str(watch.json_fd),
    ]


def compile_argv(
    bwrap: str,
    cmd: list[str],
    *,
    src: Path,
    out: Path,
    toolchain: Path,
    cache: Path,
    watch: Watch,
    limits: Limits,
    extra_ro: tuple[tuple[Path, str], ...] = (),
) -> list[str]:
    """bwrap argv for the compile step; `cmd` refers to /zig/zig, /src, /out and /cache."""
    argv = _watched(_base(bwrap), watch)
    for host, inside in extra_ro:
        argv += ["--ro-bind", str(host), inside]
    argv += ["--ro-bind", str(toolchain), "/zig", "--ro-bind", str(src), "/src", "--bind", str(out), "/out"]
    argv += ["--bind", str(cache), "/cache"]
    argv += ["--setenv", "ZIG_GLOBAL_CACHE_DIR", "/cache", "--setenv", "ZIG_LOCAL_CACHE_DIR", "/cache"]
    argv += ["--chdir", "/src", "--", "/.doctune-sup", str(watch.status_fd)]
    return argv + prlimit_prefix(limits) + cmd


def run_argv(
    bwrap: str,
    binary: Path,
    args: list[str],
    *,
    limits: Limits,
    watch: Watch,
    uid: int = SANDBOX_UID,
    env: dict[str, str] | None = None,
    work_mb: int = 64,
) -> list[str]:
    """bwrap argv for running an untrusted binary in a fresh tmpfs /work as an unprivileged uid (as root:
    `uid`, one per concurrent sandbox, so per-uid limits like RLIMIT_NPROC are per sandbox)."""
    as_root = os.getuid() == 0
    argv = _watched(_base(bwrap, keep_setuid=as_root), watch)
    for key, value in (env or {}).items():
        argv += ["--setenv", key, value]
    argv += ["--size", str(work_mb << 20), "--perms", "0777", "--tmpfs", "/work"]
    argv += ["--ro-bind", str(binary), "/work/.prog", "--chdir", "/work"]
    argv += ["--", "/.doctune-sup", str(watch.status_fd)]
    if as_root:  # leaving uid 0 also drops every capability
        argv += ["/usr/bin/setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]
        argv += ["--bounding-set=-all", "--inh-caps=-all", "--no-new-privs"]
    argv += prlimit_prefix(limits)
    return argv + ["/work/.prog", *args]


def prlimit_prefix(limits: Limits) -> list[str]:
    argv = ["/usr/bin/prlimit", "--core=0"]
    if limits.cpu_s is not None:
        argv.append(f"--cpu={limits.cpu_s}")
    if limits.address_space_mb is not None:
        argv.append(f"--as={limits.address_space_mb << 20}")
    if limits.nproc is not None:
        argv.append(f"--nproc={limits.nproc}")
    if limits.fsize_mb is not None:
        argv.append(f"--fsize={limits.fsize_mb << 20}")
    if limits.nofile is not None:
        argv.append(f"--nofile={limits.nofile}")
    return argv + ["--"]


def rlimit_preexec(limits: Limits) -> Callable[[], None]:
    """preexec_fn applying `limits` in the child (the unsandboxed path)."""

    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if limits.cpu_s is not None:
            resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_s, limits.cpu_s + 1))
        if limits.address_space_mb is not None:
            n = limits.address_space_mb << 20
            resource.setrlimit(resource.RLIMIT_AS, (n, n))
        if limits.nproc is not None and os.getuid() != 0:
            resource.setrlimit(resource.RLIMIT_NPROC, (limits.nproc, limits.nproc))
        if limits.fsize_mb is not None:
            n = limits.fsize_mb << 20
            resource.setrlimit(resource.RLIMIT_FSIZE, (n, n))
        if limits.nofile is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (limits.nofile, limits.nofile))

    return apply
