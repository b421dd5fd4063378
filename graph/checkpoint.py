"""Checkpointers for durable runs: SQLite at <out>/state.sqlite by default, Postgres when a URL is set."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from doctune.core.errors import ConfigError


@asynccontextmanager
async def open_checkpointer(url: str | None, out_dir: Path) -> AsyncIterator[Any]:
    """Yield an async checkpointer; the caller keeps it open for the whole run."""
    if url and url.startswith(("postgres://", "postgresql://")):
        try:
            from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
        except ImportError:
            raise ConfigError(
                "checkpoint.url is a Postgres URL but the Postgres saver is missing: pip install 'doctune[postgres]'"
            ) from None
        async with AsyncPostgresSaver.from_conn_string(url) as saver:
            try:
                await _setup_serialized(saver)
                yield saver
            finally:  # after any write still in flight (see _close_sqlite), roll back what a crashed step left
                await _finish(_rollback_pg(saver.conn, saver.lock))
        return
    if url and not url.startswith("sqlite:"):
        raise ConfigError(f"checkpoint.url must be postgresql://... or sqlite:PATH, not {url.split(':')[0]}:...")
    import aiosqlite
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    path = Path(url.removeprefix("sqlite:")) if url else out_dir / "state.sqlite"
    await asyncio.to_thread(path.parent.mkdir, parents=True, exist_ok=True)
    conn = await aiosqlite.connect(str(path))
    sqlite_saver: AsyncSqliteSaver | None = None
    try:
        # Wait for a writer instead of failing after sqlite3's 5 s default: `doctune status` or a retry may hold
        # the write lock for a moment under load.
        await conn.execute("PRAGMA busy_timeout = 60000")
        # The saver runs in WAL mode; with synchronous=NORMAL a commit no longer waits for an fsync. A killed
        # process (kill -9, OOM) loses nothing (the WAL is in the OS page cache); only a power cut can drop the
        # last steps, and those are simply re-run on resume.
        await conn.execute("PRAGMA synchronous = NORMAL")
        sqlite_saver = AsyncSqliteSaver(conn)
        yield sqlite_saver
    finally:
        await _finish(_close_sqlite(conn, sqlite_saver.lock if sqlite_saver is not None else None))


async def _close_sqlite(conn: Any, lock: asyncio.Lock | None) -> None:
    """Roll back what a crashed or cancelled step left uncommitted, then close (and end aiosqlite's thread).

    When a run fails, LangGraph may still be writing a branch's results (`aput_writes`, cancelled or not) while
    we get here. Under the saver's own lock that write finishes first, and a later one finds the connection
    closed; a write slipping in between our rollback and the close would leave a transaction open on a closed
    ("zombie") connection — its write lock held until garbage collection, and a re-run in the same process
    failing with `database is locked`."""
    async with lock or asyncio.Lock():
        try:
            await conn.rollback()
        finally:
            await conn.close()
    # close() returns when the worker thread has taken its stop signal, a moment before the thread ends: wait for
    # it, so a caller that continues (a script re-running after a crash) starts with no thread of this run left.
    thread = getattr(conn, "_thread", None)
    if thread is not None:
        await asyncio.to_thread(thread.join, 30)


async def _finish(coro: Any) -> None:
    """Await `coro` to the end even if this task is cancelled meanwhile (Ctrl-C during cleanup); the
    cancellation is re-raised afterwards."""
    task = asyncio.ensure_future(coro)
    cancelled = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.cancelled():
                break
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError


async def _rollback_pg(conn: Any, lock: asyncio.Lock) -> None:
    async with lock:
        if not conn.closed:
            await conn.rollback()


_SETUP_LOCK = 0x646F6374  # any fixed 64-bit key: "doct"


async def _setup_serialized(saver: Any, wait_s: float = 120.0) -> None:
    """Run the saver's migrations under a Postgres advisory lock: two processes opening a fresh database at once
    (a run and `doctune status`, or several server workers) would otherwise both CREATE the tables and one fail.

    The lock is polled with pg_try_advisory_lock, never waited on inside a statement: the migrations use
    CREATE INDEX CONCURRENTLY, which waits for every open transaction — a blocked lock request included."""
    import asyncio

    async def try_lock() -> bool:
        cur = await saver.conn.execute("SELECT pg_try_advisory_lock(%s) AS locked", (_SETUP_LOCK,))
        row = await cur.fetchone()
        return bool(row["locked"] if isinstance(row, dict) else row[0])  # the saver's rows are dicts

    deadline = asyncio.get_running_loop().time() + wait_s
    while not await try_lock():
        if asyncio.get_running_loop().time() > deadline:
            raise ConfigError(f"checkpoint database: another process held the setup lock for {wait_s:.0f} s")
        await asyncio.sleep(0.1)
    try:
        await saver.setup()
    finally:
        await saver.conn.execute("SELECT pg_advisory_unlock(%s)", (_SETUP_LOCK,))
