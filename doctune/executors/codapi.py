"""The Codapi executor: `POST {url}/v1/exec` to a Codapi server (hosted or self-hosted, see docker/codapi/).

Request: `{"sandbox", "command": "run"|"test", "files": {"": code, name: sibling…}, "version"?}`. Response:
`{"id", "ok", "duration" (ms), "stdout", "stderr"}`. Codapi reports a failing step as `ok: false` with stdout
and stderr merged into `stderr` plus ` (exit status N)`; its step timeout as stderr `code execution timeout`;
a busy server as HTTP 429 (honoured here with bounded backoff); its own failures as HTTP 500; a bad request as
400, an unknown sandbox/command as 404, a wrong method as 405. Codapi trims whitespace around the output, so
expected stdout is compared modulo surrounding whitespace (`output_stripped`).

Codapi has no "build only" command and no build options: an `obj` request is sent as `test` (compiling a file
without tests type-checks it), and requests with build options or a non-native target come back unsupported.
"""

from __future__ import annotations

import asyncio
import json
import re
import time

import httpx

from doctune.core.schemas import ZigTestCounts
from doctune.core.settings import ValidatorSettings
from doctune.executors.base import ExecOptions, ExecRequest, ExecResult, Executor

_EXIT = re.compile(r"\s*\((?:exit status (?P<code>-?\d+)|signal: (?P<sig>[^)]*))\)\s*$")
_COMPILE_ERROR = re.compile(
    r"^\S[^\n]*\.zig:\d+:\d+: error: |^error: ld\.lld: |^error: .*(?:undefined symbol)", re.M
)
_RUN_MARKERS = re.compile(
    r"panic: |\.\.\.FAIL \(|\d+ passed; \d+ skipped; \d+ failed|terminated unexpectedly"
)
_TIMEOUT = "code execution timeout"
_SIGNALS = {"killed": 9, "aborted": 6, "segmentation fault": 11, "terminated": 15, "trace/breakpoint trap": 5}
MAX_BUSY_RETRIES = 5


class CodapiExecutor(Executor):
    """Runs Zig code on a Codapi server over HTTP (one AsyncClient, reused)."""

    name = "codapi"
    output_stripped = True

    def __init__(self, settings: ValidatorSettings, *, client: httpx.AsyncClient | None = None) -> None:
        self.settings = settings
        self.url = settings.codapi_url.rstrip("/") + "/v1/exec"
        timeout = settings.compile_timeout_s + settings.run_timeout_s + 30
        self._client = client or httpx.AsyncClient(timeout=httpx.Timeout(timeout, connect=10.0))
        self._own_client = client is None
        self.busy_retries = 0  # 429s seen (for tests and stats)

    def cache_key_parts(self) -> tuple[str, ...]:
        s = self.settings
        return (
            self.name,
            s.codapi_url,
            s.codapi_sandbox,
            s.codapi_version or "",
            s.codapi_run_command,
            s.codapi_test_command,
        )

    def payload(self, req: ExecRequest) -> dict[str, object]:
        command = self.settings.codapi_run_command if req.mode == "run" else self.settings.codapi_test_command
        files = {"": req.code, **dict(req.files)}
        body: dict[str, object] = {
            "sandbox": self.settings.codapi_sandbox,
            "command": command,
            "files": files,
        }
        if self.settings.codapi_version:
            body["version"] = self.settings.codapi_version
        return body

    async def execute(self, req: ExecRequest) -> ExecResult:
        if req.options != ExecOptions() or not req.expect_run:
            return _result(
                "setup", None, "", "Codapi takes no build options (libc, target, -O): not checked", 0.0
            )
        body = self.payload(req)
        t0 = time.monotonic()
        for attempt in range(MAX_BUSY_RETRIES + 1):
            try:
                resp = await self._client.post(
                    self.url, json=body, headers={"Content-Type": "application/json"}
                )
            except httpx.HTTPError as e:
                return _infra(
                    f"Codapi at {self.settings.codapi_url} unreachable: {type(e).__name__}: {e}", t0
                )
            if resp.status_code != 429:
                break
            self.busy_retries += 1
            if attempt < MAX_BUSY_RETRIES:
                await asyncio.sleep(_retry_after(resp, attempt))
        else:
            return _infra(f"Codapi busy (429) after {MAX_BUSY_RETRIES} retries", t0)
        return self._map(resp, req, t0)

    def _map(self, resp: httpx.Response, req: ExecRequest, t0: float) -> ExecResult:
        try:
            data = resp.json()
        except ValueError:
            data = {}
        msg = str(data.get("stderr") or resp.text[:300]).strip()
        if resp.status_code == 400:
            return _result("setup", None, "", f"Codapi rejected the request: {msg}", time.monotonic() - t0)
        if resp.status_code in (404, 405):
            hint = f"sandbox={self.settings.codapi_sandbox!r} command={body_command(self, req)!r}"
            return _infra(
                f"Codapi HTTP {resp.status_code} ({msg}); check validator.codapi_* settings: {hint}", t0
            )
        if resp.status_code != 200:
            return _infra(f"Codapi HTTP {resp.status_code}: {msg}", t0)
        duration = float(data.get("duration") or 0) / 1000.0 or (time.monotonic() - t0)
        stdout, stderr = str(data.get("stdout") or ""), str(data.get("stderr") or "")
        stderr, tests, finished = _tests_line(stderr) if req.mode == "test" else (stderr, None, False)
        if data.get("ok"):
            res = _result("run", 0, stdout, stderr, duration)
            res.tests, res.tests_finished = tests, finished
            return res
        if stderr.strip() == _TIMEOUT:
            res = _result("run", None, stdout, stderr, duration)
            res.timed_out = True
            return res
        res = _failure(stdout, stderr, duration)
        if tests is not None and res.stage == "run":
            res.tests, res.tests_finished = tests, finished
        return res

    async def aclose(self) -> None:
        if self._own_client:
            await self._client.aclose()


