"""How the evaluator decides a pass, without Zig: per-test reports over the exit status, the headline only over
hidden checks, cut answers counted, each answer validated alone (a recording executor at the process boundary),
answers files and the OpenAI finish_reason.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from doctune.agents.chat import ChatCompleter
from doctune.agents.validator import Validator
from doctune.core.errors import InputError
from doctune.core.schemas import Verdict, ZigTestCounts
from doctune.core.settings import LLMSettings, ValidatorSettings
from doctune.executors.base import ExecRequest, ExecResult, Executor
from doctune.trainer.answers import read_answers
from doctune.trainer.evaluate import EVAL_VALIDATOR, validate_answers
from doctune.trainer.generate import Generation, OpenAIGenerator, finish_reason, parse_spec
from doctune.trainer.report import write_report
from doctune.trainer.scoring import Judged, judge, report_problem, score
from doctune.trainer.tasks import EvalTask, build_program, marker

from tests.fakes.openai_server import FakeOpenAI, Fault

NONCE = "0123456789abcdef"
HIDDEN = 'test "a" { try std.testing.expect(f() == 2); }\ntest "b" { try std.testing.expect(f() != 3); }\n'
TASK = EvalTask(id="t", prompt="p", mode="test", tests=HIDDEN)
ANSWER = "```zig\npub fn f() u8 { return 2; }\n```"


def _ok(stderr: str = "", tests: ZigTestCounts | None = None) -> Verdict:
    return Verdict(verdict="ok", mode="test", stage="run", exit_code=0, stderr=stderr, tests=tests)


def _all_markers(n: int) -> str:
    return "".join(f"\n{marker(NONCE, k)}\n" for k in range(n))


def test_hidden_tests_are_instrumented_not_the_answers() -> None:
    prog = build_program(TASK, ANSWER.replace("```\n", "") + '\ntest "mine" { }\n```', NONCE)
    assert prog.code is not None and prog.tests == 2 == TASK.hidden_tests
    assert prog.code.count(NONCE) == 2 * 4  # each hidden test: var, errdefer, defer, marker
    for k in range(2):
        assert marker(NONCE, k) in prog.code
    assert 'test "mine"' not in prog.code
    self_task = EvalTask(id="s", prompt="p", mode="test", check="self")
    own = build_program(self_task, '```zig\ntest "x" { }\ntest "y" { }\n```', NONCE)
    assert own.tests == 2 and marker(NONCE, 1) in (own.code or "")


def test_exit_status_alone_never_passes_a_test() -> None:
    prog = build_program(TASK, ANSWER, NONCE)
    assert judge(TASK, prog, _ok(), NONCE).passed is False  # exit 0, no reports: exited early or skipped
    assert judge(TASK, prog, _ok(), None).passed is False
    half = judge(TASK, prog, _ok(stderr=f"\n{marker(NONCE, 0)}\n"), NONCE)
    assert not half.passed and "1/2 tests never returned" in (half.error or "")
    forged = judge(TASK, prog, _ok(stderr=_all_markers(2).replace(NONCE, "f" * 16)), NONCE)
    assert not forged.passed  # markers with another nonce count for nothing
    assert judge(TASK, prog, _ok(stderr=_all_markers(2)), NONCE).passed


@pytest.mark.parametrize(
    ("counts", "passes", "says"),
    [
        (ZigTestCounts(passed=2), True, None),
        (ZigTestCounts(passed=0, skipped=2), False, "2 skipped"),  # the escaped SkipZigTest
        (ZigTestCounts(passed=1, unfinished="b"), False, "ended during test 'b'"),  # std.process.exit(0)
        (ZigTestCounts(passed=1, failed=1, failed_names=["b"]), False, "1 failed (b)"),
        (ZigTestCounts(passed=1), False, "1/2 tests passed"),
        (ZigTestCounts(passed=3), False, "3/2 tests passed"),
    ],
)
def test_runner_counts_decide_when_present(counts: ZigTestCounts, passes: bool, says: str | None) -> None:
    # the runner's report wins over the markers, whatever the output says
    why = report_problem(2, _ok(stderr=_all_markers(2), tests=counts), NONCE)
    assert (why is None) is passes
    if says:
        assert says in (why or "")


def test_failed_verdict_and_refusals_fail() -> None:
    prog = build_program(TASK, ANSWER, NONCE)
    bad = Verdict(verdict="test_failure", mode="test", stage="run", exit_code=1, stderr="expected 2, found 3")
    j = judge(TASK, prog, bad, NONCE)
    assert (j.compiled, j.passed) == (True, False) and "test_failure" in (j.error or "")
    ended = bad.model_copy(update={"tests": ZigTestCounts(passed=0, unfinished="main.test.a")})
    assert "ended during test 'main.test.a'" in (judge(TASK, prog, ended, NONCE).error or "")
    comp = Verdict(verdict="compile_error", mode="test", stage="compile", exit_code=1, stderr="main.zig:1:1: error")
    assert judge(TASK, prog, comp, NONCE).compiled is False
    none = build_program(TASK, "no code here", NONCE)
    assert judge(TASK, none, None, NONCE).error == "no code: the answer has no fenced code block"


def _tasks() -> list[EvalTask]:
    return [
        TASK,
        EvalTask(id="run", prompt="p2", mode="run", expect_stdout="hi\n"),
        EvalTask(id="own", prompt="p3", mode="test", check="self", source="dataset"),
        EvalTask(id="exit0", prompt="p4", mode="run", source="other"),  # no expected stdout: exit status only
    ]


def test_headline_counts_only_hidden_checks_and_cut_answers_are_shown(tmp_path: Path) -> None:
    tasks = _tasks()
    assert [t.checked_by for t in tasks] == ["hidden_tests", "expected_stdout", "own_tests", "exit_status"]
    ok, bad = Judged(compiled=True, passed=True), Judged(compiled=True, passed=False, error="x")
    cut = Judged(compiled=False, passed=False, error="compile_error", truncated=True)
    judged = {"base": [[bad], [ok], [ok], [ok]], "tuned": [[ok], [cut], [ok], [ok]]}
    res = score(tasks, judged, 1, {"base": "b", "tuned": "t"}, max_new_tokens=1536).dump()
    assert res["models"]["base"]["n"] == 2 and res["models"]["base"]["pass@1"] == 0.5
    assert res["models"]["tuned"]["pass@1"] == 0.5 and res["models"]["tuned"]["truncated"] == 1
    assert res["models"]["tuned"]["truncated_tasks"] == ["run"]
    weak = res["weakly_checked"]
    assert "not in the headline" in weak["what"] and weak["models"]["base"]["n"] == 2
    assert weak["models"]["base"]["pass@1"] == 1.0  # reported, but apart
    rows = {r["id"]: r for r in res["tasks"]}
    assert rows["run"]["results"]["tuned"]["truncated"] == 1 and rows["own"]["headline"] is False
    answers = {label: [[Generation(text="```zig\n```", finish_reason="length" if (label, t.id) == ("tuned", "run")
                                   else "stop")] for t in tasks] for label in judged}
    report = write_report(res, tasks, answers, tmp_path).read_text()
    assert "Headline: tasks checked by hidden tests or an expected stdout" in report
    assert "### Not in the headline" in report and "the answer's own tests (not in the headline)" in report
    assert "Budget: 1536 new tokens" in report and "- **tuned**: 1 task(s): `run`" in report
    assert "- **base**: 0 task(s)" in report
    assert "answer cut at the token budget" in report  # the example of the regressed task says so


class RecordingExecutor(Executor):
    """Process-boundary fake: records every request and answers ok with every marker it finds."""

    name = "recording"
    supports_batch = True  # would let the validator batch: eval must not
    log: list[tuple[str, ExecRequest]] = []

    def __init__(self, label: str) -> None:
        self.label = label

    async def execute(self, req: ExecRequest) -> ExecResult:
        RecordingExecutor.log.append((self.label, req))
        await asyncio.sleep(0)
        out = "".join(f"\n{marker(NONCE, k)}\n" for k in range(req.code.count("errdefer doctune_ok_")))
        return ExecResult(stage="run", exit_code=0, stdout="", stderr=out, duration_s=0.0)


def test_each_answer_alone_and_models_one_after_the_other() -> None:
    tasks = [EvalTask(id=f"t{i}", prompt=f"p{i}", mode="test", tests=HIDDEN) for i in range(4)]
    answers = {m: [[Generation(text=f"```zig\n// {m} answer {i}\npub fn f() u8 {{ return 2; }}\n```")]
                   for i in range(4)] for m in ("base", "tuned")}
    RecordingExecutor.log = []
    labels = iter(["base", "tuned"])
    settings = ValidatorSettings(cache=False)
    assert settings.batch_tests and settings.batch_programs  # the defaults batch; eval must not
    judged = asyncio.run(validate_answers(tasks, answers, settings, NONCE,
                                          make_checker=lambda s: Validator(s, RecordingExecutor(next(labels)))))
    log = RecordingExecutor.log
    assert len(log) == 8 and all(j[0].passed for per in judged.values() for j in per)
    for label, req in log:
        ours = [line for line in req.code.splitlines() if " answer " in line]
        assert len(ours) == 1 and ours[0].startswith(f"// {label} answer")  # one answer per process
    assert [label for label, _ in log] == ["base"] * 4 + ["tuned"] * 4
    assert EVAL_VALIDATOR == {"batch_tests": False, "batch_programs": False}


def test_answers_files(tmp_path: Path) -> None:
    f = tmp_path / "a.jsonl"
    f.write_text(json.dumps({"id": "x", "answer": "A"}) + "\n"
                 + json.dumps({"id": "y", "answers": ["B1", "B2"], "finish_reasons": ["stop", "length"]}) + "\n")
    got = read_answers(f)
    assert got["x"][0].text == "A" and [g.truncated for g in got["y"]] == [False, True]
    saved = tmp_path / "answers.jsonl"  # the evaluator's own output, re-scored per label
    saved.write_text(json.dumps({"id": "x", "prompt": "p", "answers": {"base": ["b"], "tuned": ["t"]},
                                 "finish_reasons": {"base": ["length"], "tuned": ["stop"]}}) + "\n")
    assert read_answers(saved, "base")["x"][0].truncated and read_answers(saved, "tuned")["x"][0].text == "t"
    with pytest.raises(InputError, match="name one with answers:FILE#LABEL"):
        read_answers(saved)
    from doctune.trainer.generate import make_generator

    spec = parse_spec("ref", f"answers:{f}")
    with pytest.raises(InputError, match="no answer for 1 task"):
        make_generator(spec, max_new_tokens=16, task_ids=["x", "z"])
    gen = make_generator(spec, max_new_tokens=16, task_ids=["y"])
    assert [g.text for g in gen.generate(["prompt y"], 2)[0]] == ["B1", "B2"]


def test_finish_reason_local_and_openai() -> None:
    assert finish_reason([5, 6, 2, 0, 0], stop_ids=[2], max_new_tokens=5) == "stop"
    assert finish_reason([5, 6, 7, 8, 9], stop_ids=[2], max_new_tokens=5) == "length"
    assert finish_reason([5, 6], stop_ids=[2], max_new_tokens=5) == "stop"  # batch ended (all others stopped)

    def responder(body: dict) -> str | Fault:
        text = "```zig\nconst x = 1;\n```"
        return Fault("truncated", answer=text) if "long" in body["messages"][0]["content"] else text

    with FakeOpenAI(responder, api_key="sk-test") as srv:
        completer = ChatCompleter(LLMSettings(api_key="sk-test"))
        gen = OpenAIGenerator(parse_spec("m", f"openai:fake@{srv.base_url}"), completer.complete)
        try:
            out = gen.generate(["short task", "long task"])
        finally:
            completer.close()
        assert [g[0].finish_reason for g in out] == ["stop", "length"]
        assert srv.chat_requests()[0].body["max_tokens"] == 1536  # the budget fits a real solution
