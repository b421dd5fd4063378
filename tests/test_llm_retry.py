"""One retry rule for every LLM request (``agents.llm.LLMRetry``), against the fake OpenAI server over HTTP: the
generator's structured calls, the evaluator's endpoint answers (``ChatCompleter``, handed to the trainer floor as
``complete``) and the graph's node retry agree on what is transient. A 429 or 503 followed by an answer is retried
after a wait (Retry-After, else backoff); a refused key (401) is asked once."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import httpx
import openai
import pytest

from doctune.agents.chat import ChatCompleter
from doctune.agents.llm import LLMRetry, is_transient
from doctune.agents.llm_generator import generate_pairs
from doctune.core.errors import AccessError, EndpointError
from doctune.core.schemas import Section, SectionStats
from doctune.core.settings import LLMSettings, load_settings
from doctune.graph.graph import LLM_RETRY
from doctune.trainer.generate import OpenAIGenerator, parse_spec

from tests.fakes import zig_answers
from tests.fakes.openai_server import FakeOpenAI, Fault, FaultPlan
from tests.reliability.harness import clean_env, no_traceback, run_cli


def _first_fails(fault: Fault, answer: str = "```zig\nconst x = 1;\n```"):
    """A responder whose first request gets ``fault``, every later one ``answer``."""
    seen: list[int] = []

    def responder(body: dict) -> str | Fault:
        seen.append(1)
        return fault if len(seen) == 1 else answer

    return responder


def _gap_s(srv: FakeOpenAI) -> float:
    """Seconds between the first answer (the fault) and the second request's arrival."""
    first, second = srv.chat_requests()[:2]
    assert second.t_start is not None
    return second.t_start - first.t


@pytest.mark.parametrize(("fault", "status", "min_wait_s"), [
    (Fault("429", retry_after_s=0.4), 429, 0.35),  # the server's Retry-After (0.4 s, sent in ms too)
    (Fault("503"), 503, 0.1),  # no Retry-After: jittered backoff, first wait in [first_s/2, first_s]
])
def test_evaluator_retries_a_transient_error_after_a_wait(fault: Fault, status: int, min_wait_s: float) -> None:
    with FakeOpenAI(_first_fails(fault), api_key="sk-test") as srv:
        completer = ChatCompleter(LLMSettings(api_key="sk-test", max_retries=2), retry=LLMRetry(max_retries=2,
                                                                                               first_s=0.2))
        gen = OpenAIGenerator(parse_spec("m", f"openai:fake@{srv.base_url}"), completer.complete)
        try:
            out = gen.generate(["write x"])
        finally:
            completer.close()
        assert [r.status for r in srv.chat_requests()] == [status, 200]
        assert out[0][0].text.startswith("```zig") and _gap_s(srv) >= min_wait_s
        assert all(r.headers["authorization"] == "Bearer sk-test" for r in srv.chat_requests())  # settings' key


def test_evaluator_does_not_retry_a_refused_key() -> None:
    with FakeOpenAI(lambda body: "never", api_key="sk-right") as srv:
        completer = ChatCompleter(LLMSettings(api_key="sk-wrong", max_retries=3))
        try:
            with pytest.raises(AccessError, match="401"):
                completer.complete("q", model="fake", base_url=srv.base_url, temperature=0.0, max_tokens=16)
        finally:
            completer.close()
        assert [r.status for r in srv.chat_requests()] == [401]


def test_evaluator_gives_up_after_max_retries() -> None:
    with FakeOpenAI(lambda body: Fault("503")) as srv:
        completer = ChatCompleter(LLMSettings(max_retries=2), retry=LLMRetry(max_retries=2, first_s=0.01))
        try:
            with pytest.raises(EndpointError, match=r"no answer after 3 tries \(HTTP 503\)"):
                completer.complete("q", model="fake", base_url=srv.base_url, temperature=0.0, max_tokens=16)
        finally:
            completer.close()
        assert [r.status for r in srv.chat_requests()] == [503, 503, 503]


