"""The LLM agent through the whole graph (real LangGraph, real Zig, fake OpenAI server over HTTP): the repair
edge with the compiler's own message, pre-validation rejects, unusable answers kept as rejected pairs with their
text, a failing endpoint ending one section with an error while the run still exports the other sections' pairs,
and a refused key or model stopping the whole run at once."""

from __future__ import annotations

import asyncio
import json
import re
from collections import Counter
from pathlib import Path

import pytest

from doctune.agents.endpoint import PROBE_TEXT
from doctune.core.errors import AccessError
from doctune.core.settings import load_settings
from doctune.graph.lifecycle import arun, astatus

from tests.fakes import zig_answers
from tests.fakes.openai_server import FakeOpenAI, Fault, messages_text
from tests.reliability.harness import good_pair_responder, stored_pairs, zig_doc

pytestmark = pytest.mark.zig

COMPILER_MESSAGE = re.compile(r"\S+\.zig:\d+:\d+: error: use of undeclared identifier 'missing_name'")


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("verdicts") / "verdicts.sqlite"


def _settings(srv: FakeOpenAI, cache: Path, api_key: str = "sk-test", concurrency: int = 2, **extra: object):
    return load_settings(
        llm={"base_url": srv.base_url, "api_key": api_key, "model": "fake-model", "max_retries": 0, "timeout_s": 10},
        generator={"kind": "llm", "max_continuations": 0, "concurrency": concurrency},
        validator={"cache_path": str(cache)},
        **extra,
    )


def _run(doc: Path, out: Path, settings) -> object:
    return asyncio.run(arun([str(doc)], out, settings))


def _doc(tmp: Path, n: int) -> Path:
    doc = tmp / "doc.md"
    doc.write_text(zig_doc(n), encoding="utf-8")
    return doc


def test_broken_code_is_repaired_with_the_compiler_message(tmp_path: Path, cache: Path) -> None:
    with FakeOpenAI(zig_answers.responder, api_key="sk-test") as srv:
        summary = _run(_doc(tmp_path, 1), tmp_path / "out", _settings(srv, cache))
        repair_requests = [r for r in srv.chat_requests() if "failed when its code was checked" in
                           messages_text(r.body, "user")]
    assert summary.failed_sections == 0 and summary.accepted == 3, summary
    assert summary.repairs == {0: 2, 1: 1}, summary  # good code + conceptual first time; broken after 1 repair
    assert summary.tokens["input"] > 0 and summary.tokens["output"] > 0
    rows = {json.loads(line)["messages"][0]["content"]: json.loads(line)
            for line in (tmp_path / "out" / "pairs.jsonl").read_text().splitlines()}
    fixed = next(r for ins, r in rows.items() if "prints" in ins and r["repairs"] == 1)
    assert fixed["verdict"]["verdict"] == "ok" and fixed["evidence"] == "ran"
    assert zig_answers.BROKEN_MARK not in fixed["messages"][1]["content"]

    pair = stored_pairs(tmp_path / "out")[fixed["id"]]
    first, second = pair.attempts
    assert first.verdict == "compile_error" and first.feedback is None
    assert second.verdict == "ok" and COMPILER_MESSAGE.search(second.feedback or ""), second.feedback
    assert len(repair_requests) == 1  # the feedback in the history is exactly what the model was sent
    assert second.feedback in messages_text(repair_requests[0].body, "user")
    assert (fixed["attempts"], fixed["difficulty"]) == (2, "medium")

    # yield: per source and per section, in `doctune status` and in the dataset card
    st = asyncio.run(astatus(tmp_path / "out")).to_json()["yield"]
    evidence = {k: v for k, v in Counter(r["evidence"] for r in rows.values()).items()}
    src = {"sections": 1, "failed": 0, "generated": 3, "accepted": 3,
           "evidence": evidence, "rejected": 0, "repaired": 1, "repairs": 1}
    assert len(st["sources"]) == 1 and st["sources"][0] == {**src, "source": st["sources"][0]["source"]}
    assert st["sources"][0]["source"].endswith("doc.md")
    assert [{k: v for k, v in r.items() if k not in ("section_id", "heading_path", "source")}
            for r in st["sections"]] == [src]
    card = (tmp_path / "out" / "dataset" / "README.md").read_text()
    assert "## Yield by source" in card and "| 1 | 3 | 3: " in card and "| 0 | 1 (1) |" in card
    assert "difficulty (attempts to pass" in card and "medium: 1" in card


