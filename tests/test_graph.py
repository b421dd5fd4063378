"""The graph end to end with the real Zig compiler, offline (doc-example generator), and resume behaviour."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import pytest

from doctune.agents.generator import DocExampleGenerator, GenerationResult
from doctune.core.schemas import Pair, Section, extract_zig_blocks
from doctune.core.settings import load_settings
from doctune.graph.context import Context
from doctune.graph.driver import run_pipeline

pytestmark = pytest.mark.zig


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One verdict cache for the module: the first run compiles, later runs of the same code hit the cache."""
    return tmp_path_factory.mktemp("verdicts")


def _settings(cache: Path, **kw):
    return load_settings(validator={"cache_path": str(cache / "verdicts.sqlite")}, **kw)


@pytest.fixture(scope="module")
def sample_run(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path):
    out = tmp_path_factory.mktemp("sample") / "out"
    s = asyncio.run(run_pipeline([str(_sample())], out, _settings(cache_dir)))
    return s, out


def _sample() -> Path:
    from doctune.core.corpus import path as corpus_path

    return corpus_path("sample")


def test_sample_doc_end_to_end(sample_run) -> None:
    s, out = sample_run
    assert s.status == "completed" and s.sections > 3
    assert s.accepted >= 8, s
    rows = [json.loads(line) for line in (out / "pairs.jsonl").read_text().splitlines()]
    assert len(rows) == s.accepted
    for r in rows:
        assert [m["role"] for m in r["messages"]] == ["user", "assistant"]
        assert r["verdict"]["verdict"] in ("ok", "compile_error", "runtime_error")
        assert r["evidence"] in ("ran", "tested", "compiled")
    # The HF dataset: split by section, nothing on both sides.
    from datasets import load_from_disk

    dd = load_from_disk(str(out / "dataset"))
    assert set(dd) == {"train", "test"}
    assert len(dd["train"]) + len(dd["test"]) == s.accepted
    assert not set(dd["train"]["section_id"]) & set(dd["test"]["section_id"])
    card = (out / "dataset" / "README.md").read_text()
    assert f"accepted pairs: {s.accepted}" in card and "0.14.0" in card


def test_accepted_code_really_runs(sample_run, tmp_path: Path) -> None:
    """Copy accepted code out and run it with plain `python -m ziglang` (no doctune in the loop)."""
    _, out = sample_run
    rows = [json.loads(line) for line in (out / "pairs.jsonl").read_text().splitlines()]
    ok = [r for r in rows if r["verdict"]["verdict"] == "ok" and r["verdict"]["mode"] in ("run", "test")][:3]
    assert ok
    for r in ok:
        code = extract_zig_blocks(r["messages"][1]["content"])[0]
        f = tmp_path / f"{r['id']}.zig"
        f.write_text(code)
        cmd = [sys.executable, "-m", "ziglang", r["verdict"]["mode"], str(f),
               "--cache-dir", str(tmp_path / "zc"), "--global-cache-dir", str(tmp_path / "zgc")]
        res = subprocess.run(cmd, capture_output=True, timeout=300)
        assert res.returncode == 0, res.stderr.decode(errors="replace")


@pytest.mark.slow  # ~90 s of cold compiles on 2 cores
def test_langref_pairs_carry_evidence_levels(tmp_path: Path, cache_dir: Path, langref_path: Path) -> None:
    """The offline generator on the language reference's first sections: examples with `test` blocks are
    `tested`, programs `ran` (Hello World with its stated stdout), fragments and expected compile errors
    `compiled`."""
    out = tmp_path / "out"
    s = asyncio.run(run_pipeline([str(langref_path)], out, _settings(cache_dir), max_sections=24))
    rows = [json.loads(line) for line in (out / "pairs.jsonl").read_text().splitlines()]
    assert s.accepted == len(rows) >= 10
    by_mode = {(r["verdict"]["mode"], r["verdict"]["compiled_only"]) for r in rows if r["evidence"] == "compiled"}
    assert {r["evidence"] for r in rows} == {"tested", "ran", "compiled"}, rows
    assert all(r["evidence"] == "tested" for r in rows if r["verdict"]["mode"] == "test"
               and r["heading_path"] == "Zig Test")
    hello = next(r for r in rows if r["heading_path"] == "Hello World" and r["expect_stdout"])
    assert hello["evidence"] == "ran" and hello["expect_stdout"] == "Hello, world!\n"
    assert ("obj", False) in by_mode or ("obj", True) in by_mode


