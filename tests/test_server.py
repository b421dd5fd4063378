"""The graph served by `langgraph dev` (langgraph.json at the repo root), driven with langgraph-sdk.

A real server process on a free localhost port, offline: the doc-example generator and the real Zig compiler on a
tiny doc written by the test, with the default settings (local executor, SQLite verdict cache on) and without
`--allow-blocking`, so the server's blockbuster check proves no node blocks its event loop. The server brings its
own checkpointer (in-memory + pickle files in its cwd), so this also proves the graph factory works without ours.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

pytest.importorskip("langgraph_api", reason="the LangGraph server is in the [server] extra: pip install 'doctune[server]'")
langgraph_sdk = pytest.importorskip("langgraph_sdk", reason="pip install 'doctune[server]'")

from tests.test_validator import ZIG_CACHE  # noqa: E402 - after the importorskips

pytestmark = pytest.mark.zig

ROOT = Path(__file__).resolve().parents[1]
DOC = """# Tiny Zig

Zig is a general-purpose programming language. This tiny document exists for the server test, and its examples
become instruction/response pairs that the validator compiles and runs with the real Zig compiler.

## Printing

A program prints to standard error with std.debug.print, the classic first program of every Zig guide there is.

```zig
const std = @import("std");

pub fn main() void {
    std.debug.print("served\\n", .{});
}
```

## Testing

A test block checks a condition with std.testing.expect; `zig test` runs every test block in the file it builds.

```zig
const std = @import("std");

test "addition" {
    try std.testing.expect(2 + 2 == 4);
}
```
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _langgraph_exe() -> list[str]:
    exe = Path(sys.executable).with_name("langgraph")
    if exe.is_file():
        return [str(exe)]
    return [sys.executable, "-m", "langgraph_cli.cli"]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    """`langgraph dev` in tmp_path (its .langgraph_api/ state lands there), settings from the environment.

    The default executor (local Zig in bubblewrap) and the verdict cache on: their temp dirs, cgroups and SQLite
    calls run in worker threads, so `langgraph dev` needs no `--allow-blocking` (see README, "Serving and
    scaling")."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "DOCTUNE_", "LANGSMITH_", "LANGCHAIN_"))}
    env.update(
        DOCTUNE_OUT=str(tmp_path / "out"),
        DOCTUNE_GENERATOR__KIND="doc-examples",
        DOCTUNE_VALIDATOR__CACHE_PATH=str(tmp_path / "verdicts.sqlite"),
        DOCTUNE_VALIDATOR__ZIG_CACHE_DIR=str(ZIG_CACHE),  # the tests' shared Zig cache: warm compiles
        LANGSMITH_TRACING="false",
        LANGGRAPH_CLI_NO_ANALYTICS="1",
    )
    log = (tmp_path / "server.log").open("wb")
    # Exactly as the README documents it: no --allow-blocking (nodes, validator, executor and verdict cache do
    # their file and SQLite I/O in worker threads).
    cmd = [*_langgraph_exe(), "dev", "--config", str(ROOT / "langgraph.json"), "--host", "127.0.0.1",
           "--port", str(port), "--no-browser", "--no-reload"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, "langgraph dev exited:\n" + (tmp_path / "server.log").read_text()[-4000:]
            try:
                if httpx.get(f"{url}/ok", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "langgraph dev did not come up in 120 s"
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


async def _run(url: str, doc: Path, context: dict | None = None) -> tuple[list, dict]:
    client = langgraph_sdk.get_client(url=url)
    assistants = await client.assistants.search(graph_id="doctune")
    assert assistants, "the server did not register the 'doctune' graph from langgraph.json"
    schemas = await client.assistants.get_schemas(assistants[0]["assistant_id"])
    assert "docs" in (schemas.get("input_schema") or {}).get("properties", {}), schemas
    assert "export" in (schemas.get("output_schema") or {}).get("properties", {}), schemas
    thread = await client.threads.create()
    events = []
    kwargs = {"context": context} if context is not None else {}
    async for chunk in client.runs.stream(thread["thread_id"], "doctune", input={"docs": [str(doc)]},
                                          stream_mode="updates", stream_subgraphs=True, **kwargs):
        events.append((chunk.event, chunk.data))
    state = await client.threads.get_state(thread["thread_id"])
    history = await client.threads.get_history(thread["thread_id"], limit=50)
    stored = await client.store.search_items(("doctune", thread["thread_id"], "pairs"), limit=100)
    return events, {"state": state, "history": history, "stored": stored["items"]}


def _nodes(events: list) -> set[str]:
    """Node names seen in `updates` events (top level and inside the section subgraphs)."""
    seen = set()
    for event, data in events:
        if event.startswith("updates") and isinstance(data, dict):
            seen.update(data)
    return seen


def test_langgraph_dev_serves_the_graph(server: str, tmp_path: Path) -> None:
    doc = tmp_path / "tiny.md"
    doc.write_text(DOC, encoding="utf-8")
    events, got = asyncio.run(_run(server, doc))
    errors = [d for e, d in events if e == "error"]
    assert not errors, errors
    assert {"split", "section", "curate", "export"} <= _nodes(events)
    assert {"generate", "validate", "finish"} <= _nodes(events), "no node updates streamed from the subgraphs"
    assert any(e.startswith("updates|section") for e, _ in events), "subgraph updates carry their namespace"
    state = got["state"]
    assert state["next"] == []
    values = state["values"]
    assert len(values["section_ids"]) == 3 and len(values["results"]) == 3
    assert values["export"]["pairs"] == 2 and len(values["kept"]) == 2
    # The server's own checkpointer kept the steps (split, fan-out, curate, export).
    assert len(got["history"]) >= 4
    # And its own store the run's data: each kept pair as generated (version 0) and as validated (version 1).
    stored = {it["key"] for it in got["stored"]}
    assert {f"{pid}@{v}" for pid in values["kept"] for v in (0, 1)} <= stored, stored
    out = tmp_path / "out"
    rows = [json.loads(line) for line in (out / "pairs.jsonl").read_text().splitlines()]
    assert sorted(r["evidence"] for r in rows) == ["ran", "tested"]
    assert (out / "dataset" / "README.md").is_file()
    with sqlite3.connect(tmp_path / "verdicts.sqlite") as db:  # the server's validator stored both verdicts
        assert db.execute("SELECT COUNT(*) FROM verdicts").fetchone()[0] == 2

    # A second run with its own output dir, given as the run's JSON context.
    events2, got2 = asyncio.run(_run(server, doc, context={"out_dir": str(tmp_path / "run2")}))
    assert not [d for e, d in events2 if e == "error"]
    assert got2["state"]["values"]["export"]["pairs"] == 2
    assert len((tmp_path / "run2" / "pairs.jsonl").read_text().splitlines()) == 2
    assert "Blocking call" not in (tmp_path / "server.log").read_text(errors="replace")
