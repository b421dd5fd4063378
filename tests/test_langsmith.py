"""LangSmith tracing of a real `doctune run` (child process: langsmith caches its env lookups) against a local
LangSmith look-alike that records every request: the run is named and tagged, graph nodes and LLM calls appear
as runs, and neither the LangSmith nor the OpenAI key is anywhere in what was posted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.fakes import zig_answers
from tests.fakes.langsmith_server import FakeLangSmith
from tests.fakes.openai_server import FakeOpenAI, Fault
from tests.reliability.harness import llm_env, no_traceback, run_cli, zig_doc

pytestmark = pytest.mark.zig

LS_KEY = "lsv2_pt_SENTINEL_LANGSMITH_KEY_7f3a9c"
OPENAI_KEY = "sk-SENTINEL-OPENAI-KEY-51d2e8"


@pytest.mark.parametrize("zstd", [True, False], ids=["zstd", "plain"])
def test_run_is_traced_without_secrets(tmp_path: Path, zstd: bool) -> None:
    doc = tmp_path / "traced.md"
    doc.write_text(zig_doc(2, title="Traced"), encoding="utf-8")
    out = tmp_path / "out"
    with FakeLangSmith(zstd=zstd) as ls, FakeOpenAI(zig_answers.responder, api_key=OPENAI_KEY) as srv:
        env = llm_env(tmp_path, srv.base_url, api_key=OPENAI_KEY, LANGSMITH_TRACING="true",
                      LANGSMITH_ENDPOINT=ls.endpoint, LANGSMITH_API_KEY=LS_KEY, LANGSMITH_PROJECT="doctune-test")
        r = run_cli(["run", str(doc), "--out", str(out)], env, timeout=300)
        assert r.returncode == 0 and no_traceback(r.stderr), r.stderr[-3000:]
        run_id = json.loads((out / "run.json").read_text())["run_id"]
        root_name = f"doctune run {run_id}"
        # the client posts from a background thread; the runner flushes before exiting, so this is a formality
        assert ls.wait_for(lambda: any(x.get("name") == root_name and x.get("end_time")
                                       for x in ls.runs().values()), timeout=20)
        runs = list(ls.runs().values())
        bodies, everything = ls.bodies_text(), ls.all_text()
        posted = [q for q in ls.requests if q.method in ("POST", "PATCH")]
    assert posted and all(q.path.startswith("/runs") for q in posted), [q.path for q in posted]
    if zstd:
        assert any(q.headers.get("content-encoding") == "zstd" for q in posted)

    root = next(x for x in runs if x.get("name") == root_name)
    assert {"doctune", "generator:llm", "zig-0.14.0", f"run:{run_id}"} <= set(root.get("tags", [])), root.get("tags")
    meta = root["extra"]["metadata"]
    assert meta["run_id"] == run_id and meta["docs"] == ["traced.md"] and len(meta["settings_hash"]) == 12
    assert meta["model"] == "fake-model" and meta["generator"] == "llm"

    names = {x.get("name") for x in runs}
    assert {"split", "section", "generate", "validate", "finish", "curate", "export"} <= names, names
    llm_runs = [x for x in runs if x.get("name") == "llm:generate"]
    assert len(llm_runs) == 2 and all(any(t.startswith("section:") for t in x.get("tags", [])) for x in llm_runs)
    assert all(x["extra"]["metadata"].get("prompt_hash") for x in llm_runs)
    # each section's agent calls sit in runs named by the section's heading (zig_answers: one broken pair per
    # section), tagged with its id
    by_id = {x["id"]: x for x in runs}
    for stage in ("generate", "repair"):
        named = [x for x in runs if str(x.get("name", "")).startswith(f"{stage}: ")]
        assert len(named) == 2, sorted(names)
        assert {x["name"] for x in named} == {f"{stage}: Traced > Example 0", f"{stage}: Traced > Example 1"}
        for x in named:
            sid = x["extra"]["metadata"]["section_id"]
            assert f"section:{sid}" in x["tags"]
            assert by_id[x["parent_run_id"]]["name"] == stage  # under the graph node's own run
    repair_llm = [x for x in runs if x.get("name") == "llm:repair"]
    assert len(repair_llm) == 2 and all(x["extra"]["metadata"]["attempt"] == 1 for x in repair_llm)
    # children inherit the run's tags (LangChain callbacks), so every node is findable by run id in LangSmith
    assert all(f"run:{run_id}" in x.get("tags", []) for x in runs if x.get("name") in ("split", "generate"))

    for secret in (LS_KEY, OPENAI_KEY):
        assert secret not in bodies, f"{secret[:8]}... was posted to LangSmith"
    assert OPENAI_KEY not in everything  # not even in a header
    assert everything.count(LS_KEY) == sum(1 for q in ls.requests if q.headers.get("x-api-key") == LS_KEY)


def test_a_failed_section_is_an_error_run(tmp_path: Path) -> None:
    """A section whose endpoint keeps failing (500 after every retry) shows up red: an error run named after its
    heading; the other section's runs are not errors."""
    doc = tmp_path / "traced.md"
    doc.write_text(zig_doc(2, title="Traced"), encoding="utf-8")

    def responder(body: dict) -> object:
        return Fault("500") if zig_answers.section_of(body) == "Traced > Example 1" else zig_answers.responder(body)

    with FakeLangSmith() as ls, FakeOpenAI(responder) as srv:
        env = llm_env(tmp_path, srv.base_url, LANGSMITH_TRACING="true", LANGSMITH_ENDPOINT=ls.endpoint,
                      LANGSMITH_API_KEY=LS_KEY, LANGSMITH_PROJECT="doctune-test")
        r = run_cli(["run", str(doc), "--out", str(tmp_path / "out")], env, timeout=300)
        assert r.returncode == 0 and no_traceback(r.stderr), r.stderr[-3000:]
        assert ls.wait_for(lambda: any(x.get("name") == "section failed: Traced > Example 1" and x.get("end_time")
                                       for x in ls.runs().values()), timeout=20)
        runs = list(ls.runs().values())
    failed = [x for x in runs if x.get("name") == "section failed: Traced > Example 1"]
    assert len(failed) == 1 and "Error code: 500" in failed[0]["error"], failed
    assert not [x for x in runs if str(x.get("name", "")).startswith("section failed: Traced > Example 0")]
