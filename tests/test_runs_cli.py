"""Runs you can trust, through the real `doctune` command in child processes (real SQLite, the real Zig compiler,
a local OpenAI-compatible server over HTTP): a retry uses the run's settings of record whatever the shell says,
token totals after a retry equal the endpoint's own count, a refused key stops the run within 3 requests with
one line, a bad option is one line, and Ctrl-C exits 130 with a run that resumes to the same dataset."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from tests.fakes import zig_answers
from tests.fakes.openai_server import FakeOpenAI, Fault, messages_text
from tests.reliability.harness import (
    clean_env,
    dataset_signature,
    good_pair_responder,
    llm_env,
    no_traceback,
    run_cli,
    start_cli,
    status,
    warm_up,
    zig_doc,
)

pytestmark = pytest.mark.zig

BROKEN = "Durable > Example 1"


def _doc(tmp: Path, n: int) -> str:
    doc = tmp / "durable.md"
    doc.write_text(zig_doc(n), encoding="utf-8")
    return str(doc)


def _flaky_repair(state: dict[str, bool]):
    """One correct program per section, except BROKEN's, which fails to compile; its repair request gets a 500
    while state['down'] (so the section fails after spending tokens), the fixed program afterwards."""

    def responder(body: dict[str, Any]) -> dict[str, Any] | str | Fault:
        user = messages_text(body, "user")
        if "failed when its code was checked" in user:
            return Fault("500") if state["down"] else zig_answers.repair_answer(body)
        if zig_answers.section_of(body) == BROKEN:
            v = zig_answers.value_of(BROKEN)
            return {"pairs": [{"instruction": f"Write a Zig program about {BROKEN} that prints {v}.",
                               "response": zig_answers.zig(zig_answers.BROKEN), "kind": "code"}]}
        return good_pair_responder(body)

    return responder


def _status(out: Path, env: dict[str, str]) -> dict[str, Any]:
    r = run_cli(["status", str(out), "--json"], env)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout)


def test_retry_uses_the_runs_settings_and_tokens_add_up(tmp_path: Path) -> None:
    out, state = tmp_path / "out", {"down": True}
    with FakeOpenAI(_flaky_repair(state)) as srv:
        env = {**llm_env(tmp_path, srv.base_url), "DOCTUNE_LLM__MODEL": "model-a"}
        r = run_cli(["run", _doc(tmp_path, 3), "--out", str(out), "--concurrency", "2"], env)
        assert r.returncode == 0 and no_traceback(r.stderr), r.stderr[-3000:]
        st = _status(out, env)
        assert st["state"] == "completed_with_failures" and [f["heading_path"] for f in st["failed"]] == [BROKEN]
        assert st["failed"][0]["section_id"] not in r.stderr  # headings, not hashes, are what people read

        # Another shell: no endpoint, another default model, no generator kind; only the key is there.
        state["down"], asked_before = False, len(srv.chat_requests())
        shell = {**clean_env(tmp_path), "OPENAI_API_KEY": "sk-test-key", "DOCTUNE_LLM__MODEL": "model-b"}
        r = run_cli(["retry", str(out)], shell)
        assert r.returncode == 0 and no_traceback(r.stderr), r.stderr[-3000:]
        retried = srv.chat_requests()[asked_before:]
        endpoint_tokens = dict(srv.tokens)
    assert retried and {q.body["model"] for q in retried} == {"model-a"}
    rows = [json.loads(line) for line in (out / "pairs.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and {row["generator"] for row in rows} == {"llm:model-a"}
    text = (out / "run.json").read_text()
    info = json.loads(text)
    assert info["settings"]["llm"]["model"] == "model-a" and info["settings"]["generator"]["kind"] == "llm"
    assert [(a["command"], a["model"], a["outcome"]) for a in info["attempts"]] == [
        ("run", "model-a", "completed_with_failures"), ("retry", "model-a", "completed")]
    assert "sk-test-key" not in text
    st = _status(out, shell)
    assert st["state"] == "completed" and st["sections"] == {"total": 3, "done": 3, "failed": 0, "pending": 0}
    assert st["tokens"] == endpoint_tokens, (st["tokens"], endpoint_tokens)


def test_a_refused_key_stops_the_run_within_3_requests(tmp_path: Path) -> None:
    """/models answers (preflight passes), every chat request gets 401: 8 sections, 8 at a time."""
    with FakeOpenAI(lambda body: Fault("401")) as srv:
        r = run_cli(["run", _doc(tmp_path, 8), "--out", str(tmp_path / "out"), "--concurrency", "8"],
                    llm_env(tmp_path, srv.base_url))
        asked = len(srv.chat_requests())
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode not in (0, 130) and no_traceback(r.stderr), r.stderr[-3000:]
    assert asked <= 3, asked
    assert sum("error:" in line for line in lines) == 1 and "401" in lines[-1], lines[-5:]


@pytest.mark.parametrize("value", ["-3", "0"])
def test_a_bad_max_sections_is_one_line(tmp_path: Path, value: str) -> None:
    r = run_cli(["run", _doc(tmp_path, 1), "--out", str(tmp_path / "out"), "--max-sections", value],
                clean_env(tmp_path))
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 2 and len(lines) == 1 and "max_sections" in lines[0], r.stderr[-3000:]
    assert not (tmp_path / "out" / "run.json").exists()


def test_sigint_exits_130_and_the_resumed_run_matches_an_uninterrupted_one(tmp_path: Path) -> None:
    doc = _doc(tmp_path, 4)
    env = {**clean_env(tmp_path), "DOCTUNE_GENERATOR__KIND": "doc-examples"}
    out, log = tmp_path / "out", tmp_path / "run.log"
    warm_up()
    proc = start_cli(["run", doc, "--out", str(out), "--concurrency", "1"], env, log)
    try:
        deadline = time.monotonic() + 300
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                if status(out)["sections"]["done"] >= 1:
                    break
            except Exception:  # run.json or the checkpoint may not be there yet
                pass
            time.sleep(0.2)
        assert proc.poll() is None, "the run ended before it could be interrupted:\n" + log.read_text()[-3000:]
        os.kill(proc.pid, signal.SIGINT)  # what Ctrl-C sends
        rc = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    text = log.read_text()
    assert rc == 130 and no_traceback(text), text[-3000:]
    assert f"resume with: doctune retry {out}" in text.splitlines()[-1], text[-1000:]
    st = status(out)
    assert st["state"] == "interrupted" and st["sections"]["pending"] >= 1, st
    assert json.loads((out / "run.json").read_text())["attempts"][-1]["outcome"] == "interrupted"

    r = run_cli(["retry", str(out)], env)
    assert r.returncode == 0 and no_traceback(r.stderr), r.stderr[-3000:]
    ref = run_cli(["run", doc, "--out", str(tmp_path / "ref")], env)  # uninterrupted (verdicts cached by now)
    assert ref.returncode == 0, ref.stderr[-3000:]
    assert dataset_signature(out) == dataset_signature(tmp_path / "ref") and len(dataset_signature(out)) == 4
    assert status(out)["state"] == "completed"
