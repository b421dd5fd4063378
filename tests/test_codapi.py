"""The Codapi executor against a local server speaking Codapi's protocol and really compiling with Zig."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from doctune.agents.validator import BlockInput, Validator
from doctune.core.schemas import Expect, Verdict
from doctune.core.settings import ValidatorSettings
from doctune.executors.codapi import CodapiExecutor

from tests.fakes.codapi_server import CONFIG_DIR, CodapiConfig, FakeCodapi
from tests.test_validator import FAILING_TEST, HELLO, PANIC, PASSING_TEST, ZIG_CACHE

pytestmark = pytest.mark.zig


@pytest.fixture
def codapi() -> Iterator[FakeCodapi]:
    fake = FakeCodapi(CodapiConfig.load(pool_size=2), zig_cache=ZIG_CACHE).start()
    yield fake
    fake.stop()


def _validator(url: str, **kw: object) -> Validator:
    opts: dict[str, object] = {"cache": False, "concurrency": 2, **kw}
    s = ValidatorSettings(executor="codapi", codapi_url=url, **opts)  # type: ignore[arg-type]
    return Validator(s, CodapiExecutor(s))


def _run_all(url: str, blocks: list[BlockInput], **kw: object) -> list[Verdict]:
    async def go() -> list[Verdict]:
        v = _validator(url, **kw)
        try:
            return await v.validate_many(blocks)
        finally:
            await v.aclose()

    return asyncio.run(go())


def test_verdicts_through_codapi(codapi: FakeCodapi) -> None:
    blocks = [
        BlockInput(id="hello", code=HELLO, expect=Expect(stdout="hi\n")),
        BlockInput(id="bad", code="pub fn main() void {\n    const x: u8 = 300;\n    _ = x;\n}\n"),
        BlockInput(id="panic", code=PANIC, expect=Expect(outcome="runtime_error", error_contains="boom")),
        BlockInput(id="fail", code=FAILING_TEST),
        BlockInput(id="loop", code="pub fn main() void {\n    while (true) {}\n}\n"),
    ]
    got = {b.id: v for b, v in zip(blocks, _run_all(codapi.url, blocks), strict=True)}
    assert (
        got["hello"].verdict == "ok"
        and got["hello"].expected_met is True
        and got["hello"].executor == "codapi"
    )
    assert got["bad"].verdict == "compile_error" and "main.zig:2:19: error" in got["bad"].stderr
    assert got["bad"].stage == "compile"
    assert got["panic"].verdict == "runtime_error" and got["panic"].expected_met is True
    assert got["fail"].verdict == "test_failure"
    assert got["fail"].tests is not None and got["fail"].tests.failed == 1
    assert got["loop"].verdict == "timeout"  # Codapi's 5 s run step timeout
    sent = codapi.requests[0]
    assert sent["sandbox"] == "zig" and sent["command"] in ("run", "test") and "" in sent["files"]


def test_output_is_capped_at_4k(codapi: FakeCodapi) -> None:
    code = (
        'const std = @import("std");\npub fn main() !void {\n    const w = std.io.getStdOut().writer();\n'
        '    for (0..100_000) |_| try w.writeAll("0123456789");\n}\n'
    )
    [v] = _run_all(codapi.url, [BlockInput(id="big", code=code)])
    assert v.verdict == "ok" and 0 < len(v.stdout) <= 4096


def test_429_backpressure_is_retried(codapi: FakeCodapi) -> None:
    codapi._slots = threading.BoundedSemaphore(1)  # one slot: concurrent requests get 429
    blocks = [
        BlockInput(id=f"t{i}", code=PASSING_TEST.replace("1 + 1", f"{i} + 1 - {i} + 1")) for i in range(3)
    ]
    verdicts = _run_all(codapi.url, blocks, concurrency=3)
    assert [v.verdict for v in verdicts] == ["ok"] * 3
    assert codapi.busy_count >= 1


def test_server_errors_are_infra_and_retried(codapi: FakeCodapi) -> None:
    codapi.force_status = [500, 500]
    [ok] = _run_all(codapi.url, [BlockInput(id="a", code=PASSING_TEST)], max_infra_retries=3)
    assert ok.verdict == "ok"
    codapi.force_status = [500] * 10
    [bad] = _run_all(
        codapi.url, [BlockInput(id="b", code=PASSING_TEST, expect=Expect())], max_infra_retries=1
    )
    assert bad.verdict == "infra_error" and bad.expected_met is None and "500" in bad.stderr


def test_unknown_sandbox_empty_code_and_unreachable(codapi: FakeCodapi) -> None:
    [v404] = _run_all(
        codapi.url, [BlockInput(id="x", code=HELLO)], codapi_sandbox="nope", max_infra_retries=0
    )
    assert v404.verdict == "infra_error" and "404" in v404.stderr
    assert "sandbox='nope'" in v404.stderr
    [empty] = _run_all(codapi.url, [BlockInput(id="e", code="   \n", mode="run")], max_infra_retries=0)
    assert empty.verdict == "unsupported" and "empty request" in empty.stderr
    [down] = _run_all("http://127.0.0.1:9", [BlockInput(id="d", code=HELLO)], max_infra_retries=0)
    assert down.verdict == "infra_error" and "unreachable" in down.stderr


def test_fake_speaks_codapi_status_codes(codapi: FakeCodapi) -> None:
    url = codapi.url + "/v1/exec"
    r = httpx.get(url)
    assert (
        r.status_code == 405 and r.json()["stderr"] == "unsupported method: GET" and r.json()["ok"] is False
    )
    r = httpx.post(url, content=b"{}", headers={"content-type": "text/plain"})
    assert r.status_code == 400 and r.json()["stderr"] == "Unsupported Media Type"
    r = httpx.post(url, json={"sandbox": "zig", "command": "nope", "files": {"": "x"}})
    assert r.status_code == 404 and r.json()["stderr"] == "unknown command"


def test_docker_configs_match_executor_settings() -> None:
    """The shipped Codapi configs define what CodapiExecutor sends (sandbox, commands, entry file)."""
    s = ValidatorSettings()
    sandbox = CONFIG_DIR / "sandboxes" / s.codapi_sandbox
    commands = json.loads((sandbox / "commands.json").read_text())
    box = json.loads((sandbox / "box.json").read_text())
    assert {s.codapi_run_command, s.codapi_test_command} <= set(commands)
    ex = CodapiExecutor(s)
    for mode, zig_mode in (("run", "build-exe"), ("test", "test")):
        from doctune.executors.base import ExecRequest

        body = ex.payload(ExecRequest(code="x", mode=mode))  # type: ignore[arg-type]
        cmd = commands[str(body["command"])]
        assert cmd["entry"] == "main.zig" and body["files"] == {"": "x"}
        compile_step, run_step = cmd["steps"]
        assert compile_step["command"] == ["zig-step", zig_mode, "main.zig"] and compile_step["box"] == "zig"
        assert run_step["command"][-1] == "/sandbox/main"
    assert box["image"] == "codapi/zig" and box["volume"] == "%s:/sandbox"
    step_script = (sandbox / "zig-step").read_text()
    assert "-femit-bin=/sandbox/main" in step_script and "--test-no-exec" in step_script
    base = json.loads((CONFIG_DIR / "codapi.json").read_text())
    assert (
        base["step"]["timeout"] == 5 and base["step"]["noutput"] == 4096 and base["box"]["network"] == "none"
    )
    dockerfile = (CONFIG_DIR / "Dockerfile").read_text()
    assert "sha256sum -c" in dockerfile and "CODAPI_SHA256" in dockerfile
    assert "--require-hashes" in (sandbox / "Dockerfile").read_text()
    assert Path(sandbox / "requirements.txt").read_text().count("--hash=sha256:") == 1


def test_tests_are_judged_by_the_runner_through_codapi(codapi: FakeCodapi) -> None:
    """The box's test step judges by doctune's runner too: exit(0) after a failing test is no pass."""
    code = (
        'const std = @import("std");\ntest "fails" {\n    try std.testing.expect(false);\n}\n'
        'test "exits" {\n    std.process.exit(0);\n}\n'
    )
    (v,) = _run_all(codapi.url, [BlockInput(id="x", code=code)])
    assert v.verdict == "test_failure" and v.tests is not None
    assert v.tests.failed_names == ["main.test.fails"] and v.tests.unfinished == "main.test.exits"
    assert "doctune-tests:" not in v.stderr


def test_box_ships_doctunes_test_runner() -> None:
    """The Codapi box's copy of the runner is the executor's (the box cannot reach the package)."""
    from doctune.executors.channels import TEST_RUNNER

    box = CONFIG_DIR / "sandboxes" / "zig"
    assert (box / "test_runner.zig").read_bytes() == TEST_RUNNER.read_bytes()
    assert "--test-runner /opt/doctune/test_runner.zig" in (box / "zig-step").read_text()
    test_cmd = json.loads((box / "commands.json").read_text())["test"]
    assert test_cmd["steps"][1]["command"][0] == "doctune-test-run"
