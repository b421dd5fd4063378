"""Preflight's endpoint checks against the fake OpenAI server over HTTP: `GET /models` and the one-token chat probe
whose answer lets the run's client skip its first-request gate."""

from __future__ import annotations

import pytest

from doctune.agents.endpoint import PROBE_TEXT, check_endpoint, probe_chat
from doctune.core.errors import AccessError, EndpointError
from doctune.core.settings import LLMSettings

from tests.fakes.openai_server import FakeOpenAI, Fault, messages_text


def _llm(srv: FakeOpenAI, key: str = "sk-test") -> LLMSettings:
    return LLMSettings(base_url=srv.base_url, api_key=key, model="fake-model", max_retries=3, timeout_s=5)


def test_an_answered_probe_verifies_the_endpoint_with_one_token() -> None:
    with FakeOpenAI(lambda body: "a long answer that the one-token budget cuts", api_key="sk-test") as srv:
        check = probe_chat(_llm(srv))
        (probe,) = srv.chat_requests()
    assert check.verified and check.why_not == ""
    assert check.usage.calls == 1 and check.usage.output == 1 and check.usage.input > 0
    assert probe.body["model"] == "fake-model" and probe.body["max_completion_tokens"] == 1
    assert messages_text(probe.body) == PROBE_TEXT and probe.headers["authorization"] == "Bearer sk-test"


@pytest.mark.parametrize("status", ["401", "403", "404"])
def test_a_refused_probe_is_an_access_error(status: str) -> None:
    with FakeOpenAI(lambda body: Fault(status)) as srv:
        with pytest.raises(AccessError, match=status):
            probe_chat(_llm(srv))
        assert len(srv.chat_requests()) == 1  # no retry of a refusal


@pytest.mark.parametrize("kind", ["500", "429", "malformed"])
def test_a_probe_that_fails_otherwise_proves_nothing(kind: str) -> None:
    """A server error or rate limit is not a verdict on the key: the run keeps its gate. Any answer (even one that
    is not JSON: the probe asks for no shape) is an answer."""
    with FakeOpenAI(lambda body: Fault(kind, retry_after_s=0.1)) as srv:
        check = probe_chat(_llm(srv))
        asked = len(srv.chat_requests())
    assert asked == 1  # the probe does not retry: the run's own retries handle a flaky endpoint
    if kind == "malformed":
        assert check.verified
    else:
        assert not check.verified and kind in check.why_not and check.usage.calls == 0


def test_check_endpoint_refuses_a_wrong_key_and_an_unreachable_host() -> None:
    with FakeOpenAI(api_key="sk-right") as srv:
        check_endpoint(_llm(srv, "sk-right"))
        with pytest.raises(AccessError, match="401"):
            check_endpoint(_llm(srv, "sk-wrong"))
        port = srv.port
    with pytest.raises(EndpointError, match="cannot reach"):
        check_endpoint(LLMSettings(base_url=f"http://127.0.0.1:{port}/v1", api_key="k", model="m", timeout_s=2))
