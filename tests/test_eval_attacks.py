"""Eval honesty against answers that attack the verdict, with the real Zig compiler and default settings.

- On the shipped eval set, answers whose functions call ``std.process.exit(0)`` (the binary ends with status 0
  before any hidden test reports) or return an escaped ``error.@"Skip\\x5aigTest"`` (tests skip themselves, past
  the ``SkipZigTest`` text filter), and a model mixing exit-early answers with wrong ones (cross-answer: under
  batching the exiting answer would end the process judging the wrong one) all score 0. All three are evaluated
  together, as base and tuned are. A sample by default, every task under ``slow``.
- The held-out real exercises (``evals/heldout-exercises.jsonl``), answered from a file with their reference
  solutions, score pass@1 = 1.0; with their stubs, 0.0 (a sample by default, all under ``slow``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from doctune.agents.validator import Validator
from doctune.evals import DEFAULT_TASKS, HELDOUT_TASKS
from doctune.trainer.evaluate import evaluate
from doctune.trainer.tasks import EvalTask, load_tasks

pytestmark = pytest.mark.zig

TASKS = load_tasks([DEFAULT_TASKS])
SAMPLE_IDS = ["strings-reverse-alloc", "errors-safe-divide", "generics-ring-buffer", "allocators-dupe-all",
              "sorting-people", "formatting-table-run"]
EXIT = "if (std.time.timestamp() > 0) std.process.exit(0);"
SKIP = 'if (std.time.timestamp() > 0) return error.@"Skip\\x5aigTest";'
_PUB_FN = re.compile(r"\bpub fn \w+\(")


def inject(code: str, stmt: str) -> str:
    """``stmt`` as the first statement of every ``pub fn`` whose body opens at the end of its signature line."""
    out, last = [], 0
    for m in _PUB_FN.finditer(code):
        depth, i = 0, m.end() - 1
        while True:
            depth += {"(": 1, ")": -1}.get(code[i], 0)
            i += 1
            if depth == 0:
                break
        brace = code.find("{\n", i)
        if brace < 0 or "\n" in code[i:brace]:
            continue
        out += [code[last : brace + 2], f"    {stmt}\n"]
        last = brace + 2
    assert last, "no pub fn to attack"
    return "".join(out) + code[last:]


def answers_file(path: Path, tasks: list[EvalTask], code_of: Callable[[int, EvalTask], str]) -> str:
    with path.open("w", encoding="utf-8") as f:
        for i, t in enumerate(tasks):
            f.write(json.dumps({"id": t.id, "answer": "Here you go.\n\n```zig\n" + code_of(i, t) + "```\n"}) + "\n")
    return f"answers:{path}"


def _attacks(tasks: list[EvalTask], tmp_path: Path) -> None:
    models = {
        "exit_early": answers_file(tmp_path / "exit.jsonl", tasks, lambda i, t: inject(t.reference or "", EXIT)),
        "escaped_skip": answers_file(tmp_path / "skip.jsonl", tasks, lambda i, t: inject(t.reference or "", SKIP)),
        "cross": answers_file(tmp_path / "cross.jsonl", tasks,
                              lambda i, t: inject(t.reference or "", EXIT) if i % 2 else t.wrong[0]),
    }
    res = evaluate(tasks, models, tmp_path / "out", make_checker=Validator).dump()
    for label in models:
        score = res["models"][label]
        assert (score["n"], score["passed"], score["pass@1"]) == (len(tasks), 0, 0.0), label
    # where the attack compiled, the tests' own reports failed it (its exit status was 0)
    for label in ("exit_early", "escaped_skip"):
        got = [r["results"][label] for r in res["tasks"] if r["mode"] == "test"]
        errors = [g["error"] for g in got if g["compiled"]]
        assert errors and all(e.startswith("test_failure") for e in errors), errors


def test_attacks_score_zero_sample(tmp_path: Path) -> None:
    _attacks([t for t in TASKS if t.id in SAMPLE_IDS], tmp_path)


@pytest.mark.slow
def test_attacks_score_zero_all(tmp_path: Path) -> None:
    _attacks(TASKS, tmp_path)


HELDOUT = load_tasks([HELDOUT_TASKS])
HELDOUT_SAMPLE = ["exercise-rpn", "exercise-lru", "exercise-inventory"]


def _heldout(tasks: list[EvalTask], tmp_path: Path) -> None:
    models = {
        "reference": answers_file(tmp_path / "ref.jsonl", tasks, lambda i, t: t.reference or ""),
        "stub": answers_file(tmp_path / "stub.jsonl", tasks, lambda i, t: t.stub or ""),
    }
    res = evaluate(tasks, models, tmp_path / "out", make_checker=Validator).dump()  # default settings
    ref, stub = res["models"]["reference"], res["models"]["stub"]
    assert (ref["n"], ref["passed"], ref["pass@1"]) == (len(tasks), len(tasks), 1.0), res["tasks"]
    assert (stub["n"], stub["passed"], stub["pass@1"]) == (len(tasks), 0, 0.0)
    assert res["max_new_tokens"] == 1536 and ref["truncated"] == 0


def test_heldout_set_shape() -> None:
    assert len(HELDOUT) >= 8 and all(t.reference and t.stub and t.headline for t in HELDOUT)
    assert sum(len(t.reference or "") >= 1500 for t in HELDOUT) >= 8  # solutions of realistic size
    assert {t.mode for t in HELDOUT} == {"run", "test"} and set(HELDOUT_SAMPLE) <= {t.id for t in HELDOUT}
    for t in HELDOUT:
        assert t.stub and ("TODO" in t.stub) and t.reference not in t.prompt


def test_heldout_references_pass_stubs_fail_sample(tmp_path: Path) -> None:
    _heldout([t for t in HELDOUT if t.id in HELDOUT_SAMPLE], tmp_path)


@pytest.mark.slow
def test_heldout_references_pass_stubs_fail_all(tmp_path: Path) -> None:
    _heldout(HELDOUT, tmp_path)
