"""The GRPO reward: the Zig code of a completion, judged by the validator against the row's checks.

The trainer floor stands on core only, so it never imports the validator agent: the caller (the CLI) injects a
``ValidateMany`` — an async function taking ``CodeCheck``s and returning one ``Verdict`` each, in input order
(the validator's ``check_many``, passed in by the graph or the CLI: the trainer never imports the validator).

What a row is checked against (``reward_tasks``), strongest first:
- ``hidden``: the row's hidden tests (``tests``: Zig ``test`` blocks appended to the answer, whose own tests are
  removed) or its exact expected stdout (``expect_stdout``);
- ``reference``: no hidden checks, the reference answer is a program: the answer must print what the reference
  prints (run once through the validator before training; rows whose reference fails are dropped);
- ``self``: the reference is made of tests: the answer must bring tests and they must pass;
- ``compile``: the reference is a fragment: the answer's code is validated as it is (type-checked, or run/tested
  when it has a ``main``/tests).
Rows without Zig code in the reference (conceptual answers) have no verifiable reward and are left out.
How an answer becomes the validated program is the evaluator's rule (``doctune.trainer.tasks.build_program``).

Reward per completion: 1.0 passes; 0.5 compiles but fails (runtime error, failed test, wrong output, timeout);
0.0 no code, a refused program or a compile error; ``None`` (no reward: TRL leaves the completion out of the
group baseline and gives it no advantage) when the validator's infrastructure failed. Verdicts are cached in
memory by program (the validator also caches on disk) and each call validates its batch in one ``validate_many``.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, Field

from doctune.core.errors import ToolchainError
from doctune.core.schemas import CodeCheck, Expect, ValidateMany, Verdict, sha256
from doctune.trainer.data import conversation
from doctune.trainer.tasks import MAIN_DECL, TEST_DECL, EvalTask, extract_code, find_test_blocks

REWARD_PASSED, REWARD_COMPILED, REWARD_FAILED = 1.0, 0.5, 0.0
_NOT_COMPILED = ("compile_error", "unsupported")
T = TypeVar("T")


class RewardTask(BaseModel):
    """What one RL row's completions are checked against (stored as dataset columns next to ``prompt``)."""

    task_id: str
    check: Literal["hidden", "reference", "self", "compile"]
    mode: Literal["run", "test", "auto"]
    tests: str | None = Field(None, description="Hidden Zig test blocks (test mode, check 'hidden').")
    expect_stdout: str | None = Field(None, description="Exact stdout required (run mode).")


def classify_row(row: dict[str, Any], index: int) -> tuple[list[dict[str, str]], RewardTask, str | None] | None:
    """(prompt messages, task, reference code) for a row, or None when nothing about it can be verified."""
    msgs = conversation(row)
    last = max(i for i, m in enumerate(msgs) if m["role"] == "assistant")
    prompt, reference = msgs[:last], msgs[last]["content"]
    if not prompt:
        return None
    tid = str(row.get("id") or index)
    tests, stdout = row.get("tests"), row.get("expect_stdout")
    if tests and TEST_DECL.search(tests):
        return prompt, RewardTask(task_id=tid, check="hidden", mode="test", tests=tests), None
    if stdout is not None:
        return prompt, RewardTask(task_id=tid, check="hidden", mode="run", expect_stdout=stdout), None
    code = extract_code(reference)
    if code is None:
        return None
    verdict = row.get("verdict")
    ref_mode = row.get("mode") or (verdict.get("mode") if isinstance(verdict, dict) else None)
    if MAIN_DECL.search(code) and ref_mode in (None, "run"):
        return prompt, RewardTask(task_id=tid, check="reference", mode="run"), code
    if find_test_blocks(code) and ref_mode in (None, "test"):
        return prompt, RewardTask(task_id=tid, check="self", mode="test"), None
    return prompt, RewardTask(task_id=tid, check="compile", mode="auto"), None


async def reward_tasks(rows: Sequence[dict[str, Any]], validate_many: ValidateMany) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """RL rows (``prompt`` + the ``RewardTask`` fields) and counts by check (``skipped``: no verifiable code,
    ``reference_failed``: a program reference that does not run). Program references run in one batch."""
    found = [(c, i) for i, r in enumerate(rows) if (c := classify_row(r, i)) is not None]
    refs = [(k, ref) for k, ((_, _, ref), _) in enumerate(found) if ref is not None]
    verdicts = await validate_many([CodeCheck(id=f"reference/{k}", code=ref, mode="run") for k, ref in refs])
    stdout = {k: v.stdout for (k, _), v in zip(refs, verdicts, strict=True) if v.passed}
    infra = sum(v.verdict == "infra_error" for v in verdicts)
    if infra:
        raise ToolchainError(f"the validator's infrastructure failed on {infra} reference program(s); retry")
    out: list[dict[str, Any]] = []
    counts = {"skipped": len(rows) - len(found), "reference_failed": 0}
    for k, ((prompt, task, ref), _) in enumerate(found):
        if ref is not None:
            if k not in stdout:
                counts["reference_failed"] += 1
                continue
            task = task.model_copy(update={"expect_stdout": stdout[k]})
        counts[task.check] = counts.get(task.check, 0) + 1
        out.append({"prompt": prompt, **task.model_dump()})
    return out, counts


