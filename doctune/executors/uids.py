"""Sandbox uids: one per concurrent sandbox, across every doctune process on the host.

Linux counts RLIMIT_NPROC per uid, so two sandboxes sharing a uid share one process budget: a fork bomb in one
would make the other's `fork`/`clone` fail, and the other block's verdict would depend on its neighbour. As root,
each run therefore gets a uid of its own. A process *claims* a uid before its first use with an exclusive `flock`
on a file named after it (in a root-only directory), and holds the claim until it exits (the kernel drops the lock
with the process, even after SIGKILL); between runs the uid waits in the process's free list. Two doctune runs,
two pytest workers or a run and `doctune eval` on one machine never hand out the same uid at once.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
import threading
from pathlib import Path

UID_BASE = 200000
UID_SPAN = 1 << 16  # uids UID_BASE .. UID_BASE + UID_SPAN - 1: above any login or system account


def lock_dir() -> Path | None:
    """A directory for claim files that only this euid can write, or None (then claims are not coordinated)."""
    euid = os.geteuid()
    for d in (Path("/run/doctune/sandbox-uids"), Path(tempfile.gettempdir()) / f"doctune-sandbox-uids-{euid}"):
        try:
            d.mkdir(mode=0o700, parents=True, exist_ok=True)
            st = os.lstat(d)
        except OSError:
            continue
        if d.is_dir() and not d.is_symlink() and st.st_uid == euid and not st.st_mode & 0o022:
            return d
    return None


class UidPool:
    """Uids this process holds for its sandboxes. `take` is cheap when a held uid is free (no I/O, safe in an event
    loop); `claim` makes the process hold one more (file I/O, done outside the pool's lock: call it off the loop).
    Every process scans from the same start, so the claim files on a host stay as many as the most sandboxes that
    ever ran at once."""

    def __init__(self, base: int = UID_BASE, span: int = UID_SPAN, directory: Path | None = None) -> None:
        self.base, self.span = base, span
        self._dir = directory
        self._dir_known = directory is not None
        self._next = 0
        self._free: list[int] = []
        self._fds: dict[int, int] = {}  # uid -> the open, locked claim file
        self._trying: set[int] = set()  # uids a `claim` of this process is locking now
        self._lock = threading.Lock()

    def take(self) -> int | None:
        """A held uid that no sandbox of this process is using, or None (then `claim` one)."""
        with self._lock:
            return self._free.pop() if self._free else None

    def give(self, uid: int) -> None:
        """`uid`'s sandbox has ended: the uid is free for this process's next one."""
        with self._lock:
            if uid in self._fds and uid not in self._free:
                self._free.append(uid)

    def claim(self) -> int | None:
        """Hold one more uid (that no other process holds) and hand it out; None when all are taken."""
        if not self._dir_known:
            self._dir, self._dir_known = lock_dir(), True
        for _ in range(self.span):
            with self._lock:
                uid = self.base + self._next
                self._next = (self._next + 1) % self.span
                if uid in self._fds or uid in self._trying:
                    continue
                self._trying.add(uid)
            fd = self._lock_file(uid)
            with self._lock:
                self._trying.discard(uid)
                if fd is not None:
                    self._fds[uid] = fd
                    return uid
        return None

    def held(self) -> frozenset[int]:
        """Every uid this process holds (in use or free)."""
        with self._lock:
            return frozenset(self._fds)

    def _lock_file(self, uid: int) -> int | None:
        if self._dir is None:
            return -1  # nowhere to coordinate: this process's own uids still differ from each other
        fd = os.open(self._dir / str(uid), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # another process holds it
            os.close(fd)
            return None
        return fd

    def _forget(self) -> None:
        """In a forked child: the parent's claims are the parent's (the child shares their locks, not their use)."""
        self._lock = threading.Lock()
        for fd in self._fds.values():
            if fd >= 0:
                os.close(fd)
        self._free, self._fds, self._trying, self._next = [], {}, set(), 0


POOL = UidPool()  # every executor of this process draws from it
os.register_at_fork(after_in_child=POOL._forget)
