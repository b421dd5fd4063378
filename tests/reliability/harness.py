"""Helpers shared by the durable-run tests and the reliability suite: docs, the CLI as a subprocess, killing
it at a chosen point, throw-away Postgres databases, and comparing datasets.

Everything runs the real `doctune` command in a child process (so SIGKILL is a real crash) against real SQLite /
PostgreSQL and the real Zig compiler; only model endpoints are local fakes.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

PG_ENV = "DOCTUNE_TEST_PG_URL"
_SCRUB = ("OPENAI_", "DOCTUNE_", "LANGSMITH_", "LANGCHAIN_")


def doctune_cmd() -> list[str]:
    exe = Path(sys.executable).with_name("doctune")
    return [str(exe)] if exe.is_file() else [sys.executable, "-c", "from doctune.app.cli import main; main()"]


def clean_env(tmp: Path, **extra: str) -> dict[str, str]:
    """The environment without any doctune/LLM/LangSmith settings of the caller, plus a private verdict cache."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUB)}
    env.update(DOCTUNE_VALIDATOR__CACHE_PATH=str(tmp / "verdicts.sqlite"), LANGSMITH_TRACING="false",
               NO_COLOR="1", COLUMNS="200")
    env.update(extra)
    return env


def zig_doc(n: int, title: str = "Durable") -> str:
    """A doc with `n` sections, each with a distinct runnable program (distinct code = distinct verdicts)."""
    parts = [f"# {title}\n\nA small generated document for durable-run tests. Each section below holds one "
             "complete Zig program that prints a number, so each one is compiled and executed by the validator.\n"]
    for i in range(n):
        parts.append(
            f"## Example {i}\n\nThis section shows a program that prints the number {i * 7 + 1} with "
            "std.debug.print, which writes formatted text to standard error in every Zig program.\n\n"
            f'```zig\nconst std = @import("std");\n\npub fn main() void {{\n'
            f'    std.debug.print("{{d}}\\n", .{{{i * 7 + 1}}});\n}}\n```\n'
        )
    return "\n".join(parts)


def run_cli(args: list[str], env: dict[str, str], timeout: float = 600, cwd: Path | None = None
            ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*doctune_cmd(), *args], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def start_cli(args: list[str], env: dict[str, str], log: Path, cwd: Path | None = None
              ) -> subprocess.Popen[bytes]:
    f = log.open("ab")
    return subprocess.Popen([*doctune_cmd(), *args], env=env, cwd=cwd, stdout=f, stderr=subprocess.STDOUT,
                            start_new_session=True)


def sigkill(proc: subprocess.Popen[bytes]) -> None:
    """kill -9 the run and everything it started (compiler, sandboxed programs)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)


def kill_when(proc: subprocess.Popen[bytes], ready: Callable[[], bool], timeout: float = 300,
              poll: float = 0.1) -> bool:
    """SIGKILL `proc` as soon as `ready()` is true; False if the process ended first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            ok = ready()
        except Exception:  # the checkpoint may be mid-creation: look again
            ok = False
        if ok:
            sigkill(proc)
            return True
        time.sleep(poll)
    sigkill(proc)
    raise AssertionError(f"kill point not reached in {timeout} s")


def status(out: Path, checkpoint_url: str | None = None) -> dict[str, Any]:
    """`doctune status --json`, in-process (fast enough to poll a running run)."""
    from doctune.graph.lifecycle import astatus

    return asyncio.run(astatus(out, checkpoint_url)).to_json()


def dataset_signature(out: Path) -> list[tuple[str, str, str, str]]:
    """What must be identical between a crashed+resumed run and an uninterrupted one (sorted, ids included)."""
    rows = [json.loads(line) for line in (out / "pairs.jsonl").read_text(encoding="utf-8").splitlines()]
    return sorted((r["id"], r["messages"][0]["content"], r["messages"][1]["content"], r["verdict"]["verdict"])
                  for r in rows)


def pair_ids(out: Path) -> list[str]:
    return [json.loads(line)["id"] for line in (out / "pairs.jsonl").read_text(encoding="utf-8").splitlines()]