def program_for(task: RewardTask, answer: str) -> CodeCheck | None:
    """The program validated for one completion (the evaluator's honesty rules), or None when there is none."""
    if task.check == "compile":
        code = extract_code(answer)
        return None if code is None else CodeCheck(id=task.task_id, code=code, mode="auto")
    from doctune.trainer.tasks import build_program

    mode: Literal["run", "test"] = "run" if task.mode == "run" else "test"
    eval_task = EvalTask(id=task.task_id, prompt="", mode=mode, tests=task.tests, expect_stdout=task.expect_stdout,
                         check="self" if task.check == "self" else "hidden")
    prog = build_program(eval_task, answer)
    if prog.code is None:
        return None
    expect = Expect(stdout=task.expect_stdout) if mode == "run" else Expect()
    return CodeCheck(id=task.task_id, code=prog.code, mode=mode, expect=expect)


def score(verdict: Verdict) -> float | None:
    """The reward of one validated program (None: the infrastructure failed, not the code)."""
    if verdict.verdict == "infra_error":
        return None
    if verdict.passed:
        return REWARD_PASSED
    compiled = verdict.verdict not in _NOT_COMPILED and verdict.stage != "compile"
    return REWARD_COMPILED if compiled else REWARD_FAILED


def completion_text(completion: Any) -> str:
    """A completion as TRL passes it: a string, or a list of chat messages (the assistant's content)."""
    if isinstance(completion, str):
        return completion
    return "".join(m.get("content") or "" for m in completion if m.get("role", "assistant") == "assistant")


class LoopThread:
    """One event loop on a daemon thread: every validation (references, rewards, closing) runs on it, so the
    validator's loop-bound resources (semaphores, HTTP clients) always see the same loop."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="doctune-reward", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        if not self.thread.is_alive():
            self.loop.close()


class ValidatorReward:
    """TRL reward function (sync): validates a step's completions in one batch, logs to ``rewards.jsonl``."""

    __name__ = "zig_validator"  # TRL names reward functions after this (metrics: rewards/zig_validator/mean)

    def __init__(self, validate_many: ValidateMany, log_path: Path, loop: LoopThread, *,
                 cache_size: int = 8192, timeout_s: float = 3600.0) -> None:
        self.validate_many, self.loop, self.log_path = validate_many, loop, log_path
        self.cache: OrderedDict[str, Verdict] = OrderedDict()
        self.cache_size, self.timeout_s = cache_size, timeout_s
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_path.write_text("")
        self.calls = 0

    def __call__(self, prompts: list[Any], completions: list[Any], **kw: Any) -> list[float | None]:
        t0 = time.monotonic()
        tasks = [RewardTask(**{f: kw[f][i] for f in RewardTask.model_fields}) for i in range(len(completions))]
        checks = [program_for(t, completion_text(c)) for t, c in zip(tasks, completions, strict=True)]
        keys = [None if c is None else _key(c) for c in checks]
        todo: dict[str, CodeCheck] = {}
        for c, k in zip(checks, keys, strict=True):
            if c is not None and k is not None and k not in self.cache and k not in todo:
                todo[k] = c
        fresh: dict[str, Verdict] = {}
        if todo:
            verdicts: list[Verdict] = self.loop.run(self.validate_many(list(todo.values())), timeout=self.timeout_s)
            fresh = dict(zip(todo, verdicts, strict=True))
            for k, v in fresh.items():
                self._remember(k, v)
        got = [None if k is None else fresh.get(k) or self.cache[k] for k in keys]
        rewards = [REWARD_FAILED if v is None else score(v) for v in got]
        self.calls += 1
        self._log(kw.get("trainer_state"), rewards, got, validated=len(todo), seconds=time.monotonic() - t0)
        if rewards and all(r is None for r in rewards):
            raise ToolchainError("the validator's infrastructure failed on every completion of a GRPO step "
                                 f"(see {self.log_path}); check the sandbox / Codapi and retry")
        return rewards

    def _remember(self, key: str, verdict: Verdict) -> None:
        if verdict.verdict == "infra_error":
            return  # never cache a fault of the infrastructure
        self.cache[key] = verdict
        self.cache.move_to_end(key)
        while len(self.cache) > self.cache_size:
            self.cache.popitem(last=False)

    def _log(self, state: Any, rewards: list[float | None], verdicts: list[Verdict | None], *, validated: int,
             seconds: float) -> None:
        scored = [r for r in rewards if r is not None]
        rec = {
            "step": int(getattr(state, "global_step", 0) or 0) + 1, "call": self.calls, "n": len(rewards),
            "mean": round(sum(scored) / len(scored), 4) if scored else None,
            "passed": sum(r == REWARD_PASSED for r in rewards),
            "compiled_failed": sum(r == REWARD_COMPILED for r in rewards),
            "no_code": sum(v is None for v in verdicts), "infra_error": sum(r is None for r in rewards),
            "validated": validated, "cached": sum(v is not None for v in verdicts) - validated,
            "rewards": rewards, "seconds": round(seconds, 3),
        }
        with self.log_path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(rec) + "\n")


def _key(check: CodeCheck) -> str:
    expect = check.expect.model_dump_json() if check.expect else ""
    return sha256(f"{check.mode}\0{expect}\0{check.code}", 32)
