"""Curator: decontamination, exact/near dedup (datasketch and the numpy fallback), LLM judge, extra pairs."""

from __future__ import annotations

import asyncio
import json

import pytest

from doctune.agents import curator as cur
from doctune.agents.curator import curate, load_extra_pairs
from doctune.agents.judge import Judge
from doctune.core.errors import InputError
from doctune.core.schemas import Pair
from doctune.core.settings import load_settings

from tests.fakes import zig_answers
from tests.fakes.openai_server import FakeOpenAI, Fault, messages_text

EVAL = ["Write a Zig function that reverses a slice of bytes in place and returns nothing at all to the caller."]


def pair(pid: str, instruction: str, code: str | None = None, evidence: str = "ran", **kw: object) -> Pair:
    response = f"Like this:\n```zig\n{code}\n```\n" if code is not None else "Prose answer about it."
    return Pair(id=pid, section_id=kw.pop("section_id", "s1"), heading_path="H", source="d.md",
                instruction=instruction, response=response, kind="code" if code else "conceptual",
                generator="llm:m", evidence=evidence, **kw)


def program(i: int) -> str:
    return (f'const std = @import("std");\npub fn main() void {{\n    var total{i}: u32 = 0;\n'
            f"    for (0..{i + 3}) |k| total{i} += @intCast(k * {i});\n"
            f'    std.debug.print("value {i} is {{d}}\\n", .{{total{i}}});\n}}')


def settings(**curator: object):
    return load_settings(curator=curator)


def run(coro):
    return asyncio.run(coro)


def test_exact_duplicates_ignore_case_space_and_comments_and_keep_the_best_evidence() -> None:
    a = pair("a", "Print the value 1.", program(1), evidence="compiled")
    b = pair("b", "print   the VALUE 1!", program(1).replace("var", "// a comment\n    var"), evidence="ran")
    c = pair("c", "Print the value 2.", program(2))
    res = run(curate([a, b, c], settings(), eval_prompts=[]))
    assert [p.id for p in res.kept] == ["b", "c"]
    assert [(p.id, why.split(":")[0]) for p, why in res.dropped] == [("a", "duplicate")]
    assert "as b" in res.dropped[0][1]


@pytest.mark.parametrize("backend", ["datasketch", "numpy"])
def test_near_duplicates_both_backends(backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if backend == "numpy":
        monkeypatch.setattr(cur, "_candidates_datasketch", lambda sets, t: None)
    else:
        pytest.importorskip("datasketch")
    base = [pair(f"p{i:03d}", f"Write a program that computes the value number {i}.", program(i)) for i in range(150)]
    twins = [pair(f"q{i:03d}", f"Write a program that computes the value number {i}!",
                  program(i).replace("value", "result")) for i in range(0, 150, 3)]
    res = run(curate(base + twins, settings(near_dup_threshold=0.7), eval_prompts=[]))
    assert {p.id for p, _ in res.dropped} == {t.id for t in twins}
    assert all(why.startswith("near-duplicate") for _, why in res.dropped)
    assert len(res.kept) == 150


def test_decontamination_against_eval_prompts() -> None:
    leaked = pair("leak", "Write a Zig function that reverses a slice of bytes in place and returns nothing at all.",
                  program(1))
    fine = pair("fine", "Write a Zig function that sums a slice.", program(2))
    short = "Print hello."  # too generic to decontaminate against
    res = run(curate([leaked, fine], settings(decontam_ngram=13), eval_prompts=[*EVAL, short]))
    assert [p.id for p in res.kept] == ["fine"]
    assert res.dropped[0][0].id == "leak" and "13-gram with eval task #0" in res.dropped[0][1]
    off = run(curate([leaked, fine], settings(decontaminate=False), eval_prompts=EVAL))
    assert len(off.kept) == 2


def test_judge_scores_and_drops_below_threshold_with_section_text() -> None:
    good = pair("good", "Print 5.", program(5))
    bad = pair("bad", "Print 6.", zig_answers.BROKEN.strip())
    concept = pair("concept", "What is comptime?", section_id="sec-comptime")
    with FakeOpenAI(zig_answers.responder) as srv:
        s = load_settings(llm={"base_url": srv.base_url, "max_retries": 0}, curator={"judge_threshold": 70})
        judge = Judge(s, section_text=lambda sid: f"SECTION TEXT OF {sid}")
        res = run(curate([good, bad, concept], s, eval_prompts=[], judge=judge))
        prompts = [messages_text(r.body) for r in srv.chat_requests()]
    assert [p.id for p in res.kept] == ["good", "concept"] and res.kept[0].judge_score == 85
    assert res.dropped[0][0].id == "bad" and res.dropped[0][1].startswith("judge: score 20 < 70")
    assert any("SECTION TEXT OF sec-comptime" in p and "conceptual answer" in p for p in prompts)
    assert res.usage.calls == 3 and res.usage.input > 0


def test_judge_failure_keeps_the_pair_and_says_so() -> None:
    with FakeOpenAI(lambda body: Fault("500")) as srv:
        s = load_settings(llm={"base_url": srv.base_url, "max_retries": 0}, curator={"judge": True})
        res = run(curate([pair("a", "Print 1.", program(1))], s, eval_prompts=[]))
    assert [p.id for p in res.kept] == ["a"] and not res.dropped and "judge failed on a" in res.notes[0]


def test_extra_pairs_merge_with_oversampling(tmp_path) -> None:
    f = tmp_path / "identity.jsonl"
    f.write_text("\n".join([
        json.dumps({"instruction": "Which Zig version do you know?", "response": "Zig 0.14.0."}),
        json.dumps({"messages": [{"role": "user", "content": "Who are you?"},
                                 {"role": "assistant", "content": "A Zig 0.14 assistant."}]}),
        json.dumps({"instruction": EVAL[0], "response": "contaminated on purpose"}),
    ]) + "\n")
    res = run(curate([pair("a", "Print 1.", program(1))], settings(extra_pairs=[f], extra_oversample=3),
                     eval_prompts=EVAL))
    extras = [p for p in res.kept if p.generator == "hand-written"]
    assert len(extras) == 6 and len({p.id for p in extras}) == 6
    assert sorted({p.instruction for p in extras}) == ["Which Zig version do you know?", "Who are you?"]
    assert [why.split(":")[0] for _, why in res.dropped] == ["contaminated"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "x"}\n')
    with pytest.raises(InputError, match="bad.jsonl:1"):
        load_extra_pairs([bad])


def test_every_input_pair_is_kept_or_dropped_with_a_reason() -> None:
    pairs = [pair(f"p{i}", f"Task {i % 7} about values.", program(i % 7)) for i in range(40)]
    res = run(curate(pairs, settings(), eval_prompts=EVAL))
    assert len(res.kept) + len(res.dropped) == 40 and len(res.kept) == 7
    assert all(why for _, why in res.dropped) and res.reasons() == {"duplicate": 33}