def test_generator_retries_503_with_backoff() -> None:
    plan = FaultPlan(rate=1.0, kinds=("503",), max_per_request=1)
    with FakeOpenAI(zig_answers.responder, faults=plan) as srv:
        s = load_settings(llm={"base_url": srv.base_url, "api_key": "sk-test", "model": "fake-model",
                               "max_retries": 2, "timeout_s": 5}, generator={"max_continuations": 0})
        text = "## Integers\nZig has integer types such as `u8` and `i32`.\n"
        sec = Section(id="s-int", source="l.md", path=["Integers"], level=2, ordinal=0, start_line=1, end_line=2,
                      text=text, stats=SectionStats(chars=len(text), code_blocks=0))
        res = asyncio.run(generate_pairs(sec, s))
        assert [r.status for r in srv.chat_requests()] == [503, 200] and res.pairs
        assert _gap_s(srv) >= 0.25  # LLMRetry's first backoff: 0.5 s x [0.5, 1]


def _status_error(status: int, headers: dict[str, str] | None = None) -> openai.APIStatusError:
    req = httpx.Request("POST", "http://x/v1/chat/completions")
    resp = httpx.Response(status, request=req, headers=headers or {})
    cls = {401: openai.AuthenticationError, 429: openai.RateLimitError}.get(status, openai.APIStatusError)
    return cls("e", response=resp, body=None)


def test_one_classification_and_one_wait_rule() -> None:
    """What the graph's node retry retries is what the clients retry; the wait follows Retry-After, else backoff."""
    assert LLM_RETRY.retry_on is is_transient
    for status in (408, 429, 500, 503, 529):
        assert is_transient(_status_error(status))
    for status in (400, 401, 403, 404, 422):
        assert not is_transient(_status_error(status))
    assert is_transient(openai.APITimeoutError(httpx.Request("POST", "http://x")))
    rule = LLMRetry(max_retries=3, first_s=0.5, cap_s=10)
    assert rule.delay(_status_error(429, {"retry-after-ms": "1500"}), 0) == 1.5
    assert rule.delay(_status_error(429, {"retry-after": "99"}), 0) == 10  # capped
    random.seed(1)
    waits = [rule.delay(_status_error(503), k) for k in range(6)]
    assert all(0.5 * min(10, 0.5 * 2**k) <= w <= min(10, 0.5 * 2**k) for k, w in enumerate(waits))
    assert rule.should_retry(_status_error(503), 2) and not rule.should_retry(_status_error(503), 3)
    assert not rule.should_retry(_status_error(401), 0)


@pytest.mark.zig
def test_doctune_eval_asks_an_endpoint_with_the_settings_key_and_retry_rule(tmp_path: Path) -> None:
    """`doctune eval --model x=openai:…`: the key comes from the settings (here $OPENAI_API_KEY, resolved by
    load_settings), a 429 is retried after its Retry-After, and the task is scored."""
    with FakeOpenAI(_first_fails(Fault("429", retry_after_s=0.3), "no code here"), api_key="sk-eval") as srv:
        env = clean_env(tmp_path, OPENAI_API_KEY="sk-eval", DOCTUNE_LLM__MAX_RETRIES="1")
        r = run_cli(["eval", "--out", str(tmp_path / "eval"), "--model", f"x=openai:fake@{srv.base_url}",
                     "--max-tasks", "1", "--max-new-tokens", "64"], env)
        assert r.returncode == 0 and no_traceback(r.stderr), r.stderr[-3000:]
        assert [q.status for q in srv.chat_requests()] == [429, 200] and _gap_s(srv) >= 0.25
        assert srv.chat_requests()[1].headers["authorization"] == "Bearer sk-eval"
        assert srv.chat_requests()[1].body["max_tokens"] == 64
    assert (tmp_path / "eval" / "results.json").is_file()
