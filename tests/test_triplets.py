"""Triplets through the whole graph (real LangGraph, real Zig, the fake OpenAI server over HTTP): instruction,
solution and hidden tests flow generate -> validate (with the vacuity check on a stubbed solution) -> repair ->
export; a vacuous test is caught; a wrong solution is repaired with the name of the hidden test it failed."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from doctune.core.settings import load_settings
from doctune.graph.lifecycle import arun

from tests.fakes import zig_answers
from tests.fakes.openai_server import FakeOpenAI, messages_text
from tests.reliability.harness import stored_pairs, zig_doc

# Whole runs with real compiles (~1-1.5 min cold): CI's slow set; the pair-checking logic itself is unit-tested
# without Zig in test_checking.py / test_nodes.py.
pytestmark = [pytest.mark.zig, pytest.mark.slow]


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("verdicts") / "verdicts.sqlite"


def _run(tmp: Path, cache: Path, srv: FakeOpenAI, **extra: object) -> object:
    doc = tmp / "doc.md"
    doc.write_text(zig_doc(1), encoding="utf-8")
    settings = load_settings(
        llm={"base_url": srv.base_url, "api_key": "sk-test", "model": "fake-model", "max_retries": 0},
        generator={"kind": "llm", "max_continuations": 0, **extra.pop("generator", {})},  # type: ignore[dict-item]
        validator={"cache_path": str(cache)},
        curator={"dedup": False, **extra.pop("curator", {})},  # type: ignore[dict-item]
        **extra,
    )
    return asyncio.run(arun([str(doc)], tmp / "out", settings))


def _rows(path: Path) -> dict[str, dict]:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return {r["messages"][0]["content"] if "messages" in r else r["instruction"]: r for r in rows}


def _by_word(rows: dict[str, dict], word: str) -> dict:
    return next(r for ins, r in rows.items() if word in ins)


def test_triplets_are_tested_repaired_and_exported(tmp_path: Path, cache: Path) -> None:
    with FakeOpenAI(zig_answers.triplet_responder) as srv:
        summary = _run(tmp_path, cache, srv)
        repairs = [messages_text(r.body, "user") for r in srv.chat_requests()
                   if "failed when its code was checked" in messages_text(r.body, "user")
                   or "do not test its solution" in messages_text(r.body, "user")]
    assert summary.failed_sections == 0 and summary.accepted == 4 and summary.rejected == 0, summary
    assert summary.repairs == {0: 2, 1: 2}, summary
    rows = _rows(tmp_path / "out" / "pairs.jsonl")
    right, wrong, vacuous = (_by_word(rows, w) for w in ("(right)", "(first try wrong)", "(vacuous tests)"))
    program = _by_word(rows, "writes")
    for r in (right, wrong, vacuous):  # hidden tests travel beside the pair, never in the response
        assert r["evidence"] == "tested" and 'test "triple of' in r["tests"], r
        assert "test " not in r["messages"][1]["content"]
    assert (right["repairs"], wrong["repairs"], vacuous["repairs"]) == (0, 1, 1)
    assert zig_answers.WRONG_MARK not in wrong["messages"][1]["content"]
    assert program["evidence"] == "ran" and program["expect_stdout"].endswith("\n") and program["tests"] is None
    from datasets import load_from_disk  # the HF dataset carries them too (GRPO's reward reads them)

    # One section: every row is on the train side (the empty test split does not load back, a known gap).
    rows_ds = list(load_from_disk(str(tmp_path / "out" / "dataset" / "train")))
    assert sorted(bool(r["tests"]) for r in rows_ds) == [False, True, True, True]
    assert [r["expect_stdout"] for r in rows_ds if r["expect_stdout"]] == [program["expect_stdout"]]

    # The repair prompts: the failing hidden test by name with the test output; vacuous tests called so.
    [failed] = [t for t in repairs if "first try wrong" in t]
    v = zig_answers.value_of("Durable > Example 0")
    assert f'Hidden test "triple of {v + 1}" failed.' in failed and "expected" in failed
    [weak] = [t for t in repairs if "vacuous tests" in t]
    assert '@panic("stub")' in weak and zig_answers.VACUOUS_TESTS.strip() in weak

    stored = stored_pairs(tmp_path / "out")  # each pair at its newest version in the run's store
    pair = stored[vacuous["id"]]
    assert [a.verdict for a in pair.attempts] == ["ok", "ok"] and pair.meta["vacuity"]["status"] == "non_vacuous"
    first = stored[wrong["id"]].attempts
    assert first[0].verdict == "test_failure" and first[1].feedback and "triple of" in first[1].feedback


def test_vacuous_tests_without_repairs_are_demoted_and_min_evidence_drops_them(tmp_path: Path, cache: Path) -> None:
    with FakeOpenAI(zig_answers.triplet_responder) as srv:
        summary = _run(tmp_path, cache, srv, generator={"max_repairs": 0}, curator={"min_evidence": "tested"})
    rejected = _rows(tmp_path / "out" / "rejected.jsonl")
    assert summary.accepted == 1, summary
    assert _by_word(rejected, "(first try wrong)")["reason"] == "test_failure"
    assert _by_word(rejected, "(vacuous tests)")["reason"] == "below_min_evidence: ran < tested"
    assert _by_word(rejected, "writes")["reason"] == "below_min_evidence: ran < tested"
    vacuous = stored_pairs(tmp_path / "out")[_by_word(rejected, "(vacuous tests)")["id"]]
    assert vacuous.evidence == "ran" and vacuous.meta["vacuity"]["status"] == "vacuous"
    assert vacuous.meta["vacuity"]["stub_verdict"] == "ok" and "stub" in vacuous.meta["vacuity"]["demoted"]


def test_hidden_and_stub_checks_share_compiles() -> None:
    """The agent alone with the real validator (no cache): two triplets are four test-mode checks, batched."""
    from doctune.agents.checking import check_pairs
    from doctune.agents.validator import Validator
    from doctune.core.schemas import Pair
    from doctune.core.settings import ValidatorSettings

    def triplet(pid: str, tests: str) -> Pair:
        return Pair(id=pid, section_id="s", heading_path="H", source="d.md", instruction="Write triple.",
                    response=zig_answers.zig(zig_answers.triple_fn()), generator="llm:m", tests=tests)

    pairs = [triplet("good", zig_answers.triple_tests(5)), triplet("weak", zig_answers.VACUOUS_TESTS)]

    async def go() -> tuple[object, int]:
        validator = Validator(ValidatorSettings(cache=False, concurrency=1))  # one batch (else one per core)
        try:
            checked = await check_pairs(pairs, validator.validate_many, can_repair=False)
        finally:
            await validator.aclose()
        return checked, validator.executions

    checked, compiles = asyncio.run(go())
    assert (checked.accepted, checked.failing) == (["good", "weak"], [])
    assert (pairs[0].evidence, pairs[1].evidence) == ("tested", "ran")
    assert pairs[0].verdict.tests.passed == 2 and pairs[1].meta["vacuity"]["status"] == "vacuous"
    assert compiles == 1, compiles  # four checks, one compile: the test batch shares it
