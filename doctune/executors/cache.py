"""SQLite verdict cache: re-validating a block that was already judged costs one lookup, no compile.

Keyed by a hash of everything that can change a verdict: code, sibling files, root file name, requested mode,
expectation, build options and the executor's own key parts (name, Zig version, backend flags, limits).
Only definite verdicts are stored; `infra_error` never is (it says nothing about the code).
Async callers use `aget_many` / `aput_many`: SQLite runs in a worker thread (one hop per batch of keys), never in
the event loop (`langgraph dev` refuses blocking calls there).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from doctune.core.schemas import Verdict, sha256

_SCHEMA = """
CREATE TABLE IF NOT EXISTS verdicts (
    key TEXT PRIMARY KEY,
    verdict TEXT NOT NULL,
    created REAL NOT NULL
)
"""


def cache_key(parts: dict[str, Any]) -> str:
    return sha256(json.dumps(parts, sort_keys=True, default=str), n=64)


class VerdictCache:
    """A small thread-safe key → Verdict store (WAL mode, so several processes can share the file)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path).expanduser()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, timeout=30)
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(_SCHEMA)
            self._db.commit()
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> Verdict | None:
        return self.get_many([key])[0]

    def get_many(self, keys: Sequence[str]) -> list[Verdict | None]:
        """The stored verdict of each key (None where there is none), marked `cached`."""
        with self._lock:
            rows = [self._db.execute("SELECT verdict FROM verdicts WHERE key = ?", (k,)).fetchone() for k in keys]
            found = sum(1 for r in rows if r is not None)
            self.hits += found
            self.misses += len(rows) - found
        return [
            None if r is None else Verdict.model_validate_json(r[0]).model_copy(update={"cached": True})
            for r in rows
        ]

    def put(self, key: str, verdict: Verdict) -> None:
        self.put_many([(key, verdict)])

    def put_many(self, items: Sequence[tuple[str, Verdict]]) -> None:
        """Store definite verdicts in one transaction (`infra_error` ones are skipped)."""
        now = time.time()
        rows = [
            (key, v.model_copy(update={"cached": False}).model_dump_json(), now)
            for key, v in items
            if v.verdict != "infra_error"
        ]
        if not rows:
            return
        with self._lock:
            self._db.executemany("INSERT OR REPLACE INTO verdicts (key, verdict, created) VALUES (?, ?, ?)", rows)
            self._db.commit()

    async def aget_many(self, keys: Sequence[str]) -> list[Verdict | None]:
        """`get_many` in a worker thread."""
        return await asyncio.to_thread(self.get_many, list(keys))

    async def aput_many(self, items: Sequence[tuple[str, Verdict]]) -> None:
        """`put_many` in a worker thread."""
        if items:
            await asyncio.to_thread(self.put_many, list(items))

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM verdicts").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()

    async def aclose(self) -> None:
        """`close` in a worker thread (closing may checkpoint the WAL)."""
        await asyncio.to_thread(self.close)
