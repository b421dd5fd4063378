"""Plumbing shared by the LLM agents (generator, repair, judge).

Defines: ``build_chat_model`` (a ``ChatOpenAI`` from ``settings.llm``), ``RateLimiter`` (client-side requests/s),
``Usage`` (token accounting and cost), ``is_transient`` / ``is_llm_failure`` / ``retry_after_s`` (which errors a
retry can fix, which are the model's, and how long the server asked us to wait), ``LLMRetry`` (doctune's one
retry rule for LLM requests: those transient errors, ``llm.max_retries`` times, Retry-After or jittered exponential
backoff), ``GenerationError`` (an unusable answer, with its raw text), ``StructuredCaller`` (one structured-output
call: rate limit, ``LLMRetry``, lenient parsing, and re-asking with feedback after a malformed / truncated / empty
answer) and ``ChatCompleter`` (plain chat completions with ``LLMRetry``: the evaluator's endpoint answers).

The clients' own retries are off (``max_retries=0``): every LLM request doctune sends is retried by ``LLMRetry``
alone; the graph's node-level RetryPolicy (``graph/graph.py``) asks ``is_transient`` too.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import re
import time
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
import openai
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from pydantic import BaseModel, SecretStr, ValidationError

from doctune import prompts
from doctune.agents.limits import RequestLimit
from doctune.core.errors import AccessError, ConfigError, DoctuneError, EndpointError
from doctune.core.settings import LLMSettings

T = TypeVar("T", bound=BaseModel)
MAX_BACKOFF_S = 60.0


class GenerationError(DoctuneError):
    """The model's answer could not be used (malformed, truncated, empty, wrong shape) even after feedback.

    ``raw`` keeps the last raw answer text; ``usage`` the tokens spent on the failed attempts; ``reason`` what was
    wrong with it, in a few words (no model name: it groups rejects).
    """

    def __init__(self, message: str, raw: str | None = None, usage: Usage | None = None, reason: str | None = None):
        super().__init__(message)
        self.raw = raw
        self.usage = usage or Usage()
        self.reason = reason or message


class Usage(BaseModel):
    """Tokens spent by one or more calls."""

    input: int = 0
    output: int = 0
    calls: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(input=self.input + other.input, output=self.output + other.output, calls=self.calls + other.calls)

    def cost_usd(self, llm: LLMSettings) -> float:
        return (self.input * llm.price_input_per_mtok + self.output * llm.price_output_per_mtok) / 1e6

    def as_meta(self) -> dict[str, int]:
        """The shape the graph sums per section: {"input", "output"}."""
        return {"input": self.input, "output": self.output, "calls": self.calls}

    @classmethod
    def of(cls, msg: Any) -> Usage:
        um = getattr(msg, "usage_metadata", None) or {}
        return cls(input=um.get("input_tokens", 0), output=um.get("output_tokens", 0), calls=1)


def build_chat_model(llm: LLMSettings, *, model: str | None = None, async_client: Any = None) -> Any:
    """A ``ChatOpenAI`` for the configured endpoint. Retries are ours (``max_retries=0`` in the client).

    Pass ``async_client`` (an ``openai.DefaultAsyncHttpxClient``) to bind connections to one event loop;
    langchain-openai's default async client is a process-wide cache that breaks across ``asyncio.run`` calls.
    """
    from langchain_openai import ChatOpenAI

    base_url = llm.base_url
    if not base_url:
        raise ConfigError("llm.base_url is not set: set it in the config file or export OPENAI_BASE_URL")
    # Local servers (vLLM, `doctune serve-llm`) accept any key, but the client insists on one.
    api_key = llm.api_key or SecretStr("not-needed")
    return ChatOpenAI(
        model=model or llm.model,
        base_url=base_url,
        api_key=api_key,
        temperature=llm.temperature,
        max_tokens=llm.max_tokens,
        timeout=llm.timeout_s,
        max_retries=0,
        use_responses_api=False,  # OpenAI-compatible servers speak chat completions
        http_async_client=async_client,
    )


class RateLimiter:
    """At most ``rps`` request starts per second across all tasks of one event loop (0 = unlimited).

    Each caller reserves the next free slot without awaiting in between, so no lock is needed.
    """

    def __init__(self, rps: float):
        self.interval = 1.0 / rps if rps > 0 else 0.0
        self._next = 0.0

    async def acquire(self) -> None:
        if self.interval <= 0:
            return
        now = time.monotonic()
        slot = max(now, self._next)
        self._next = slot + self.interval
        if slot > now:
            await asyncio.sleep(slot - now)


_TRANSIENT_STATUS = {408, 409, 425, 429, 500, 502, 503, 504, 520, 522, 524, 529}


def is_transient(exc: BaseException) -> bool:
    """True for errors a retry can fix: rate limits, timeouts, connection errors, 5xx. Never 400/401/403/404."""
    if isinstance(exc, (openai.APITimeoutError, openai.APIConnectionError)):
        return True  # APITimeoutError is a subclass of APIConnectionError; both are transient
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code in _TRANSIENT_STATUS or exc.status_code >= 500
    if isinstance(exc, (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)):
        return True
    return isinstance(exc, (TimeoutError, ConnectionError))


def is_llm_failure(exc: BaseException) -> bool:
    """An error of the model or its endpoint (unusable answer, failing endpoint, timeout): one section's problem,
    never a reason to stop a whole run. Bugs, toolchain errors and a refused key/model (AccessError, 401/403/404:
    no section could succeed) are not."""
    if isinstance(exc, (AccessError, openai.AuthenticationError, openai.PermissionDeniedError,
                        openai.NotFoundError)):
        return False
    if isinstance(exc, (GenerationError, EndpointError, openai.APIError)):
        return True
    return is_transient(exc)


def retry_after_s(exc: BaseException) -> float | None:
    """Seconds the server asked us to wait (``retry-after-ms`` or ``Retry-After`` header), if it said."""
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    try:
        if ms := headers.get("retry-after-ms"):
            return max(0.0, float(ms) / 1000)
        if s := headers.get("retry-after"):
            return max(0.0, float(s))
    except ValueError:
        return None  # an HTTP date: rare from LLM APIs; fall back to backoff
    return None


@dataclass(frozen=True)
class LLMRetry:
    """doctune's one retry rule for LLM requests. Retried: what ``is_transient`` says a retry can fix (HTTP 408,
    409, 425, 429 and 5xx, timeouts, connection errors), at most ``max_retries`` times; never 400/401/403/404 or an
    unusable answer (those have their own handling). The wait: what the server asked (``Retry-After`` /
    ``retry-after-ms``, capped at ``cap_s``), else a jittered exponential backoff from ``first_s``, doubling,
    capped at ``cap_s``."""

    max_retries: int = 4
    first_s: float = 0.5
    cap_s: float = MAX_BACKOFF_S

    @classmethod
    def of(cls, llm: LLMSettings) -> LLMRetry:
        return cls(max_retries=llm.max_retries)

    def should_retry(self, exc: BaseException, attempt: int) -> bool:
        """Retry after failed attempt number ``attempt`` (0 = the first try)?"""
        return is_transient(exc) and attempt < self.max_retries

    def delay(self, exc: BaseException, attempt: int) -> float:
        """Seconds to wait before the next attempt."""
        asked = retry_after_s(exc)
        if asked is not None:
            return min(asked, self.cap_s)
        return min(self.cap_s, self.first_s * 2**attempt) * (0.5 + random.random() / 2)


def access_error(exc: BaseException, where: str | None, model: str) -> AccessError | None:
    """Turn 401/403/404 into an error a user can act on (the key is never included)."""
    if isinstance(exc, openai.AuthenticationError):
        return AccessError(f"{where} refused the API key (401): set llm.api_key or OPENAI_API_KEY")
    if isinstance(exc, openai.PermissionDeniedError):
        return AccessError(f"{where} denied access (403) to model {model!r}")
    if isinstance(exc, openai.NotFoundError):
        return AccessError(f"{where} has no model {model!r} or no /chat/completions route (404)")
    return None


def raw_text(msg: Any) -> str:
    """What the model actually said: text content, or the (possibly broken) tool-call arguments."""
    if msg is None:
        return ""
    for call in getattr(msg, "tool_calls", None) or []:
        return json.dumps(call.get("args", {}), ensure_ascii=False)
    for call in getattr(msg, "invalid_tool_calls", None) or []:
        return call.get("args") or ""
    content = getattr(msg, "content", "")
    if isinstance(content, list):
        content = "".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in content)
    return content or ""


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


_OUTER_FENCE = re.compile(r"^\s*```[\w-]*\s*\n(?P<body>.*)\n\s*```\s*$", re.S)


def parse_lenient(schema: type[T], text: str) -> T:
    """Parse an answer that is almost right: Markdown fences around the JSON, prose around it, a bare list or
    JSON lines (the original recipe's format) where the schema has a single list field. Raises ValueError."""
    if m := _OUTER_FENCE.match(text):
        text = m.group("body")
    data: Any
    try:
        data = json.loads(text)
    except ValueError:
        start, end = text.find("{"), text.rfind("}")
        try:
            data = json.loads(text[start : end + 1]) if 0 <= start < end else None
        except ValueError:
            data = None
        lines = [ln for ln in text.splitlines() if ln.strip().startswith("{")]
        if (data is None or not isinstance(data, dict)) and lines:
            try:
                data = [json.loads(ln) for ln in lines]
            except ValueError:
                pass
        if data is None:
            raise ValueError("the answer is not valid JSON") from None
    fields = list(schema.model_fields)
    if isinstance(data, list) and len(fields) == 1:
        data = {fields[0]: data}
    try:
        return schema.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        loc = ".".join(str(x) for x in first["loc"]) or "answer"
        raise ValueError(f"the JSON does not have the expected shape ({loc}: {first['msg']})") from None


class StructuredCaller:
    """Structured-output calls to one endpoint with our retry rules. One per run (it holds the rate limiter)."""

    def __init__(self, llm: LLMSettings, *, format_retries: int = 1, limiter: RateLimiter | None = None,
                 in_flight: RequestLimit | None = None, endpoint_verified: bool = False):
        self.llm = llm
        self.retry = LLMRetry.of(llm)
        self.format_retries = format_retries
        self.limiter = limiter or RateLimiter(llm.requests_per_second)
        self.in_flight = in_flight  # requests open at once (None: unbounded); waits and backoff hold no slot
        build_chat_model(llm)  # fail fast on a missing endpoint
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: Any = None
        self._bound: dict[type[BaseModel], Any] = {}
        self.stopped: AccessError | None = None  # set by the first 401/403/404: no request is sent after it
        # The endpoint has answered once (then requests go out concurrently). A preflight probe that got an answer
        # with this key and model (`doctune.agents.endpoint.probe_chat`) proves the same: then no gate at all.
        self._answered = endpoint_verified
        self._first: asyncio.Lock | None = None

    def _runnable(self, schema: type[BaseModel]) -> Any:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # HTTP connections belong to one event loop: new loop, new client
            self._loop, self._bound, self._first = loop, {}, asyncio.Lock()
            self._client = openai.DefaultAsyncHttpxClient(timeout=self.llm.timeout_s)
            self.model = build_chat_model(self.llm, async_client=self._client)
        if schema not in self._bound:
            # A JSON-schema dict, not the pydantic class: then the openai client never parses (and raises on) a
            # malformed answer itself; we validate, and keep the raw text for feedback and error reports.
            self._bound[schema] = self.model.with_structured_output(
                schema.model_json_schema(), method=self.llm.structured_output_method, include_raw=True
            )
        return self._bound[schema]

    async def aclose(self) -> None:
        """Close the HTTP connections of the current event loop's client."""
        if self._client is not None and self._loop is asyncio.get_running_loop():
            await self._client.aclose()
        self._client, self._loop, self._bound = None, None, {}

    async def call(self, schema: type[T], messages: list[BaseMessage], *, shape: str,
                   config: dict[str, Any] | None = None) -> tuple[T, Usage, str]:
        """(parsed answer, usage of all attempts, raw text). Raises GenerationError when the answer stays
        unusable after ``format_retries`` re-asks, EndpointError for 401/403/404, and the transient error
        itself when retries run out (so an outer RetryPolicy may try again later)."""
        usage, msgs = Usage(), list(messages)
        error, text = "", ""
        for _ in range(self.format_retries + 1):
            msg, parsed, error = await self._invoke(schema, msgs, config)
            usage = usage + Usage.of(msg)
            text = raw_text(msg)
            if parsed is not None:
                return parsed, usage, text
            feedback = prompts.render("format_feedback", error=error, shape=shape)
            msgs = [*msgs, AIMessage(content=text or "(empty answer)"), HumanMessage(content=feedback)]
        raise GenerationError(f"unusable answer from {self.llm.model}: {error}", raw=text, usage=usage, reason=error)

    async def _invoke(self, schema: type[T], msgs: list[BaseMessage],
                      config: dict[str, Any] | None) -> tuple[Any, T | None, str]:
        """One logical call with transient retries: (raw message, parsed or None, why it is unusable)."""
        for attempt in range(self.retry.max_retries + 1):
            try:
                async with self.in_flight or contextlib.nullcontext():
                    await self.limiter.acquire()
                    out = await self._send(schema, msgs, config)
            except openai.LengthFinishReasonError as e:  # json_schema: the client refuses truncated answers
                msg = _message_from_completion(e.completion)
                return msg, None, "the answer was cut off at max_tokens (finish_reason=length)"
            except Exception as e:
                if (perm := access_error(e, self.llm.base_url, self.llm.model)) is not None:
                    self.stopped = perm
                    raise perm from None
                if not self.retry.should_retry(e, attempt):
                    raise
                await asyncio.sleep(self.retry.delay(e, attempt))
                continue
            return (out["raw"], *self._check(schema, out))
        raise AssertionError("unreachable")  # pragma: no cover

    async def _send(self, schema: type[T], msgs: list[BaseMessage], config: dict[str, Any] | None) -> Any:
        """One request. Until the endpoint has answered once, requests go out one at a time, so a refused key or
        an unknown model costs one request, not one per concurrent section; after a refusal none is sent."""
        if self.stopped is not None:
            raise AccessError(str(self.stopped))
        runnable = self._runnable(schema)
        if self._answered:
            return await runnable.ainvoke(msgs, config=config)
        assert self._first is not None
        async with self._first:
            if self.stopped is not None:
                raise AccessError(str(self.stopped))
            if not self._answered:  # still the first: send while holding the gate
                try:
                    out = await runnable.ainvoke(msgs, config=config)
                except openai.LengthFinishReasonError:
                    self._answered = True
                    raise
                self._answered = True
                return out
        # The endpoint answered while this request waited at the gate: send it without holding the gate (holding
        # it here serialised every request that had queued behind the first one).
        return await runnable.ainvoke(msgs, config=config)

    def _check(self, schema: type[T], out: dict[str, Any]) -> tuple[T | None, str]:
        msg = out["raw"]
        text = raw_text(msg)
        # LangChain's JSON parser also "rescues" broken JSON by closing what is open (a cut string, a missing
        # field): such an answer is not what the model meant, so its parse counts only when the text is JSON.
        if isinstance(out.get("parsed"), dict) and _is_json(text):
            try:
                return schema.model_validate(out["parsed"]), ""
            except ValidationError:
                pass  # parse_lenient below says what is wrong (and may still rescue a bare list)
        finish = (getattr(msg, "response_metadata", None) or {}).get("finish_reason")
        try:
            return parse_lenient(schema, text), ""
        except ValueError as e:
            if finish == "length":
                return None, "the answer was cut off at max_tokens (finish_reason=length)"
            return None, "the answer was empty" if not text.strip() else str(e)


def _message_from_completion(completion: Any) -> AIMessage:
    choice = completion.choices[0] if completion.choices else None
    content = (choice.message.content or "") if choice else ""
    u = getattr(completion, "usage", None)
    usage = {"input_tokens": u.prompt_tokens, "output_tokens": u.completion_tokens,
             "total_tokens": u.total_tokens} if u else None
    return AIMessage(content=content, usage_metadata=usage, response_metadata={"finish_reason": "length"})
