"""Evaluator honesty, end to end over HTTP: a local OpenAI-compatible server answers the tasks, the evaluator
(``doctune eval`` code path) extracts the code, appends hidden tests and validates with the real Zig compiler.

Reference answers must score pass@1 = 1.0, wrong variants 0.0; an answer without code, or with only its own
passing tests, fails. A sample of the shipped tasks by default, all of them under ``slow``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from doctune.agents.chat import ChatCompleter
from doctune.agents.validator import Validator
from doctune.core.settings import LLMSettings
from doctune.evals import DEFAULT_TASKS
from doctune.trainer.evaluate import evaluate
from doctune.trainer.tasks import EvalTask, load_tasks

from tests.fakes.openai_server import FakeOpenAI, messages_text

pytestmark = pytest.mark.zig

TASKS = load_tasks([DEFAULT_TASKS])
SAMPLE_IDS = ["strings-count-words", "errors-safe-divide", "formatting-table-run", "generics-ring-buffer",
              "allocators-dupe-all", "control-switch-grade", "unions-expr-eval", "sorting-people"]
PNG = b"\x89PNG\r\n\x1a\n"


def _by_prompt(tasks: list[EvalTask]) -> dict[str, EvalTask]:
    return {t.prompt: t for t in tasks}


def _run(tasks: list[EvalTask], responders: dict, out: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    completer = ChatCompleter(LLMSettings(api_key="sk-test"))  # `doctune eval` builds it from settings.llm
    servers = {label: FakeOpenAI(fn, api_key="sk-test") for label, fn in responders.items()}
    for s in servers.values():
        s.start()
    try:
        models = {label: f"openai:fake@{s.base_url}" for label, s in servers.items()}
        res = evaluate(tasks, models, out, make_checker=Validator, complete=completer.complete).dump()
        # the models were asked the prompts only: no hidden test, reference or wrong variant went over the wire
        for s in servers.values():
            for req in s.chat_requests():
                sent = json.dumps(req.body)
                task = _by_prompt(tasks)[messages_text(req.body, "user")]
                assert (task.tests or "@@") not in sent and task.reference not in sent
        return res
    finally:
        completer.close()
        for s in servers.values():
            s.stop()


def _honesty(tasks: list[EvalTask], out: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lookup = _by_prompt(tasks)

    def reference(body: dict) -> str:
        return "Sure.\n\n```zig\n" + lookup[messages_text(body, "user")].reference + "```\n\nDone."

    def wrong(body: dict) -> str:
        return "```zig\n" + lookup[messages_text(body, "user")].wrong[0] + "```"

    res = _run(tasks, {"reference": reference, "wrong": wrong}, out, monkeypatch)
    ref, bad = res["models"]["reference"], res["models"]["wrong"]
    assert (ref["n"], ref["passed"], ref["pass@1"], ref["compile_rate"]) == (len(tasks), len(tasks), 1.0, 1.0)
    assert (bad["passed"], bad["pass@1"]) == (0, 0.0)
    for row in res["tasks"]:
        assert row["results"]["wrong"]["error"]  # every failure says why

    # the outputs a person reads
    saved = json.loads((out / "results.json").read_text())
    assert saved["models"]["reference"]["pass@1"] == 1.0 and len(saved["tasks"]) == len(tasks)
    assert {"compiled", "passed"} <= set(saved["tasks"][0]["results"]["wrong"])
    report = (out / "report.md").read_text()
    assert "| reference |" in report and "## Regressed (wrong vs reference)" in report
    for png in ("loss.png", "pass_rates.png"):
        assert (out / png).read_bytes()[:8] == PNG


def test_references_pass_wrong_variants_fail_sample(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _honesty([t for t in TASKS if t.id in SAMPLE_IDS], tmp_path, monkeypatch)


@pytest.mark.slow
def test_references_pass_wrong_variants_fail_all(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _honesty(TASKS, tmp_path, monkeypatch)


def test_no_code_and_self_made_tests_fail(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    task = next(t for t in TASKS if t.id == "slices-sum")
    answers = {
        "no_code": "To sum a slice, loop over it and add each element to an i64 accumulator.",
        # defines no `sum` and brings its own passing test
        "own_tests_only": '```zig\nconst std = @import("std");\ntest "sum works" {\n    try std.testing.expect(1 + 1 == 2);\n}\n```',
        # a wrong `sum` with a test that agrees with it
        "wrong_with_own_test": '```zig\nconst std = @import("std");\npub fn sum(xs: []const i64) i64 {\n'
                               '    _ = xs;\n    return 0;\n}\ntest "sum" {\n'
                               '    try std.testing.expectEqual(@as(i64, 0), sum(&[_]i64{ 1, 2 }));\n}\n```',
        # a correct `sum` whose own test is failing: own tests are ignored, the hidden ones decide
        "right_with_bad_test": '```zig\nconst std = @import("std");\npub fn sum(xs: []const i64) i64 {\n'
                               '    var t: i64 = 0;\n    for (xs) |x| t += x;\n    return t;\n}\n'
                               'test "bad" {\n    try std.testing.expect(false);\n}\n```',
    }
    res = _run([task], {label: (lambda body, a=a: a) for label, a in answers.items()}, tmp_path, monkeypatch)
    got = {label: r["passed"] for label, r in res["tasks"][0]["results"].items()}
    assert got == {"no_code": False, "own_tests_only": False, "wrong_with_own_test": False,
                   "right_with_bad_test": True}
    assert "no code" in res["tasks"][0]["results"]["no_code"]["error"]
    assert res["tasks"][0]["results"]["own_tests_only"]["compiled"] is False  # `sum` is undefined
