"""Checkpointers for durable runs: SQLite at <out>/state.sqlite by default, Postgres when a URL is set."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from doctune.errors import ConfigError


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
            await saver.setup()
            yield saver
        return
    if url and not url.startswith("sqlite:"):
        raise ConfigError(f"checkpoint.url must be postgresql://... or sqlite:PATH, not {url.split(':')[0]}:...")
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    path = Path(url.removeprefix("sqlite:")) if url else out_dir / "state.sqlite"
    path.parent.mkdir(parents=True, exist_ok=True)
    async with AsyncSqliteSaver.from_conn_string(str(path)) as saver:
        yield saver
