"""Per-sandbox cgroups: total memory (heap, memfd, shm, tmpfs pages) and process count of one compile or run.

Detected at run time: cgroup v2 (`memory.max`, `pids.max`, `memory.events`) when this process's cgroup can
have children with both controllers, else cgroup v1 (`memory.limit_in_bytes`, `pids.max` in their own
hierarchies), else none (the caller falls back to rlimits). Each sandbox gets a fresh cgroup below ours; the
child joins it before it execs (`join`, run as `preexec_fn`), so nothing it allocates escapes the limit.
After the run, `cause()` says which limit ended it (from the kernel's counters, never from program output).
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")


def _own_paths() -> dict[str, str]:
    """controller ('' for v2) → this process's cgroup path, from /proc/self/cgroup."""
    out: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, ctrls, path = line.split(":", 2)
            for c in ctrls.split(",") if ctrls else [""]:
                out[c] = path
    return out


def _writable_child(parent: Path, probe: str) -> bool:
    d = parent / f"doctune-probe-{uuid.uuid4().hex[:8]}"
    try:
        d.mkdir()
    except OSError:
        return False
    try:
        return (d / probe).exists()
    finally:
        with contextlib.suppress(OSError):
            d.rmdir()


@functools.cache
def detect() -> tuple[str, dict[str, Path]] | None:
    """('v2', {'': dir}) or ('v1', {'memory': dir, 'pids': dir}) where children can be made, else None."""
    own = _own_paths()
    if (ROOT / "cgroup.controllers").exists() and "" in own:
        base = ROOT / own[""].lstrip("/")
        with contextlib.suppress(OSError):
            (base / "cgroup.subtree_control").write_text("+memory +pids")
        if _writable_child(base, "memory.max") and _writable_child(base, "pids.max"):
            return "v2", {"": base}
        return None
    dirs = {c: ROOT / c / own.get(c, "/").lstrip("/") for c in ("memory", "pids")}
    if _writable_child(dirs["memory"], "memory.limit_in_bytes") and _writable_child(dirs["pids"], "pids.max"):
        return "v1", dirs
    return None


@dataclass
class Cgroup:
    """One sandbox's cgroup (one directory per controller hierarchy)."""

    version: str
    dirs: list[Path] = field(default_factory=list)

    @staticmethod
    def available() -> bool:
        return detect() is not None

    @classmethod
    def create(cls, memory_bytes: int, pids_max: int) -> Cgroup | None:
        found = detect()
        if found is None:
            return None
        version, parents = found
        name = f"doctune-{uuid.uuid4().hex[:12]}"
        cg = cls(version)
        try:
            for parent in parents.values():
                d = parent / name
                d.mkdir()
                cg.dirs.append(d)
            if version == "v2":
                d = cg.dirs[0]
                (d / "memory.max").write_text(str(memory_bytes))
                with contextlib.suppress(OSError):
                    (d / "memory.swap.max").write_text("0")
                (d / "pids.max").write_text(str(pids_max))
            else:
                mem, pids = cg.dirs
                (mem / "memory.limit_in_bytes").write_text(str(memory_bytes))
                with contextlib.suppress(OSError):
                    (mem / "memory.memsw.limit_in_bytes").write_text(str(memory_bytes))
                (pids / "pids.max").write_text(str(pids_max))
        except OSError:
            cg.destroy()
            return None
        return cg

    def join(self) -> None:
        """Move the calling process into this cgroup (the child, before exec). Async-signal-safe enough:
        only os.open/os.write."""
        pid = str(os.getpid()).encode()
        for d in self.dirs:
            fd = os.open(d / "cgroup.procs", os.O_WRONLY)
            try:
                os.write(fd, pid)
            finally:
                os.close(fd)

    def _read(self, name: str) -> str:
        for d in self.dirs:
            with contextlib.suppress(OSError):
                return (d / name).read_text()
        return ""

    def _counter(self, name: str, key: str) -> int:
        for line in self._read(name).splitlines():
            k, _, v = line.partition(" ")
            if k == key and v.strip().isdigit():
                return int(v)
        return 0

    def cause(self, *, kills_only: bool = False) -> str | None:
        """'memory' or 'pids' when the kernel enforced that limit during the run, else None.

        Memory: an OOM kill in this cgroup, or (unless `kills_only`) any allocation refused at the limit
        (a memfd write or mmap that failed with ENOMEM, which the program may then report as its own error).
        """
        if self.version == "v2":
            hit = self._counter("memory.events", "oom_kill") or (
                not kills_only and self._counter("memory.events", "max")
            )
        else:
            oom_control = self._read("memory.oom_control")
            hit = self._counter("memory.oom_control", "oom_kill")
            failcnt = self._read("memory.failcnt").strip()
            if not kills_only or "oom_kill " not in oom_control:
                hit = hit or (failcnt.isdigit() and int(failcnt) > 0)
        if hit:
            return "memory"
        return "pids" if self._counter("pids.events", "max") else None

    def peak_bytes(self) -> int:
        """Highest memory use seen (v1 max_usage, v2 memory.peak where the kernel has it; 0 if unknown)."""
        raw = self._read("memory.peak" if self.version == "v2" else "memory.max_usage_in_bytes").strip()
        return int(raw) if raw.isdigit() else 0

    def destroy(self) -> None:
        """Kill whatever is left inside (escaped daemons), then remove the directories."""
        for d in self.dirs:
            for _ in range(50):
                try:
                    pids = [int(p) for p in (d / "cgroup.procs").read_text().split()]
                except OSError:
                    break
                if not pids:
                    break
                for p in pids:
                    with contextlib.suppress(OSError):
                        os.kill(p, signal.SIGKILL)
                os.sched_yield()
            for _ in range(100):
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.005)
