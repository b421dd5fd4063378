"""Durable runs on SQLite and PostgreSQL alike: `kill -9` mid-run then resume, and `doctune retry` of a failed
section. Each test runs the real `doctune` CLI in a child process against a local OpenAI-compatible fake (so
LLM calls can be counted per section) and the real checkpointer; Postgres tests get a fresh database on the
throw-away server that scripts/test.sh starts (DOCTUNE_TEST_PG_URL).

Compiles are paid once: an uninterrupted reference run fills a verdict cache that every crashed run starts from,
so a crashed run's timing is the fake model's latency, not the compiler's.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path

import pytest

from doctune.core.errors import InputError
from doctune.core.settings import load_settings
from doctune.graph.checkpoint import hold_run, open_persistence, run_in_use
from doctune.graph.driver import compute_run_id
from doctune.graph.lifecycle import arun, astatus
from doctune.graph.store import put_record

from tests.fakes.openai_server import FakeOpenAI, Fault
from tests.reliability.harness import (
    PG_ENV,
    calls_by_section,
    dataset_signature,
    done_ids,
    good_pair_responder,
    headings,
    kill_when,
    llm_env,
    no_traceback,
    pair_ids,
    pg_database,
    run_cli,
    section_id_of,
    start_cli,
    status_obj,
    warm_up,
    zig_doc,
)

pytestmark = pytest.mark.zig

@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """An uninterrupted run of a 3-section doc: its dataset and its (now warm) verdict cache."""
    tmp = tmp_path_factory.mktemp("reference")
    doc = tmp / "durable.md"
    doc.write_text(zig_doc(3), encoding="utf-8")
    with FakeOpenAI(good_pair_responder) as srv:
        r = run_cli(["run", str(doc), "--out", str(tmp / "out"), "--concurrency", "1"], llm_env(tmp, srv.base_url))
    assert r.returncode == 0, r.stderr[-3000:]
    sig = dataset_signature(tmp / "out")
    assert len(sig) == 3 and all(v == "ok" for *_, v in sig)
    return {"doc": str(doc), "sig": sig, "cache": tmp / "verdicts.sqlite"}


def _env(tmp: Path, reference: dict, base_url: str, url: str | None) -> dict[str, str]:
    shutil.copy(reference["cache"], tmp / "verdicts.sqlite")
    extra = {"DOCTUNE_CHECKPOINT__URL": url} if url else {}
    return llm_env(tmp, base_url, **extra)


def test_sigkill_mid_run_then_resume(checkpoint_url: str | None, reference: dict, tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = ["run", reference["doc"], "--out", str(out), "--concurrency", "1"]
    warm_up()
    with FakeOpenAI(good_pair_responder, latency=2.0) as srv:
        env = _env(tmp_path, reference, srv.base_url, checkpoint_url)
        proc = start_cli(args, env, tmp_path / "run1.log")
        killed = kill_when(proc, lambda: status_obj(out, checkpoint_url).done >= 1, timeout=240)
        assert killed, "the run finished before the kill point:\n" + (tmp_path / "run1.log").read_text()[-2000:]
        st = status_obj(out, checkpoint_url)
        assert st.state == "interrupted" and st.total == 3 and 1 <= st.done < 3, st
        finished = headings(out, done_ids(st))
        before = calls_by_section(srv)

        r = run_cli(args, env)  # the same command again resumes the same thread
        assert r.returncode == 0, r.stderr[-3000:]
        after = calls_by_section(srv)
    assert "resumed" in r.stderr
    assert dataset_signature(out) == reference["sig"]
    assert len(set(pair_ids(out))) == len(pair_ids(out)) == 3
    for h in finished:  # no finished section's LLM call was repeated
        assert after[h] == before[h] == 1, (h, before, after)
    assert status_obj(out, checkpoint_url).state == "completed"


def _refusing_one(broken: str, state: dict):
    """The good model, except that it fails (HTTP 500, past every retry) for section `broken` while
    state['broken']: the endpoint failed, so the section did (an unusable answer would be a rejected pair)."""
    from tests.fakes.zig_answers import section_of

    def responder(body: dict) -> dict | str:
        if state["broken"] and section_of(body) == broken:
            return Fault("500")
        return good_pair_responder(body)

    return responder


def test_retry_reruns_only_the_failed_section(checkpoint_url: str | None, reference: dict, tmp_path: Path) -> None:
    out = tmp_path / "out"
    broken = "Durable > Example 1"
    state = {"broken": True}
    with FakeOpenAI(_refusing_one(broken, state)) as srv:
        env = _env(tmp_path, reference, srv.base_url, checkpoint_url)
        r = run_cli(["run", reference["doc"], "--out", str(out), "--concurrency", "1"], env)
        assert no_traceback(r.stderr), r.stderr[-3000:]
        s = run_cli(["status", str(out), "--json"], env)
        assert s.returncode == 0, s.stderr
        st = json.loads(s.stdout)
        assert set(st) >= {"sections", "pairs", "tokens"}
        assert set(st["sections"]) == {"total", "done", "failed", "pending"}
        assert set(st["pairs"]) == {"accepted", "rejected"} and set(st["tokens"]) == {"input", "output"}
        assert st["sections"]["total"] == 3 and st["sections"]["done"] >= 1, st
        bad_id = section_id_of(out, broken)
        if r.returncode == 0:  # the graph records a failed section and finishes the run
            assert [f["section_id"] for f in st["failed"]] == [bad_id], st
        else:  # the failed section stopped the run: one clear line; it is failed or (unsaved error) pending
            assert "error:" in r.stderr and st["state"] == "interrupted", (r.stderr[-2000:], st)
            assert bad_id in {f["section_id"] for f in st["failed"]} | set(status_obj(out, checkpoint_url).pending_ids)
        done_before = done_ids(status_obj(out, checkpoint_url))
        finished = headings(out, done_before)
        before = calls_by_section(srv)

        bad = run_cli(["retry", str(out), "--section", next(iter(done_before))], env)
        assert bad.returncode != 0 and no_traceback(bad.stderr) and "nothing to retry" in bad.stderr, bad.stderr

        state["broken"] = False
        r = run_cli(["retry", str(out), "--section", bad_id], env)
        assert r.returncode == 0, r.stderr[-3000:]
        after = calls_by_section(srv)
    assert dataset_signature(out) == reference["sig"]
    for h in finished:  # finished sections were not generated again
        assert after[h] == before[h], (h, before, after)
    assert after[broken] > before[broken]
    final = status_obj(out, checkpoint_url)
    assert (final.state, final.done, final.failed) == ("completed", 3, 0)


@pytest.mark.postgres
@pytest.mark.slow  # ~45 s: a real run killed and resumed through the CLI (CI's slow set)
def test_killed_run_resumes_from_another_directory_and_home(reference: dict, tmp_path: Path) -> None:
    """Started in one working directory and HOME against Postgres, SIGKILLed mid-run, the same command resumes
    the run from another directory and HOME that share only the database URL (and the docs): no run.json, no
    state.sqlite there. The dataset equals an uninterrupted run's, finished sections are not generated again,
    and the run's record (settings, attempts) comes from the database."""
    if not os.environ.get(PG_ENV):
        pytest.skip(f"{PG_ENV} is not set: `make test` (scripts/test.sh) starts a throw-away PostgreSQL")
    doc = Path(reference["doc"]).read_text(encoding="utf-8")
    homes = {}
    for name in ("ref", "a", "b", "c"):  # one working directory and HOME each, the same doc at the same relative path
        homes[name] = tmp_path / name
        (homes[name] / "docs").mkdir(parents=True)
        (homes[name] / "docs" / "durable.md").write_text(doc, encoding="utf-8")
    args = ["run", "docs/durable.md", "--out", "out", "--concurrency", "1"]
    warm_up()
    def env(name: str, base_url: str, **extra: str) -> dict[str, str]:
        return {**_env(homes[name], reference, base_url, None), "HOME": str(homes[name]), **extra}

    with FakeOpenAI(good_pair_responder) as srv:  # uninterrupted, on SQLite
        ref = run_cli(args, env("ref", srv.base_url), cwd=homes["ref"])
    assert ref.returncode == 0, ref.stderr[-3000:]
    # A slow model (one request at a time, 5 s each): a wide window to kill the run between two sections.
    with pg_database() as url, FakeOpenAI(good_pair_responder, latency=5.0) as srv:
        a_out = homes["a"] / "out"
        proc = start_cli(args, env("a", srv.base_url, DOCTUNE_CHECKPOINT__URL=url), tmp_path / "a.log",
                         cwd=homes["a"])
        killed = kill_when(proc, lambda: status_obj(a_out, url).done >= 1, timeout=240)
        assert killed, "the run finished before the kill point:\n" + (tmp_path / "a.log").read_text()[-2000:]
        st = status_obj(a_out, url)
        assert st.state == "interrupted" and 1 <= st.done < 3, st
        finished = headings(a_out, done_ids(st))
        before = calls_by_section(srv)

        b_out = homes["b"] / "out"
        r = run_cli(args, env("b", srv.base_url, DOCTUNE_CHECKPOINT__URL=url), cwd=homes["b"])
        assert r.returncode == 0 and no_traceback(r.stderr), r.stderr[-3000:]
        after = calls_by_section(srv)
        # A third directory that never held the run reads it by id; without one, it is told which runs exist.
        c_env, run_id = env("c", srv.base_url, DOCTUNE_CHECKPOINT__URL=url), st.run_id
        nameless = run_cli(["status", str(homes["c"])], c_env, cwd=homes["c"])
        assert nameless.returncode == 2 and no_traceback(nameless.stderr) and run_id in nameless.stderr
        by_id = run_cli(["status", str(homes["c"]), "--run-id", run_id, "--json"], c_env, cwd=homes["c"])
        assert by_id.returncode == 0, by_id.stderr[-3000:]
        seen = json.loads(by_id.stdout)
        assert (seen["state"], seen["sections"]["done"]) == ("completed", 3)
        assert [a["command"] for a in seen["attempts"]] == ["run", "resume"]
        # The finished run, started again from that third directory: nothing is generated, the outputs land there.
        again = run_cli(args, c_env, cwd=homes["c"])
        assert again.returncode == 0 and "already complete" in again.stderr + again.stdout, again.stderr[-3000:]
        sections_only = lambda calls: {h: n for h, n in calls.items() if h != "?"}  # noqa: E731 ("?": the probe)
        assert sections_only(calls_by_section(srv)) == sections_only(after)
        assert dataset_signature(homes["c"] / "out") == dataset_signature(homes["ref"] / "out")
    assert "resumed" in r.stderr
    assert not (b_out / "state.sqlite").exists()
    assert dataset_signature(b_out) == dataset_signature(homes["ref"] / "out")
    assert len(set(pair_ids(b_out))) == len(pair_ids(b_out)) == 3
    for h in finished:  # no finished section's LLM call was repeated
        assert after[h] == before[h] == 1, (h, before, after)
    record = json.loads((b_out / "run.json").read_text(encoding="utf-8"))
    assert [a["command"] for a in record["attempts"]] == ["run", "resume"], record["attempts"]
    assert record["attempts"][0]["outcome"] == "running"  # killed: never recorded its end
    assert record["attempts"][1]["outcome"] == "completed"