def test_pairs_are_versioned_in_the_runs_store_and_state_holds_ids(sample_run) -> None:
    """The run's data is in LangGraph's store inside state.sqlite, append-only: each kept pair's version as
    generated (no verdict) is still there beside the validated one the final state names; the checkpoint itself
    holds ids and version numbers, not pair bodies."""
    from doctune.graph.checkpoint import open_persistence
    from doctune.graph.graph import build_graph
    from doctune.graph.store import Store

    s, out = sample_run

    async def read() -> tuple[dict, list[Pair], list[Pair]]:
        async with open_persistence(None, out) as (saver, base):
            state = (await build_graph(checkpointer=saver).aget_state({"configurable": {"thread_id": s.run_id}}))
            store, kept = Store(base, s.run_id), state.values["kept"]
            current = await store.get_pairs(kept, state.values["versions"])
            first = await store.get_pairs(kept, dict.fromkeys(kept, 0))
            return state.values, current, first

    values, current, first = asyncio.run(read())
    assert not (out / "store").exists()
    assert all(values["versions"][p.id] >= 1 for p in current)
    assert all(p.verdict is not None and p.evidence != "none" for p in current)
    assert all(p.verdict is None and p.evidence == "none" for p in first)  # as generate wrote it
    assert [p.response for p in first] == [p.response for p in current]
    assert current[0].response not in json.dumps(values)  # the state names pairs, it does not hold them


def test_broken_example_is_rejected_with_compiler_message(tmp_path: Path, cache_dir: Path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text(
        "# Broken\n\nThis example claims to work but has a type error, which the validator must catch. "
        "A string literal is not an integer, so assigning one to a `u8` cannot type-check.\n\n"
        '```zig\ntest "bad" {\n    const x: u8 = "not a number";\n    _ = x;\n}\n```\n\n'
        "Expected: `zig test` passes.\n"
    )
    out = tmp_path / "out"
    s = asyncio.run(run_pipeline([str(doc)], out, _settings(cache_dir)))
    assert s.accepted == 0 and s.rejected == 1
    rej = [json.loads(line) for line in (out / "rejected.jsonl").read_text().splitlines()]
    assert rej[0]["reason"] == "compile_error"
    assert "error:" in rej[0]["verdict"]["stderr"]


class CountingGenerator(DocExampleGenerator):
    """The real offline generator, counting calls per section; optionally failing once on one section."""

    def __init__(self, settings, fail_on: str | None = None):
        super().__init__(settings)
        self.calls: Counter[str] = Counter()
        self.fail_on = fail_on

    async def generate(self, section: Section) -> GenerationResult:
        self.calls[section.id] += 1
        if section.id == self.fail_on:
            self.fail_on = None
            raise RuntimeError("simulated crash in the middle of the run")
        return await super().generate(section)


def _nothing_left_behind(out: Path, url: str | None, threads_before: set[int]) -> None:
    """After a run ends (even by a crash): no thread of it alive, the run lock free, the database writable."""
    import sqlite3

    from doctune.graph.runlock import lock_held

    # New daemon threads may stay (tqdm's monitor, started once per process); aiosqlite's connection thread is
    # not a daemon and must be gone.
    left = [t for t in threading.enumerate() if t.ident not in threads_before and not t.daemon]
    assert not left, left
    assert not lock_held(out)
    if url is None:
        db = sqlite3.connect(out / "state.sqlite", timeout=0)  # no waiting: a held write lock fails at once
        try:
            db.execute("BEGIN IMMEDIATE")
            db.rollback()
        finally:
            db.close()
    else:
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:
            others = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                  "AND pid <> pg_backend_pid()").fetchone()[0]
        assert others == 0, f"{others} connection(s) of the crashed run still open"


