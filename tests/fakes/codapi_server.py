"""A local Codapi server for tests: Codapi's HTTP protocol, executing code for real with the local executor.

Behaves like Codapi's `/v1/exec` handler (nalgeon/codapi internal/server, internal/sandbox, internal/engine):
- 405 `unsupported method: GET` for anything but POST; 400 `Unsupported Media Type` without
  `content-type: application/json`; 400 for bad JSON and for an empty request (`empty request`);
- 404 `unknown sandbox` / `unknown command`, from the same box/command configs we ship in docker/codapi/;
- a semaphore of `pool_size` slots: a request beyond it gets 429 `busy: try again later` at once;
- each step runs with the step's timeout (Codapi's default 5 s for the run step) → 200, ok false, stderr
  `code execution timeout`; output capped at `noutput` (4 KiB) per stream, the rest silently dropped, then
  whitespace-trimmed; a failing step → ok false, stdout+stderr merged into stderr plus ` (exit status N)`;
- an engine failure → 500 with stderr `internal error`. Error bodies are the Execution JSON
  `{"id", "ok": false, "duration": 0, "stdout": "", "stderr": msg}`.
`force_status` lets a test make the next N requests fail with a given status (e.g. 500) before real work;
`force_drop` makes the next N requests wait the given seconds and then close the connection without an answer
(0 = a dropped connection, more than the client's timeout = a hung server).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from doctune.core.settings import ValidatorSettings
from doctune.executors.base import ExecRequest, ExecResult
from doctune.executors.local import LocalExecutor

CONFIG_DIR = Path(__file__).resolve().parents[2] / "docker" / "codapi"
_MODES = {"build-exe": "run", "test": "test"}


@dataclass
class CodapiConfig:
    pool_size: int
    step_timeout: int
    noutput: int
    commands: dict[str, dict[str, Any]]  # sandbox -> command -> {entry, steps}

    @classmethod
    def load(cls, root: Path = CONFIG_DIR, pool_size: int | None = None) -> CodapiConfig:
        base = json.loads((root / "codapi.json").read_text())
        commands = {
            d.name: json.loads((d / "commands.json").read_text())
            for d in sorted((root / "sandboxes").iterdir())
            if (d / "commands.json").is_file()
        }
        step = base["step"]
        return cls(pool_size or base["pool_size"], step["timeout"], step["noutput"], commands)


@dataclass
class FakeCodapi:
    """The server state; `url` once started."""

    config: CodapiConfig
    zig_cache: Path
    executor_settings: dict[str, Any] = field(default_factory=dict)
    force_status: list[int] = field(default_factory=list)
    force_drop: list[float] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    busy_count: int = 0

    def __post_init__(self) -> None:
        self._slots = threading.BoundedSemaphore(self.config.pool_size)
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeCodapi:
        handler = type("Handler", (_Handler,), {"fake": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def take_drop(self) -> float | None:
        with self._lock:
            return self.force_drop.pop(0) if self.force_drop else None

    # ---- one /v1/exec call --------------------------------------------------------------------------------
    def handle(self, method: str, ctype: str | None, body: bytes) -> tuple[int, dict[str, Any]]:
        if method != "POST":
            return 405, _fail("-", f"unsupported method: {method}")
        if ctype != "application/json":
            return 400, _fail("-", "Unsupported Media Type")
        try:
            req = json.loads(body)
            sandbox, command, files = req["sandbox"], req["command"], dict(req.get("files") or {})
        except (ValueError, KeyError, TypeError) as e:
            return 400, _fail("-", f"invalid request: {e}")
        rid = f"{sandbox}_{command}_{secrets.token_hex(4)}"
        with self._lock:
            self.requests.append(req)
            forced = self.force_status.pop(0) if self.force_status else None
        if sandbox not in self.config.commands:
            return 404, _fail(rid, "unknown sandbox")
        cmd = self.config.commands[sandbox].get(command)
        if cmd is None:
            return 404, _fail(rid, "unknown command")
        if len(files) < 2 and not "".join(files.values()).strip():
            return 400, _fail(rid, "empty request")
        if forced is not None:
            return forced, _fail(rid, "busy: try again later" if forced == 429 else "internal error")
        if not self._slots.acquire(blocking=False):
            with self._lock:
                self.busy_count += 1
            return 429, _fail(rid, "busy: try again later")
        try:
            t0 = time.monotonic()
            out = self._exec(cmd, files)
            out.update(id=rid, duration=int((time.monotonic() - t0) * 1000))
            return 200, out
        except Exception:  # an engine failure, as Codapi reports it
            return 500, _fail(rid, "internal error")
        finally:
            self._slots.release()

    def _exec(self, cmd: dict[str, Any], files: dict[str, str]) -> dict[str, Any]:
        compile_step, run_step = cmd["steps"][0], cmd["steps"][1]
        mode = _MODES[compile_step["command"][1]]
        entry = cmd["entry"]
        code = files.pop("", None) if "" in files else files.pop(entry)
        settings = ValidatorSettings(
            compile_timeout_s=compile_step.get("timeout", self.config.step_timeout),
            run_timeout_s=run_step.get("timeout", self.config.step_timeout),
            output_limit_bytes=max(1024, compile_step.get("noutput", self.config.noutput)),
            **self.executor_settings,
        )
        ex = LocalExecutor(settings, zig_cache=self.zig_cache, kill_on_output=False)
        req = ExecRequest(code=code, mode=mode, files=tuple(files.items()), root_name=entry)  # type: ignore[arg-type]
        res = asyncio.run(ex.execute(req))
        return self._execution(res)

    def _execution(self, res: ExecResult) -> dict[str, Any]:
        n = self.config.noutput
        stdout, stderr = (
            res.stdout.encode()[:n].decode(errors="ignore"),
            res.stderr.encode()[:n].decode(errors="ignore"),
        )
        if res.infra_error:
            raise RuntimeError(res.infra_error)
        if res.timed_out:
            return {"ok": False, "stdout": "", "stderr": "code execution timeout"}
        if res.tests is not None:  # the box's doctune-test-run step: exit status from the runner's report
            counts = {**res.tests.model_dump(), "finished": res.tests_finished}
            stderr = stderr.rstrip() + "\ndoctune-tests: " + json.dumps(counts)
            if res.ok:
                return {"ok": True, "stdout": stdout.strip(), "stderr": stderr.strip()}
            merged = stdout.strip() + stderr.strip()
            return {"ok": False, "stdout": "", "stderr": f"{merged} (exit status 1)"}
        if res.exit_code == 0:
            return {"ok": True, "stdout": stdout.strip(), "stderr": stderr.strip()}
        merged = stdout.strip() + stderr.strip()  # Codapi trims each stream, then joins them
        status = (
            f"signal: {_SIGNAL_NAMES.get(res.signal or 0, 'killed')}"
            if res.signal
            else f"exit status {res.exit_code}"
        )
        return {"ok": False, "stdout": "", "stderr": f"{merged} ({status})" if merged else status}


_SIGNAL_NAMES = {
    6: "aborted (core dumped)",
    9: "killed",
    11: "segmentation fault (core dumped)",
    5: "trace/breakpoint trap",
}


def _fail(rid: str, msg: str) -> dict[str, Any]:
    return {"id": rid, "ok": False, "duration": 0, "stdout": "", "stderr": msg}


class _Handler(BaseHTTPRequestHandler):
    fake: FakeCodapi

    def _serve(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        drop = self.fake.take_drop()
        if drop is not None:  # no answer at all: the client sees a closed connection (or its own timeout)
            time.sleep(drop)
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        status, obj = self.fake.handle(self.command, self.headers.get("content-type"), body)
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_POST = do_GET = do_PUT = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet test output
        pass
