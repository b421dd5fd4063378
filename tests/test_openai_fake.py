"""The fake OpenAI server speaks the real protocol: checked with the real `langchain_openai.ChatOpenAI` client."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time

import httpx
import openai
import pytest
from langchain_openai import ChatOpenAI
from pydantic import BaseModel, Field

from tests.fakes.openai_server import FakeOpenAI, Fault, FaultPlan, messages_text


class QA(BaseModel):
    instruction: str = Field(description="The task.")
    response: str = Field(description="The answer.")


class QAList(BaseModel):
    pairs: list[QA] = Field(description="The pairs.")


ANSWER = {"pairs": [{"instruction": "Print hello", "response": "```zig\nconst std = @import(\"std\");\n```"}]}


def _llm(srv: FakeOpenAI, key: str = "sk-test", timeout: float = 5.0) -> ChatOpenAI:
    return ChatOpenAI(base_url=srv.base_url, api_key=key, model="fake-model", max_retries=0, timeout=timeout)


@pytest.mark.parametrize("method", ["function_calling", "json_schema", "json_mode"])
def test_structured_output_all_methods(method: str) -> None:
    with FakeOpenAI(lambda body: ANSWER, api_key="sk-test") as srv:
        out = _llm(srv).with_structured_output(QAList, method=method, include_raw=True).invoke("Write pairs")
        assert out["parsing_error"] is None
        assert out["parsed"] == QAList.model_validate(ANSWER)
        assert out["raw"].usage_metadata["output_tokens"] > 0
        body = srv.chat_requests()[0].body
    if method == "function_calling":
        assert body["tools"][0]["function"]["name"] == "QAList"
        assert body["tool_choice"]["function"]["name"] == "QAList"
    elif method == "json_schema":
        assert body["response_format"]["type"] == "json_schema"
    else:
        assert body["response_format"] == {"type": "json_object"}


def test_default_responder_fills_schema_and_plain_text() -> None:
    with FakeOpenAI() as srv:
        out = _llm(srv).with_structured_output(QAList, method="json_schema").invoke("x")
        assert isinstance(out, QAList) and len(out.pairs) == 1
        assert _llm(srv).invoke("hello").content == "ok"


def test_responder_matches_content_not_order() -> None:
    def responder(body: dict) -> str:
        return "first" if "alpha" in messages_text(body, "user") else "second"

    async def both() -> list[str]:
        llm = _llm(srv)
        res = await asyncio.gather(llm.ainvoke("beta"), llm.ainvoke("alpha"))
        return [r.content for r in res]

    with FakeOpenAI(responder, latency=0.05) as srv:
        assert asyncio.run(both()) == ["second", "first"]
        assert len(srv.history) == 2


def test_wrong_api_key_is_401_and_models_endpoint() -> None:
    with FakeOpenAI(api_key="sk-right") as srv:
        with pytest.raises(openai.AuthenticationError):
            _llm(srv, key="sk-wrong").invoke("x")
        r = httpx.get(srv.base_url + "/models", headers={"Authorization": "Bearer sk-right"})
        assert r.status_code == 200 and r.json()["data"][0]["id"] == "fake-model"
        assert srv.history[0].status == 401


def test_faults_from_responder() -> None:
    kinds = {"a429": Fault("429", retry_after_s=2), "a500": Fault("500"), "aempty": Fault("empty")}

    def responder(body: dict) -> object:
        text = messages_text(body)
        return kinds.get(text, ANSWER)

    with FakeOpenAI(responder) as srv:
        llm = _llm(srv)
        with pytest.raises(openai.RateLimitError) as e429:
            llm.invoke("a429")
        assert e429.value.response.headers["retry-after"] == "2"
        with pytest.raises(openai.InternalServerError):
            llm.invoke("a500")
        assert llm.invoke("aempty").content == ""


def test_truncated_and_malformed_structured_answers() -> None:
    plan = {"trunc": Fault("truncated"), "bad": Fault("malformed")}
    with FakeOpenAI(lambda body: plan.get(messages_text(body), ANSWER)) as srv:
        fc = _llm(srv).with_structured_output(QAList, method="function_calling", include_raw=True)
        out = fc.invoke("bad")
        assert out["parsed"] is None or out["parsing_error"] is not None
        assert out["raw"].response_metadata["finish_reason"] == "tool_calls"
        out = fc.invoke("trunc")
        assert out["raw"].response_metadata["finish_reason"] == "length"
        js = _llm(srv).with_structured_output(QAList, method="json_schema", include_raw=True)
        with pytest.raises(openai.LengthFinishReasonError):  # the openai client's own check
            js.invoke("trunc")


def test_an_answer_is_cut_at_the_requested_token_budget() -> None:
    """Like the real API: at most `max_completion_tokens` (what ChatOpenAI sends) or `max_tokens` of answer, then
    finish_reason "length"; an answer within the budget is whole."""
    text = "word " * 40  # 50 tokens by the fake's count (4 characters a token)
    with FakeOpenAI(lambda body: text) as srv:
        one = ChatOpenAI(base_url=srv.base_url, api_key="k", model="fake-model", max_retries=0, max_tokens=1)
        msg = one.invoke("ping")
        assert srv.history[-1].body["max_completion_tokens"] == 1
        assert msg.content == text[:4] and msg.response_metadata["finish_reason"] == "length"
        assert msg.usage_metadata is not None and msg.usage_metadata["output_tokens"] == 1
        whole = httpx.post(srv.base_url + "/chat/completions", json={
            "model": "m", "max_tokens": 100, "messages": [{"role": "user", "content": "ping"}]}).json()
        assert whole["choices"][0]["message"]["content"] == text
        assert whole["choices"][0]["finish_reason"] == "stop"


def test_hang_times_out_and_disconnect_is_connection_error() -> None:
    plan = {"hang": Fault("hang"), "drop": Fault("disconnect")}
    with FakeOpenAI(lambda body: plan.get(messages_text(body), "fine")) as srv:
        t0 = time.monotonic()
        with pytest.raises(openai.APITimeoutError):
            _llm(srv, timeout=0.5).invoke("hang")
        assert time.monotonic() - t0 < 3
        with pytest.raises(openai.APIConnectionError):
            _llm(srv).invoke("drop")
        assert _llm(srv).invoke("after").content == "fine"


def test_concurrency_cap_answers_429() -> None:
    async def burst() -> list[object]:
        llm = _llm(srv)
        return await asyncio.gather(*(llm.ainvoke(f"q{i}") for i in range(6)), return_exceptions=True)

    with FakeOpenAI(latency=0.3, max_concurrency=2) as srv:
        res = asyncio.run(burst())
    errors = [r for r in res if isinstance(r, Exception)]
    assert errors and all(isinstance(e, openai.RateLimitError) for e in errors)
    assert srv.max_in_flight == 2 and len(errors) == 4


def test_fault_plan_is_seeded_by_content_not_order() -> None:
    bodies = [{"model": "m", "messages": [{"role": "user", "content": f"s{i}"}]} for i in range(200)]

    def run(order: list[dict]) -> dict[str, str | None]:
        plan = FaultPlan(rate=0.3, seed=7)
        return {b["messages"][0]["content"]: getattr(plan.decide(b), "kind", None) for b in order}

    a, b = run(bodies), run(list(reversed(bodies)))
    assert a == b
    share = sum(v is not None for v in a.values()) / len(a)
    assert 0.2 < share < 0.4
    capped = FaultPlan(rate=1.0, seed=1, max_per_request=2)
    assert [capped.decide(bodies[0]) is not None for _ in range(4)] == [True, True, False, False]


def test_runs_as_a_process(tmp_path) -> None:
    hist = tmp_path / "hist.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.openai_server", "--history-file", str(hist), "--api-key", "k"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        line = proc.stdout.readline().strip()
        assert line.startswith("BASE_URL=http://127.0.0.1:")
        llm = ChatOpenAI(base_url=line.split("=", 1)[1], api_key="k", model="m", max_retries=0, timeout=5)
        assert llm.invoke("ping").content == "ok"
        assert json.loads(hist.read_text().splitlines()[0])["body"]["messages"][0]["content"] == "ping"
    finally:
        proc.kill()
        proc.wait(timeout=5)