_TESTS_LINE = re.compile(r"\n?doctune-tests: (\{[^\n]*\})\s*(?=\((?:exit status|signal:)[^)]*\)\s*$|$)")


def _tests_line(stderr: str) -> tuple[str, ZigTestCounts | None, bool]:
    """The box's test step (docker/codapi/sandboxes/zig/doctune-test-run) ends stderr with the runner's
    counts; its exit status, which Codapi reports, was decided by the runner's report alone."""
    found = list(_TESTS_LINE.finditer(stderr))
    m = found[-1] if found else None
    if m is None:
        return stderr, None, False
    try:
        data = json.loads(m.group(1))
        counts = ZigTestCounts.model_validate(
            {k: data.get(k) for k in ("passed", "failed", "skipped")}
            | {"failed_names": data.get("failed_names") or [], "unfinished": data.get("unfinished")}
        )
    except ValueError:
        return stderr, None, False
    return stderr[: m.start()] + stderr[m.end() :], counts, bool(data.get("finished"))


def body_command(ex: CodapiExecutor, req: ExecRequest) -> str:
    return str(ex.payload(req)["command"])


def _failure(stdout: str, stderr: str, duration: float) -> ExecResult:
    """A failed step: find the exit status Codapi appended and whether it was the compiler that failed."""
    code: int | None = 1
    sig: int | None = None
    m = _EXIT.search(stderr)
    if m:
        stderr = stderr[: m.start()]
        if m.group("code") is not None:
            code = int(m.group("code"))
        else:
            name = m.group("sig").removesuffix(" (core dumped)").strip()
            sig = _SIGNALS.get(name, 0) or None
            code = -sig if sig else None
    compile_failed = bool(_COMPILE_ERROR.search(stderr)) and not _RUN_MARKERS.search(stderr)
    res = _result("compile" if compile_failed else "run", code, stdout, stderr, duration)
    res.signal = sig
    return res


def _retry_after(resp: httpx.Response, attempt: int) -> float:
    try:
        wait = float(resp.headers.get("Retry-After", ""))
    except ValueError:
        wait = 0.25 * 2**attempt
    return max(0.05, min(wait, 5.0))


def _result(stage: str, code: int | None, stdout: str, stderr: str, duration: float) -> ExecResult:
    return ExecResult(stage=stage, exit_code=code, stdout=stdout, stderr=stderr, duration_s=duration)


def _infra(msg: str, t0: float) -> ExecResult:
    return ExecResult(
        stage="setup", exit_code=None, stdout="", stderr="", duration_s=time.monotonic() - t0, infra_error=msg
    )