@pytest.mark.postgres
def test_a_run_in_use_is_refused_to_a_second_directory(tmp_path: Path) -> None:
    """Two directories that share only the Postgres URL cannot drive one run at once: while one process holds the
    run, `arun` from another directory is refused with one line (nothing recorded). Status from a directory that
    never held a run: by `run_id`, or an error naming the database's runs."""
    if not os.environ.get(PG_ENV):
        pytest.skip(f"{PG_ENV} is not set: `make test` (scripts/test.sh) starts a throw-away PostgreSQL")
    doc = tmp_path / "durable.md"
    doc.write_text(zig_doc(2), encoding="utf-8")
    with pg_database() as url:
        settings = load_settings(checkpoint={"url": url})
        run_id = compute_run_id([str(doc)], None, settings)

        async def go() -> None:
            assert not await run_in_use(url, run_id)
            async with hold_run(url, run_id) as held:  # "another process" (its own connection, like one)
                assert held and await run_in_use(url, run_id)
                holder = rf"\(doctune pid {os.getpid()} on "  # who holds it, from the lock's connection
                with pytest.raises(InputError, match=rf"run {run_id} is in use on the same checkpoint database {holder}"):
                    await arun([str(doc)], tmp_path / "b", settings)
            assert not await run_in_use(url, run_id)  # released with its connection

        asyncio.run(go())

        async def record_only() -> None:  # a run this database knows, read from a directory without run.json
            async with open_persistence(url, tmp_path) as (_, store):
                await put_record(store, {"run_id": run_id, "docs": [str(doc)], "settings": {}, "attempts": []})
            with pytest.raises(InputError, match=f"--run-id: {run_id} "):
                await astatus(tmp_path / "c", url)
            st = await astatus(tmp_path / "c", url, run_id=run_id)
            assert (st.run_id, st.state) == (run_id, "not_started")
            with pytest.raises(InputError, match="no run nope in the checkpoint database"):
                await astatus(tmp_path / "c", url, run_id="nope")

        asyncio.run(record_only())
    assert not (tmp_path / "b" / "run.json").exists() and not (tmp_path / "c").exists()