def test_resume_does_not_regenerate_finished_sections(tmp_path: Path, cache_dir: Path,
                                                      checkpoint_url: str | None) -> None:
    """A script runs, the run crashes (a generator bug), the script runs again in the same process: only the
    unfinished sections are generated again, and the crashed run left no connection, lock or thread behind
    (once a crashed run's SQLite connection kept the write lock: `database is locked` on the re-run)."""
    from doctune.graph.lifecycle import arun

    out = tmp_path / "out"
    settings = _settings(cache_dir, generator={"concurrency": 1, "sections_in_flight": 1},
                         checkpoint={"url": checkpoint_url})
    gen = CountingGenerator(settings)  # one branch at a time: a deterministic crash point
    from doctune.agents.splitter import split_paths

    ids = [s.id for s in split_paths([str(_sample())], settings.split)]
    gen.fail_on = ids[len(ids) // 2]
    threads = {t.ident for t in threading.enumerate()}
    ctx = Context(settings=settings, out_dir=out, generator=gen)
    with pytest.raises(RuntimeError, match="simulated crash"):
        asyncio.run(arun([str(_sample())], out, settings, context=ctx))
    _nothing_left_behind(out, checkpoint_url, threads)
    first = dict(gen.calls)
    ctx2 = Context(settings=settings, out_dir=out, generator=gen)
    s = asyncio.run(arun([str(_sample())], out, settings, context=ctx2))
    assert s.status == "resumed"
    assert all(n == 1 for sid, n in gen.calls.items() if sid != ids[len(ids) // 2]), gen.calls
    assert gen.calls[ids[len(ids) // 2]] == 2
    assert len(first) >= 2  # some sections had finished before the crash
    # And a third run of the same command does nothing at all.
    s3 = asyncio.run(arun([str(_sample())], out, settings, context=ctx2))
    assert s3.status == "already_complete" and s3.accepted == s.accepted
    assert gen.calls[ids[0]] == 1
    assert [a["command"] for a in json.loads((out / "run.json").read_text())["attempts"]] == ["run", "resume", "resume"]
    _nothing_left_behind(out, checkpoint_url, threads)


def test_graph_schemas_and_public_api() -> None:
    """What a script and the server read: the input/output JSON schemas (3.11: typing_extensions.TypedDict),
    and the lifecycle exported from the package."""
    import doctune
    from doctune.graph.graph import build_graph

    g = build_graph()
    assert set(g.get_input_jsonschema()["properties"]) == {"docs", "max_sections"}
    assert "export" in g.get_output_jsonschema()["properties"]
    assert doctune.Context is Context
    assert {doctune.run, doctune.status, doctune.retry} and doctune.arun.__module__ == "doctune.graph.lifecycle"


def test_script_lifecycle_as_in_the_readme(tmp_path: Path, cache_dir: Path) -> None:
    """README "From Python": doctune.run / status / retry from a plain (sync) script."""
    import doctune

    from tests.reliability.harness import zig_doc

    doc = tmp_path / "guide.md"
    doc.write_text(zig_doc(2), encoding="utf-8")
    settings = doctune.load_settings(generator={"kind": "doc-examples"},
                                     validator={"cache_path": str(cache_dir / "verdicts.sqlite")})
    summary = doctune.run([str(doc)], tmp_path / "out", settings, max_sections=5)
    assert summary.accepted == 2 and Path(summary.export["dataset_path"]).is_dir()
    st = doctune.status(tmp_path / "out")
    assert (st.state, st.done, st.failed) == ("completed", 2, 0)
    assert doctune.retry(tmp_path / "out") is None  # nothing failed: nothing to retry
    with pytest.raises(doctune.core.errors.InputError, match="max_sections"):
        doctune.run([str(doc)], tmp_path / "other", settings, max_sections=-3)
