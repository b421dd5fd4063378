"""A real local HTTP server that answers like the LangSmith API and records everything it receives.

Defines ``FakeLangSmith`` (stdlib ``ThreadingHTTPServer`` in a background thread, context manager) and
``Received`` (one request: method, path, lower-cased headers, the decoded body bytes and, for multipart bodies,
the parts). Point a traced process at it with ``LANGSMITH_ENDPOINT=srv.endpoint``.

Routes (all answer 200/202 with JSON, like LangSmith): ``GET /info`` (with ``zstd=True`` it announces
``zstd_compression_enabled``, so the client sends zstd-compressed multipart, its default against the real
service; else plain multipart), ``POST /runs/multipart``, ``POST /runs/batch``, ``POST /runs``,
``PATCH /runs/{id}``; any other GET/POST/PATCH answers ``{}`` and is recorded. ``gzip``/``zstd``
Content-Encoding is decoded before recording, so ``all_text()`` is what was really sent.

``runs()`` merges every run create/update it saw (multipart ``post.<id>``/``patch.<id>`` parts and their
``.inputs``/``.outputs``/``.extra``/... parts, batch ``post``/``patch`` lists, single POST/PATCH) into one dict
per run id: ``{"id", "name", "tags", "extra": {"metadata": ...}, "inputs", "outputs", ...}``.

    with FakeLangSmith() as ls:
        env["LANGSMITH_ENDPOINT"] = ls.endpoint
        ...
        ls.wait_for(lambda: any(r.get("name") == "split" for r in ls.runs().values()))
        assert "sk-secret" not in ls.all_text()
"""

from __future__ import annotations

import gzip
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.fakes.background import BackgroundHTTPServer

INFO = {
    "version": "0.10.0",
    "license_expiration_time": None,
    "batch_ingest_config": {
        "use_multipart_endpoint": True,
        "scale_up_qsize_trigger": 1000,
        "scale_up_nthreads_limit": 16,
        "scale_down_nempty_trigger": 4,
        "size_limit": 100,
        "size_limit_bytes": 20971520,
    },
    "instance_flags": {},
}


@dataclass
class Received:
    """One request the fake received (body already decompressed)."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    parts: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)  # multipart: (name, headers, data)
    t: float = 0.0

    def json(self) -> Any:
        return json.loads(self.body or b"null")


def _decode(body: bytes, encoding: str) -> bytes:
    encoding = encoding.lower().strip()
    if encoding == "gzip":
        return gzip.decompress(body)
    if encoding == "zstd":
        import zstandard

        return zstandard.ZstdDecompressor().decompressobj().decompress(body)
    return body


def _multipart(content_type: str, body: bytes) -> list[tuple[str, dict[str, str], bytes]]:
    msg = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body)
    parts = []
    for part in msg.iter_parts():
        name = part.get_param("name", header="content-disposition") or ""
        headers = {k.lower(): str(v) for k, v in part.items()}
        parts.append((str(name), headers, part.get_payload(decode=True) or b""))
    return parts


class FakeLangSmith(BackgroundHTTPServer):
    """Threaded LangSmith look-alike. ``with FakeLangSmith() as ls: ls.endpoint``."""

    thread_name = "fake-langsmith"

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, zstd: bool = False):
        self.info = {**INFO, "instance_flags": {"zstd_compression_enabled": zstd}}
        self.requests: list[Received] = []
        self._lock = threading.Lock()
        self._bind(host, port, _make_handler(self))

    @property
    def endpoint(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def record(self, rec: Received) -> None:
        with self._lock:
            self.requests.append(rec)

    # -- inspection ------------------------------------------------------------------------------------------
    def all_text(self) -> str:
        """Every header and (decoded) body received, as one string: search it for secrets."""
        with self._lock:
            reqs = list(self.requests)
        chunks = []
        for r in reqs:
            chunks.append(f"{r.method} {r.path}\n" + "\n".join(f"{k}: {v}" for k, v in r.headers.items()))
            chunks.append(r.body.decode("utf-8", errors="replace"))
            chunks.extend(data.decode("utf-8", errors="replace") for _, _, data in r.parts)
        return "\n".join(chunks)

    def bodies_text(self) -> str:
        """Only the posted bodies (decoded), without headers: the place where no secret may ever appear (the
        LangSmith key legitimately travels in the x-api-key header)."""
        with self._lock:
            reqs = list(self.requests)
        out = [r.body.decode("utf-8", errors="replace") for r in reqs]
        out += [d.decode("utf-8", errors="replace") for r in reqs for _, _, d in r.parts]
        return "\n".join(out)

    def runs(self) -> dict[str, dict[str, Any]]:
        """Every run seen, creates and updates merged, by run id."""
        with self._lock:
            reqs = list(self.requests)
        runs: dict[str, dict[str, Any]] = {}

        def merge(run: dict[str, Any]) -> None:
            if isinstance(run, dict) and run.get("id"):
                runs.setdefault(str(run["id"]), {}).update({k: v for k, v in run.items() if v is not None})

        for r in reqs:
            if r.parts:
                for name, _, data in r.parts:
                    bits = name.split(".")
                    if len(bits) < 2 or bits[0] not in ("post", "patch"):
                        continue
                    try:
                        value = json.loads(data or b"null")
                    except ValueError:
                        continue
                    if len(bits) == 2:
                        merge({**value, "id": bits[1]} if isinstance(value, dict) else {"id": bits[1]})
                    else:
                        merge({"id": bits[1], bits[2]: value})
                continue
            try:
                payload = r.json()
            except ValueError:
                continue
            if r.path.rstrip("/").endswith("/runs/batch") and isinstance(payload, dict):
                for run in (payload.get("post") or []) + (payload.get("patch") or []):
                    merge(run)
            elif "/runs" in r.path and isinstance(payload, dict):
                rid = r.path.rstrip("/").rsplit("/", 1)[-1] if r.method == "PATCH" else payload.get("id")
                merge({**payload, "id": rid})
        return runs

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 30.0, poll: float = 0.1) -> bool:
        """Poll until ``predicate()`` is true (the client posts from a background thread); False on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(poll)
        return predicate()


def _make_handler(srv: FakeLangSmith) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = 60

        def log_message(self, *args: Any) -> None:  # quiet
            pass

        def _reply(self, status: int, payload: Any) -> None:
            data = json.dumps(payload).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass

        def _receive(self) -> Received:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            headers = {k.lower(): v for k, v in self.headers.items()}
            try:
                body = _decode(raw, headers.get("content-encoding", ""))
            except Exception:  # keep what came: a test searching it must still see the bytes
                body = raw
            ctype = headers.get("content-type", "")
            parts = _multipart(ctype, body) if ctype.startswith("multipart/") else []
            rec = Received(self.command, self.path, headers, body, parts, time.time())
            srv.record(rec)
            return rec

        def do_GET(self) -> None:  # noqa: N802
            self._receive()
            path = self.path.split("?", 1)[0].rstrip("/")
            self._reply(200, srv.info if path.endswith("/info") else {})

        def do_POST(self) -> None:  # noqa: N802
            self._receive()
            path = self.path.split("?", 1)[0].rstrip("/")
            if path.endswith("/runs/multipart") or path.endswith("/runs/batch"):
                self._reply(202, {})
            else:
                self._reply(200, {})

        def do_PATCH(self) -> None:  # noqa: N802
            self._receive()
            self._reply(200, {})

    return Handler