def test_retried_repair_does_not_ask_twice(tmp_path: Path, cache: Path) -> None:
    """A 500 on the second pair's repair makes LangGraph retry the repair node: the first pair, already repaired
    by the failed attempt, is not sent to the model again."""
    seen: dict[str, int] = {}

    def responder(body: dict) -> object:
        user = messages_text(body, "user")
        if "failed when its code was checked" in user:
            which = "second" if "second" in user else "first"
            seen[which] = seen.get(which, 0) + 1
            if which == "second" and seen[which] == 1:
                return Fault("500")
            return zig_answers.repair_answer(body)
        if "instruction/response pairs" in user:
            return {"pairs": [{"instruction": f"The {n} Zig program that prints {v}.", "kind": "code",
                               "response": zig_answers.zig(zig_answers.BROKEN)} for n, v in (("first", 1), ("second", 2))]}
        return "ok"

    with FakeOpenAI(responder) as srv:
        summary = _run(_doc(tmp_path, 1), tmp_path / "out", _settings(srv, cache))
    assert summary.failed_sections == 0 and summary.repairs == {1: 2}, summary
    assert seen == {"first": 1, "second": 2}


def test_judge_sees_each_pairs_section(tmp_path: Path, cache: Path) -> None:
    def responder(body: dict) -> object:  # the judge fails the conceptual answer, passes the code
        if "You grade training data" in messages_text(body, "user") and "conceptual answer" in messages_text(body):
            return {"score": 30, "reason": "not supported by the documentation"}
        return zig_answers.responder(body)

    with FakeOpenAI(responder) as srv:
        settings = _settings(srv, cache, curator={"judge": True, "judge_threshold": 70})
        summary = _run(_doc(tmp_path, 1), tmp_path / "out", settings)
        judged = [messages_text(r.body, "user") for r in srv.chat_requests()
                  if "You grade training data" in messages_text(r.body, "user")]
    assert len(judged) == 3 and all("std.debug.print, which writes formatted text" in j for j in judged)
    assert summary.accepted == 2 and summary.reasons == {
        "judge: score 30 < 70 (not supported by the documentation)": 1}, summary
    kept = [json.loads(line) for line in (tmp_path / "out" / "pairs.jsonl").read_text().splitlines()]
    assert sorted(r["judge_score"] for r in kept) == [85, 85]


def test_prevalidation_rejects_land_in_rejected_jsonl(tmp_path: Path, cache: Path) -> None:
    def responder(body: dict) -> object:
        answer = good_pair_responder(body)
        if isinstance(answer, dict):  # plus a "code" task whose answer has no code: dropped before validation
            answer["pairs"].append({"instruction": "Write a Zig loop.", "response": "Use while.", "kind": "code"})
        return answer

    with FakeOpenAI(responder) as srv:
        summary = _run(_doc(tmp_path, 1), tmp_path / "out", _settings(srv, cache))
    rejected = [json.loads(line) for line in (tmp_path / "out" / "rejected.jsonl").read_text().splitlines()]
    assert summary.accepted == 1 and summary.generated == 2, summary
    assert [(r["instruction"], r["reason"]) for r in rejected] == [
        ("Write a Zig loop.", "code task without a ```zig block")]
    assert summary.reasons == {"code task without a ```zig block": 1}


def _failing(broken: str, how: object):
    def responder(body: dict) -> object:
        if zig_answers.section_of(body) == broken:
            return how
        return good_pair_responder(body)

    return responder


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("how", ["garbage", "truncated", "empty-list"])
def test_unusable_answers_are_rejected_pairs_with_their_text(tmp_path: Path, cache: Path, how: str) -> None:
    """Not JSON, cut off at max_tokens, or no pairs at all: the model failed, not the infrastructure. The section
    is done (nothing for `retry` to re-ask), and rejected.jsonl keeps the raw answer and the reason."""
    broken = "Durable > Example 1"
    answer = {"garbage": Fault("garbage"), "truncated": Fault("truncated"), "empty-list": {"pairs": []}}[how]
    with FakeOpenAI(_failing(broken, answer)) as srv:
        settings = _settings(srv, cache)
        summary = _run(_doc(tmp_path, 2), tmp_path / "out", settings)
        sent = [r.content for r in srv.chat_requests() if zig_answers.section_of(r.body) == broken]
    assert summary.failed_sections == 0 and summary.accepted == 1, summary
    rows = [r for r in _rows(tmp_path / "out" / "rejected.jsonl") if r["heading_path"] == broken]
    assert len(rows) == 1 and rows[0]["reason"].startswith("unusable_answer: "), rows
    assert rows[0]["response"] == sent[-1] and rows[0]["generator"] == "llm:fake-model"
    if how == "garbage":
        assert "not valid JSON" in rows[0]["reason"] and len(sent) == 2  # first answer + one re-ask
    if how == "truncated":
        assert "max_tokens" in rows[0]["reason"]
    st = asyncio.run(astatus(tmp_path / "out"))
    assert (st.state, st.done, st.failed) == ("completed", 2, 0)
    assert st.tokens == {"input": summary.tokens["input"], "output": summary.tokens["output"]}


