"""SQLite verdict cache: re-validating a block that was already judged costs one lookup, no compile.

Keyed by a hash of everything that can change a verdict: code, sibling files, root file name, requested mode,
expectation, build options and the executor's own key parts (name, Zig version, backend flags, limits).
Only definite verdicts are stored; `infra_error` never is (it says nothing about the code).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from doctune.schemas import Verdict, sha256

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
        with self._lock:
            row = self._db.execute("SELECT verdict FROM verdicts WHERE key = ?", (key,)).fetchone()
        if row is None:
            self.misses += 1
            return None
        self.hits += 1
        v = Verdict.model_validate_json(row[0])
        return v.model_copy(update={"cached": True})

    def put(self, key: str, verdict: Verdict) -> None:
        if verdict.verdict == "infra_error":
            return
        data = verdict.model_copy(update={"cached": False}).model_dump_json()
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO verdicts (key, verdict, created) VALUES (?, ?, ?)",
                (key, data, time.time()),
            )
            self._db.commit()

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM verdicts").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()
