"""A real local OpenAI-compatible HTTP server for tests and benchmarks (a fake at the process boundary).

Defines ``FakeOpenAI`` (stdlib ``ThreadingHTTPServer`` in a background thread, context manager), re-exports
``Fault`` and ``FaultPlan`` (seeded fault injection, from ``faults.py``), ``Recorded`` (one entry of ``history``)
and small responder helpers.

Endpoints: ``POST /v1/chat/completions`` (non-streaming; plain text, ``tools``/``tool_choice`` function calling,
``response_format`` ``json_schema`` and ``json_object``; an answer longer than ``max_completion_tokens`` /
``max_tokens`` is cut there with ``finish_reason: "length"``, as the real API does) and ``GET /v1/models``.
Responses carry ``usage``.

A responder is ``Callable[[request_body], str | dict | Fault]``: a ``str`` is the model's text (or the tool call's
arguments / the JSON content in structured modes), a ``dict`` is serialised as JSON, a ``Fault`` injects a fault
for that request. Responders must answer by matching prompt CONTENT (``Send`` fan-out makes order
nondeterministic); ``FaultPlan`` likewise decides from a hash of the request and its repeat count, not arrival
order, so a run with the same seed sees the same faults whatever the scheduling.

Run as a process (for SIGKILL tests and benchmarks)::

    python -m tests.fakes.openai_server --port 0 --latency 0.5 --responder tests.fakes.zig_answers:responder \
        --fault-rate 0.3 --seed 1 --history-file hist.jsonl

It prints ``BASE_URL=http://127.0.0.1:PORT/v1`` as its first stdout line.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from tests.fakes.background import BackgroundHTTPServer
from tests.fakes.faults import FAULT_KINDS, Fault, FaultPlan, request_key

__all__ = ["FAULT_KINDS", "FakeOpenAI", "Fault", "FaultPlan", "Recorded", "messages_text", "request_key"]


@dataclass
class Recorded:
    """One request the server received and what it answered."""

    path: str
    body: dict[str, Any]
    headers: dict[str, str]  # names lower-cased
    status: int
    fault: str | None
    content: str | None  # the text or tool-call arguments sent back (None for errors)
    t: float  # when the answer was ready (time.time())
    t_start: float | None = None  # when the request had been read


Responder = Callable[[dict[str, Any]], "str | dict[str, Any] | Fault"]


def messages_text(body: dict[str, Any], role: str | None = None) -> str:
    """All message contents (optionally of one role) joined, for content matching."""
    out = []
    for m in body.get("messages", []):
        if role is None or m.get("role") == role:
            c = m.get("content")
            if isinstance(c, list):  # content parts
                c = "".join(p.get("text", "") for p in c if isinstance(p, dict))
            out.append(c or "")
    return "\n".join(out)


def structured_schema(body: dict[str, Any]) -> dict[str, Any] | None:
    """The JSON schema the client asked for (tool parameters or json_schema), if any."""
    tool = _chosen_tool(body)
    if tool is not None:
        return tool.get("parameters")
    rf = body.get("response_format") or {}
    if rf.get("type") == "json_schema":
        return rf.get("json_schema", {}).get("schema")
    return None


def example_from_schema(schema: dict[str, Any], defs: dict[str, Any] | None = None) -> Any:
    """A minimal instance of a JSON schema (default answer when no responder is given)."""
    defs = defs if defs is not None else schema.get("$defs", {})
    if "$ref" in schema:
        return example_from_schema(defs[schema["$ref"].split("/")[-1]], defs)
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema:
            return example_from_schema(schema[key][0], defs)
    if "enum" in schema:
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    t = schema.get("type", "object")
    if t == "object":
        return {k: example_from_schema(v, defs) for k, v in schema.get("properties", {}).items()}
    if t == "array":
        return [example_from_schema(schema.get("items", {}), defs)]
    return {"string": "example", "integer": 0, "number": 0.0, "boolean": False, "null": None}.get(t, "example")


def default_responder(body: dict[str, Any]) -> str | dict[str, Any]:
    schema = structured_schema(body)
    if schema is not None:
        return example_from_schema(schema)
    if (body.get("response_format") or {}).get("type") == "json_object":
        return {"answer": "ok"}
    return "ok"


def _chosen_tool(body: dict[str, Any]) -> dict[str, Any] | None:
    tools = [t.get("function", {}) for t in body.get("tools") or [] if t.get("type") == "function"]
    if not tools:
        return None
    choice = body.get("tool_choice")
    if choice == "none":
        return None
    if isinstance(choice, dict):
        name = choice.get("function", {}).get("name")
        return next((t for t in tools if t.get("name") == name), tools[0])
    return tools[0]  # "auto"/"required"/absent: a structured-output client wants its only tool called


def _tokens(text: str) -> int:
    return max(1, len(text) // 4)  # rough, deterministic


class FakeOpenAI(BackgroundHTTPServer):
    """Threaded OpenAI-compatible server. ``with FakeOpenAI(responder=...) as srv: srv.base_url``."""

    thread_name = "fake-openai"

    def __init__(
        self,
        responder: Responder | None = None,
        *,
        latency: float | Callable[[dict[str, Any]], float] = 0.0,
        max_concurrency: int | None = None,
        faults: FaultPlan | None = None,
        api_key: str | None = None,
        model: str = "fake-model",
        hang_s: float = 600.0,
        host: str = "127.0.0.1",
        port: int = 0,
        history_file: Path | str | None = None,
    ):
        self.responder: Responder = responder or default_responder
        self.latency = latency
        self.max_concurrency = max_concurrency
        self.faults = faults
        self.api_key = api_key
        self.model = model
        self.hang_s = hang_s
        self.history: list[Recorded] = []
        self.history_file = Path(history_file) if history_file else None
        self.in_flight = 0
        self.tokens = {"input": 0, "output": 0}  # the server's own count of the usage it answered with
        self.max_in_flight = 0  # high-water mark of concurrent chat requests
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._bind(host, port, _make_handler(self))

    # -- lifecycle -------------------------------------------------------------------------------------------
    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://{self._httpd.server_address[0]}:{self.port}/v1"

    def _before_stop(self) -> None:
        self._stop.set()  # releases hanging handlers

    # -- inspection ------------------------------------------------------------------------------------------
    def chat_requests(self) -> list[Recorded]:
        return [r for r in self.history if r.path.endswith("/chat/completions")]

    def _record(self, rec: Recorded) -> None:
        with self._lock:
            self.history.append(rec)
            if self.history_file is not None:
                with self.history_file.open("a", encoding="utf-8") as f:
                    f.write(json.dumps(rec.__dict__) + "\n")

    # -- request handling (called from handler threads) ------------------------------------------------------
    def handle_chat(self, body: dict[str, Any]) -> tuple[int, dict[str, str], bytes | None, str | None, str | None]:
        """Return (status, headers, payload or None to drop the connection, fault kind, content)."""
        with self._lock:
            if self.max_concurrency is not None and self.in_flight >= self.max_concurrency:
                return (*_error(429, "concurrency limit reached", "rate_limit_exceeded", 1.0), "busy", None)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            delay = self.latency(body) if callable(self.latency) else self.latency
            if delay > 0 and self._stop.wait(delay):
                return (*_error(503, "server stopping", "server_error"), None, None)
            fault = self.faults.decide(body) if self.faults else None
            answer: str | dict[str, Any] | Fault
            try:
                answer = self.responder(body)
            except Exception as e:  # a broken responder is a test bug: make it loud, as a 500
                return (*_error(500, f"responder raised {type(e).__name__}: {e}", "server_error"), "responder", None)
            if isinstance(answer, Fault):
                fault, answer = answer, answer.answer if answer.answer is not None else default_responder(body)
            return self._answer(body, answer, fault)
        finally:
            with self._lock:
                self.in_flight -= 1

    def _answer(
        self, body: dict[str, Any], answer: str | dict[str, Any], fault: Fault | None
    ) -> tuple[int, dict[str, str], bytes | None, str | None, str | None]:
        kind = fault.kind if fault else None
        if kind == "429":
            return (*_error(429, "rate limit exceeded", "rate_limit_exceeded", fault.retry_after_s), kind, None)
        if kind == "500":
            return (*_error(500, "internal server error", "server_error"), kind, None)
        if kind == "503":
            return (*_error(503, "service unavailable", "server_error"), kind, None)
        if kind in _REFUSALS:
            return (*_error(int(kind), *_REFUSALS[kind]), kind, None)
        if kind == "disconnect":
            return 0, {}, None, kind, None
        if kind == "hang":
            self._stop.wait(self.hang_s)
            return (*_error(504, "hung", "server_error"), kind, None)
        text = answer if isinstance(answer, str) else json.dumps(answer, ensure_ascii=False)
        finish = "stop"
        if kind == "malformed":
            text = text[: max(1, len(text) * 2 // 3)] + ' ,,"}'  # broken JSON that still "finished"
        elif kind == "truncated":
            text, finish = text[: max(1, len(text) // 2)], "length"
        elif kind == "empty":
            text = ""
        elif kind == "garbage":
            text = "Sure! Here are some great Zig questions about this section, I hope they help you learn."
        budget = body.get("max_completion_tokens") or body.get("max_tokens")
        if isinstance(budget, int) and budget > 0 and _tokens(text) > budget:  # cut where the real API stops
            text, finish = text[: 4 * budget], "length"
        return 200, {}, json.dumps(self._completion(body, text, finish)).encode(), kind, text

    def _completion(self, body: dict[str, Any], text: str, finish: str) -> dict[str, Any]:
        tool = _chosen_tool(body)
        message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None}
        if tool is not None and text:
            call_id = "call_" + hashlib.sha256(text.encode()).hexdigest()[:12]
            fn = {"name": tool.get("name", "tool"), "arguments": text}
            message = {"role": "assistant", "content": None, "refusal": None,
                       "tool_calls": [{"id": call_id, "type": "function", "function": fn}]}
            finish = "tool_calls" if finish == "stop" else finish
        prompt_tokens = _tokens(messages_text(body))
        completion_tokens = _tokens(text) if text else 0
        with self._lock:
            self.tokens["input"] += prompt_tokens
            self.tokens["output"] += completion_tokens
        return {
            "id": "chatcmpl-" + request_key(body),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", self.model),
            "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        }

    def models_payload(self) -> bytes:
        data = [{"id": self.model, "object": "model", "created": 0, "owned_by": "doctune-tests"}]
        return json.dumps({"object": "list", "data": data}).encode()


_REFUSALS = {"401": ("Incorrect API key provided", "invalid_api_key"),
             "403": ("You are not allowed to use this model", "permission_denied"),
             "404": ("The model does not exist", "model_not_found")}


def _error(
    status: int, message: str, code: str, retry_after_s: float | None = None
) -> tuple[int, dict[str, str], bytes]:
    headers: dict[str, str] = {}
    if retry_after_s is not None:
        headers["Retry-After"] = str(max(0, int(-(-retry_after_s // 1))))
        headers["retry-after-ms"] = str(int(retry_after_s * 1000))
    etype = "invalid_request_error" if status < 500 and status != 429 else code
    payload = {"error": {"message": message, "type": etype, "param": None, "code": code}}
    return status, headers, json.dumps(payload).encode()


def _make_handler(srv: FakeOpenAI) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, like real servers (needs Content-Length)
        timeout = 60  # idle keep-alive connections do not pin threads forever

        def log_message(self, *args: Any) -> None:  # quiet
            pass

        def _send(self, status: int, headers: dict[str, str], payload: bytes) -> None:
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (timeout): nothing to do

        def _record(self, body: dict[str, Any], status: int, fault: str | None, content: str | None) -> None:
            headers = {k.lower(): v for k, v in self.headers.items()}
            srv._record(Recorded(self.path, body, headers, status, fault, content, time.time(),
                                 getattr(self, "_t_start", None)))

        def _authorised(self) -> bool:
            if srv.api_key is None or self.headers.get("Authorization") == f"Bearer {srv.api_key}":
                return True
            status, headers, payload = _error(401, "Incorrect API key provided", "invalid_api_key")
            self._record({}, 401, "auth", None)  # before the answer: a client that got it must find it recorded
            self._send(status, headers, payload)
            return False

        def do_GET(self) -> None:  # noqa: N802
            if not self._authorised():
                return
            if self.path.rstrip("/").endswith("/models"):
                self._send(200, {}, srv.models_payload())
            else:
                self._send(*_error(404, f"no route {self.path}", "not_found"))

        def do_POST(self) -> None:  # noqa: N802
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self._t_start = time.time()
            if not self._authorised():
                return
            if not self.path.rstrip("/").endswith("/chat/completions"):
                self._send(*_error(404, f"no route {self.path}", "not_found"))
                return
            try:
                body = json.loads(raw or b"{}")
                if not isinstance(body.get("messages"), list):
                    raise ValueError("'messages' must be a list")
            except ValueError as e:
                self._send(*_error(400, f"bad request: {e}", "invalid_request"))
                return
            status, headers, payload, fault, content = srv.handle_chat(body)
            self._record(body, status, fault, content)
            if payload is None:  # "disconnect": drop the connection without an answer
                self.close_connection = True
                self.connection.close()
                return
            self._send(status, headers, payload)

    return Handler


def _load_responder(spec: str) -> Responder:
    module, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module), attr or "responder")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Fake OpenAI-compatible server for doctune tests.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--latency", type=float, default=0.0)
    p.add_argument("--max-concurrency", type=int, default=None)
    p.add_argument("--responder", default=None, help="module:function answering a request body")
    p.add_argument("--fault-rate", type=float, default=0.0)
    p.add_argument("--fault-kinds", default=",".join(FaultPlan.kinds))
    p.add_argument("--max-faults-per-request", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--api-key", default=None)
    p.add_argument("--model", default="fake-model")
    p.add_argument("--history-file", default=None, help="append every request as a JSON line")
    a = p.parse_args(argv)
    plan = FaultPlan(rate=a.fault_rate, kinds=tuple(a.fault_kinds.split(",")), seed=a.seed,
                     max_per_request=a.max_faults_per_request) if a.fault_rate > 0 else None
    srv = FakeOpenAI(_load_responder(a.responder) if a.responder else None, latency=a.latency,
                     max_concurrency=a.max_concurrency, faults=plan, api_key=a.api_key, model=a.model,
                     host=a.host, port=a.port, history_file=a.history_file)
    print(f"BASE_URL={srv.base_url}", flush=True)
    try:
        srv._httpd.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