def test_a_failing_endpoint_fails_only_its_section(tmp_path: Path, cache: Path) -> None:
    """A server error that outlasts every retry (client and graph) ends that section with an error; the other
    sections are exported; status says completed with failures and names the section by heading."""
    broken = "Durable > Example 1"
    with FakeOpenAI(_failing(broken, Fault("500"))) as srv:
        settings = _settings(srv, cache)
        summary = _run(_doc(tmp_path, 2), tmp_path / "out", settings)
        calls = sum(1 for r in srv.chat_requests() if zig_answers.section_of(r.body) == broken)
    assert summary.status == "completed" and summary.failed_sections == 1 and summary.accepted == 1, summary
    assert calls == 2  # the graph's RetryPolicy runs the node twice (the client's max_retries is 0 here)
    failed = _rows(tmp_path / "out" / "rejected.jsonl")
    assert [r["reason"] for r in failed] == ["section_failed"]
    assert failed[0]["error"].startswith("generate failed: ") and "Error code: 500" in failed[0]["error"], failed
    st = asyncio.run(astatus(tmp_path / "out"))
    assert (st.state, st.done, st.failed) == ("completed_with_failures", 1, 1)
    assert st.failures[0]["section_id"] == failed[0]["section_id"] and st.failures[0]["heading_path"] == broken
    assert len((tmp_path / "out" / "pairs.jsonl").read_text().splitlines()) == 1


@pytest.mark.parametrize("status", ["401", "403", "404"])
def test_a_refused_key_or_model_is_refused_by_the_probe_before_anything_is_written(
        tmp_path: Path, cache: Path, status: str) -> None:
    """The endpoint lists models (GET /models passes) but refuses every chat request: preflight's one-token probe
    is refused, the run stops with an AccessError after that ONE chat request and writes nothing."""
    with FakeOpenAI(lambda body: Fault(status)) as srv:
        settings = _settings(srv, cache, concurrency=8)
        with pytest.raises(AccessError, match=status):
            _run(_doc(tmp_path, 8), tmp_path / "out", settings)
        assert [messages_text(r.body) for r in srv.chat_requests()] == [PROBE_TEXT]
    assert not (tmp_path / "out" / "run.json").exists()


@pytest.mark.parametrize("status", ["401", "403", "404"])
def test_when_the_probe_proves_nothing_the_first_request_gate_stops_the_run_at_once(
        tmp_path: Path, cache: Path, status: str) -> None:
    """The probe gets a server error (no verdict on the key), every section's request is refused: with 8 sections
    generated 8 at a time, the first-request gate lets ONE of them out, and the attempt is recorded."""
    with FakeOpenAI(lambda body: Fault("500") if messages_text(body) == PROBE_TEXT else Fault(status)) as srv:
        settings = _settings(srv, cache, concurrency=8)
        with pytest.raises(AccessError, match=status):
            _run(_doc(tmp_path, 8), tmp_path / "out", settings)
        statuses = [r.status for r in srv.chat_requests()]
    assert statuses == [500, int(status)], statuses
    st = asyncio.run(astatus(tmp_path / "out"))
    assert st.state == "interrupted" and st.done == 0
    assert st.attempts[-1]["outcome"].startswith("stopped: AccessError")


def test_a_wrong_key_is_refused_before_anything_is_written(tmp_path: Path, cache: Path) -> None:
    with FakeOpenAI(good_pair_responder, api_key="sk-right") as srv:
        with pytest.raises(AccessError, match="401"):
            _run(_doc(tmp_path, 2), tmp_path / "out", _settings(srv, cache, api_key="sk-wrong"))
        assert len(srv.history) == 1  # GET /models
    assert not (tmp_path / "out" / "run.json").exists()