@contextmanager
def pg_database() -> Iterator[str]:
    """A fresh database on the throw-away server at $DOCTUNE_TEST_PG_URL (run ids repeat across tests, so each
    test gets its own), dropped afterwards."""
    import psycopg

    base = os.environ[PG_ENV]
    name = "doctune_" + uuid.uuid4().hex[:12]
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    parts = urlsplit(base)
    try:
        yield urlunsplit(parts._replace(path="/" + name))
    finally:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def warm_up() -> None:
    """Import what status polling needs before a run starts (the first import takes seconds on a busy box)."""
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver  # noqa: F401

    import doctune.graph.graph  # noqa: F401
    import doctune.graph.lifecycle  # noqa: F401


def status_obj(out: Path, checkpoint_url: str | None = None) -> Any:
    """The RunStatus itself (done/pending ids included), in-process."""
    from doctune.graph.lifecycle import astatus

    return asyncio.run(astatus(out, checkpoint_url))


def done_ids(st: Any) -> set[str]:
    failed = {f["section_id"] for f in st.failures}
    return set(st.section_ids) - set(st.pending_ids) - failed


def read_store(out: Path, read: Callable[[Any], Any]) -> Any:
    """`await read(store)` on the run's store in `out` (the run's database: run.json names its run id and, for
    Postgres, its URL), in-process."""
    from doctune.graph.checkpoint import open_persistence
    from doctune.graph.store import Store

    info = json.loads((out / "run.json").read_text(encoding="utf-8"))

    async def go() -> Any:
        async with open_persistence(info["settings"]["checkpoint"]["url"], out) as (_, base):
            return await read(Store(base, info["run_id"]))

    return asyncio.run(go())


def stored_sections(out: Path) -> dict[str, Any]:
    """Section id -> Section, as the run stored them."""
    return {s.id: s for s in read_store(out, lambda store: store.all_sections())}


def stored_pairs(out: Path) -> dict[str, Any]:
    """Pair id -> the pair at its newest stored version."""
    return read_store(out, lambda store: store.latest_pairs())


def headings(out: Path, section_ids: set[str]) -> set[str]:
    """Section ids -> the heading paths the generator prompt names (what the fake model matches on)."""
    sections = stored_sections(out)
    return {sections[s].heading_path for s in section_ids}


def section_id_of(out: Path, heading: str) -> str:
    """The id of the stored section whose heading path is `heading`."""
    for s in stored_sections(out).values():
        if s.heading_path == heading:
            return s.id
    raise AssertionError(f"no stored section {heading!r} in {out}")


def good_pair_responder(body: dict[str, Any]) -> dict[str, Any] | str:
    """A model that answers every generation prompt with ONE correct, section-specific Zig program."""
    from tests.fakes.openai_server import messages_text
    from tests.fakes.zig_answers import GOOD, section_of, value_of, zig

    if "instruction/response pairs" not in messages_text(body, "user"):
        return "ok"
    h = section_of(body)
    v = value_of(h)
    return {"pairs": [{"instruction": f"Write a Zig program about {h} that prints {v}.",
                       "response": zig(GOOD.replace("VALUE", str(v))), "kind": "code"}]}


def calls_by_section(srv: Any) -> dict[str, int]:
    """Generation requests the fake model received, per section heading."""
    from collections import Counter

    from tests.fakes.zig_answers import section_of

    return dict(Counter(section_of(r.body) for r in srv.chat_requests() if r.body))


def llm_env(tmp: Path, base_url: str, api_key: str = "sk-test-key", **extra: str) -> dict[str, str]:
    return clean_env(tmp, OPENAI_BASE_URL=base_url, OPENAI_API_KEY=api_key, DOCTUNE_GENERATOR__KIND="llm",
                     DOCTUNE_LLM__MODEL="fake-model", DOCTUNE_LLM__MAX_RETRIES="1", **extra)


def no_traceback(text: str) -> bool:
    return "Traceback (most recent call last)" not in text


def rejected_signature(out: Path) -> list[tuple[str, str]]:
    rows = [json.loads(line) for line in (out / "rejected.jsonl").read_text(encoding="utf-8").splitlines()]
    return sorted((r.get("id") or r.get("section_id") or "", r["reason"]) for r in rows)
