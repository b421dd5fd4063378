"""Preflight checks of an OpenAI-compatible endpoint, made before a run writes anything.

Defines ``check_endpoint`` (``GET /models``: the endpoint is reachable and takes the key), ``probe_chat`` (one
chat request of one output token with the run's model, key and client) and ``EndpointCheck`` (what they found).
A probe that gets an answer proves what the run's first request would: key, model and chat route are accepted.
Then the run's client needs no first-request gate (``StructuredCaller(endpoint_verified=True)``) and its first
requests go out together; a refusal (401/403/404) stops the run here, after one request and before any state.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import httpx
import openai
from langchain_core.messages import HumanMessage

from doctune.agents.llm import Usage, access_error, build_chat_model
from doctune.core.errors import AccessError, ConfigError, EndpointError
from doctune.core.settings import LLMSettings

log = logging.getLogger(__name__)
PROBE_TIMEOUT_S = 30.0  # a probe that takes longer proves nothing in time: the run falls back to its gate
PROBE_TEXT = "Reply with the single word: ok"


@dataclass
class EndpointCheck:
    """What preflight learnt: ``verified`` = a chat request with this key and model was answered (2xx);
    ``usage`` = the tokens the probe spent (the run's record counts them)."""

    verified: bool = False
    usage: Usage = field(default_factory=Usage)
    why_not: str = ""  # why the probe proved nothing (the run then keeps its first-request gate)


def check_endpoint(llm: LLMSettings) -> None:
    """GET {base_url}/models once: connection failures and 401/403 are fatal; any other answer is left to the
    probe and the run (some OpenAI-compatible servers have no /models route)."""
    base_url = llm.base_url
    if not base_url:
        raise ConfigError("llm.base_url is not set: set it in the config file or export OPENAI_BASE_URL")
    key = llm.api_key
    headers = {"Authorization": f"Bearer {key.get_secret_value()}"} if key else {}
    try:
        resp = httpx.get(base_url.rstrip("/") + "/models", headers=headers, timeout=min(llm.timeout_s, 15.0))
    except httpx.HTTPError as e:
        raise EndpointError(
            f"cannot reach the LLM endpoint {base_url} ({type(e).__name__}); check llm.base_url / OPENAI_BASE_URL"
        ) from None
    if resp.status_code == 401:
        raise AccessError(f"{base_url} refused the API key (401): set llm.api_key or OPENAI_API_KEY")
    if resp.status_code == 403:
        raise AccessError(f"{base_url} denied access (403) with this API key")


def probe_chat(llm: LLMSettings) -> EndpointCheck:
    """One chat completion of at most one output token, through the run's own client stack (same URL, headers,
    model and token parameter). Raises AccessError for 401/403/404; any other failure (a 400 for the tiny
    budget, 429, 5xx, a timeout) proves nothing and returns ``verified=False``."""
    probe = llm.model_copy(update={"max_tokens": 1, "timeout_s": min(llm.timeout_s, PROBE_TIMEOUT_S)})
    model = build_chat_model(probe)
    try:
        msg = model.invoke([HumanMessage(content=PROBE_TEXT)])
    except Exception as e:
        if (perm := access_error(e, llm.base_url, llm.model)) is not None:
            raise perm from None
        if not isinstance(e, (openai.APIError, httpx.HTTPError, TimeoutError, ConnectionError)):
            raise
        why = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:200]
        log.info("the endpoint probe proved nothing (%s): the run's first request goes out alone", why)
        return EndpointCheck(verified=False, why_not=why)
    return EndpointCheck(verified=True, usage=Usage.of(msg))
