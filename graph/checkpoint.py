"""Persistence of a run: LangGraph's checkpointer and store on one database.

SQLite at <out>/state.sqlite by default (checkpoints and the store's tables in one file, on one connection);
Postgres when `checkpoint.url` is a Postgres URL (AsyncPostgresSaver and AsyncPostgresStore on that database), so
a run's checkpoints, data and record live wholly in the database and any machine with the URL can resume it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from doctune.core.errors import ConfigError

PG_MISSING = ("checkpoint.url is a Postgres URL but the Postgres saver is missing: pip install 'doctune[postgres]' "
              "(in a checkout: pip install '.[postgres]', or `make setup-dev`)")


def is_postgres(url: str | None) -> bool:
    return bool(url) and str(url).startswith(("postgres://", "postgresql://"))


@asynccontextmanager
async def open_checkpointer(url: str | None, out_dir: Path) -> AsyncIterator[Any]:
    """Yield an async checkpointer; the caller keeps it open for the whole run."""
    async with open_persistence(url, out_dir) as (saver, _store):
        yield saver


@asynccontextmanager
async def open_persistence(url: str | None, out_dir: Path) -> AsyncIterator[tuple[Any, Any]]:
    """Yield (checkpointer, store) on the run's database; the caller keeps them open for the whole run."""
    if is_postgres(url):
        async with _open_postgres(str(url)) as pair:
            yield pair
        return
    if url and not url.startswith("sqlite:"):
        raise ConfigError(f"checkpoint.url must be postgresql://... or sqlite:PATH, not {url.split(':')[0]}:...")
    async with _open_sqlite(Path(url.removeprefix("sqlite:")) if url else out_dir / "state.sqlite") as pair:
        yield pair


@asynccontextmanager
async def _open_postgres(url: str) -> AsyncIterator[tuple[Any, Any]]:
    try:
        from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
        from langgraph.store.postgres.aio import AsyncPostgresStore
    except ImportError:
        raise ConfigError(PG_MISSING) from None
    async with AsyncPostgresSaver.from_conn_string(url) as saver, \
            AsyncPostgresStore.from_conn_string(url) as store:
        try:
            await _setup_serialized(saver, store)
            yield saver, store
        finally:  # after any write still in flight (see _close_sqlite), roll back what a crashed step left
            _stop_batching(store)
            await await_fully(_rollback_pg(saver.conn, saver.lock))


@asynccontextmanager
async def _open_sqlite(path: Path) -> AsyncIterator[tuple[Any, Any]]:
    import aiosqlite
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
    from langgraph.store.sqlite.aio import AsyncSqliteStore

    await asyncio.to_thread(path.parent.mkdir, parents=True, exist_ok=True)
    conn = await aiosqlite.connect(str(path))
    saver: AsyncSqliteSaver | None = None
    store: AsyncSqliteStore | None = None
    try:
        # Wait for a writer instead of failing after sqlite3's 5 s default: `doctune status` or a retry may hold
        # the write lock for a moment under load.
        await conn.execute("PRAGMA busy_timeout = 60000")
        # The saver runs in WAL mode; with synchronous=NORMAL a commit no longer waits for an fsync. A killed
        # process (kill -9, OOM) loses nothing (the WAL is in the OS page cache); only a power cut can drop the
        # last steps, and those are simply re-run on resume.
        await conn.execute("PRAGMA synchronous = NORMAL")
        saver = AsyncSqliteSaver(conn)
        await saver.setup()
        # The store shares the saver's connection and lock: one writer, so a store transaction can never meet a
        # checkpoint committed on another connection between its read and its write (SQLITE_BUSY_SNAPSHOT).
        store = AsyncSqliteStore(conn)
        store.lock = saver.lock
        await store.setup()
        # The store expects an autocommit connection (it issues BEGIN/COMMIT itself); the saver's is not, so
        # the implicit transaction the store's migrations opened is committed here.
        await conn.commit()
        yield saver, store
    finally:
        _stop_batching(store)
        await await_fully(_close_sqlite(conn, saver.lock if saver is not None else None))


def _stop_batching(store: Any) -> None:
    """End the store's background batching task (it would otherwise outlive the connection)."""
    task = getattr(store, "_task", None)
    if task is not None:
        task.cancel()


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


async def await_fully(coro: Any) -> None:
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


async def _setup_serialized(saver: Any, store: Any = None, wait_s: float = 120.0) -> None:
    """Run the saver's and the store's migrations under a Postgres advisory lock: two processes opening a fresh
    database at once (a run and `doctune status`, or several server workers) would otherwise both CREATE the
    tables and one fail.

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
        if store is not None:
            await store.setup()
    finally:
        await saver.conn.execute("SELECT pg_advisory_unlock(%s)", (_SETUP_LOCK,))


def _advisory_key(run_id: str) -> int:
    """The run's key for Postgres advisory locks (a signed 64-bit int from the run id)."""
    import hashlib

    return int.from_bytes(hashlib.sha256(f"doctune-run:{run_id}".encode()).digest()[:8], "big", signed=True)


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError:
        raise ConfigError(PG_MISSING) from None
    return psycopg


@asynccontextmanager
async def hold_run(url: str | None, run_id: str) -> AsyncIterator[bool]:
    """On Postgres, try to hold the run for this process (a session advisory lock on its own connection, released
    when the connection closes, so also when the process dies); yield whether it is held. Two directories that
    share only the URL cannot drive one run at once. The connection names this process (`run_holder`) and keeps
    TCP keepalives, so an idle connection is not dropped by the network. Elsewhere (SQLite lives in the run
    directory, whose lock covers it) yield True."""
    if not is_postgres(url):
        yield True
        return
    import os
    import socket

    name = f"doctune pid {os.getpid()} on {socket.gethostname()}"[:63]
    conn = await _psycopg().AsyncConnection.connect(str(url), autocommit=True, application_name=name,
                                                    keepalives=1, keepalives_idle=30, keepalives_interval=10,
                                                    keepalives_count=3)
    async with conn:
        cur = await conn.execute("SELECT pg_try_advisory_lock(%s)", (_advisory_key(run_id),))
        row = await cur.fetchone()
        yield bool(row and row[0])  # the lock ends with the connection


async def run_holder(url: str | None, run_id: str) -> str | None:
    """Who holds the run on Postgres now ("doctune pid N on HOST", or "another session" where the server hides it),
    None when nobody does or on SQLite (the run directory's lock says). Read from `pg_locks`, never by taking the
    lock: a status poll must not make a starting run find its run held."""
    if not is_postgres(url):
        return None
    key = _advisory_key(run_id) & 0xFFFF_FFFF_FFFF_FFFF  # pg_locks shows a bigint key as two oids
    async with await _psycopg().AsyncConnection.connect(str(url), autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT coalesce(a.application_name, '') FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid"
            " WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 AND l.classid = %s::oid"
            " AND l.objid = %s::oid AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            " LIMIT 1",
            (key >> 32, key & 0xFFFF_FFFF))
        row = await cur.fetchone()
        return None if row is None else (row[0] or "another session")


async def run_in_use(url: str | None, run_id: str) -> bool:
    """Does some process hold the run on Postgres now? (see `run_holder`)"""
    return await run_holder(url, run_id) is not None
