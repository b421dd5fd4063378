"""Plain chat completions (one user prompt -> text and finish reason) under doctune's one retry rule.

Defines ``ChatCompleter``: the evaluator's answers from OpenAI-compatible endpoints (``openai:MODEL@URL`` specs).
The evaluator (``doctune.trainer``) stands on the core floor and never imports this module: the app layer
(``doctune eval``) builds a ``ChatCompleter`` from ``settings.llm`` and hands its ``complete`` method over. So the
key, the timeout and the retries come from the settings like every other LLM request's: transient errors (429,
5xx, timeouts) are retried with ``LLMRetry`` (Retry-After or jittered exponential backoff), a refused key or
unknown model (401/403/404) is an ``AccessError`` at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import openai
from pydantic import SecretStr

from doctune.agents.llm import LLMRetry, access_error
from doctune.core.errors import EndpointError
from doctune.core.settings import LLMSettings


class ChatCompleter:
    """Synchronous chat completions to any endpoint with the key, timeout and retry rule of ``settings.llm`` (the
    evaluator generates in a worker thread). One HTTP client per base URL; ``close()`` releases them."""

    def __init__(self, llm: LLMSettings, *, retry: LLMRetry | None = None,
                 sleep: Callable[[float], None] = time.sleep):
        self.llm = llm
        self.retry = retry or LLMRetry.of(llm)
        self.sleep = sleep
        self._clients: dict[str, openai.OpenAI] = {}

    def _client(self, base_url: str) -> openai.OpenAI:
        if base_url not in self._clients:
            # Local servers accept any key, but the client insists on one; retries are ours (max_retries=0).
            key = self.llm.api_key or SecretStr("not-needed")
            self._clients[base_url] = openai.OpenAI(base_url=base_url, api_key=key.get_secret_value(),
                                                    timeout=self.llm.timeout_s, max_retries=0)
        return self._clients[base_url]

    def complete(self, prompt: str, *, model: str, base_url: str, temperature: float,
                 max_tokens: int) -> tuple[str, str]:
        """(answer text, finish reason). Raises AccessError for 401/403/404 (no retry), EndpointError when the
        endpoint still fails after the retries or answers without a choice."""
        client = self._client(base_url)
        for attempt in range(self.retry.max_retries + 1):
            try:
                resp = client.chat.completions.create(
                    model=model, messages=[{"role": "user", "content": prompt}], temperature=temperature,
                    max_tokens=max_tokens,
                )
            except openai.APIError as e:
                if (perm := access_error(e, base_url, model)) is not None:
                    raise perm from None
                if not self.retry.should_retry(e, attempt):
                    raise EndpointError(f"{base_url}: no answer after {attempt + 1} tries ({_describe(e)})") from None
                self.sleep(self.retry.delay(e, attempt))
                continue
            return _answer(resp, base_url)
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()


def _answer(resp: Any, base_url: str) -> tuple[str, str]:
    choice = resp.choices[0] if getattr(resp, "choices", None) else None
    if choice is None or choice.message is None:
        raise EndpointError(f"{base_url}: an answer without a choice")
    return choice.message.content or "", str(choice.finish_reason or "stop")


def _describe(e: openai.APIError) -> str:
    status = getattr(e, "status_code", None)
    return f"HTTP {status}" if status is not None else type(e).__name__
