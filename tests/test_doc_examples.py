"""The offline generator's pairs read as a person would write them, on the real language reference and the sample.

Questions are self-contained (no cut-off sentence, no "the example below", no code flattened into prose, no file
names from the doc's layout) and the answer never repeats the question's explanation word for word.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from doctune.agents.doc_examples import _sentences, make_pairs
from doctune.agents.splitter import split_paths
from doctune.core.settings import SplitSettings


def _pairs(doc: Path) -> list:
    return [p for sec in split_paths([doc], SplitSettings()) for p in make_pairs(sec)]


def _prose(text: str) -> str:
    """The text outside fenced code."""
    return re.sub(r"```.*?```", " ", text, flags=re.S)


@pytest.fixture(scope="module", params=["langref", "sample"])
def pairs(request: pytest.FixtureRequest, langref_path: Path, sample_path: Path) -> list:
    return _pairs(langref_path if request.param == "langref" else sample_path)


def test_questions_are_clean_and_self_contained(pairs: list) -> None:
    assert len(pairs) >= 10
    for p in pairs:
        q = p.instruction
        prose = _prose(q)
        assert "`" * 3 not in prose and "**" not in prose, q
        assert not re.search(r"\b\w+\.zig\b", prose), q  # the doc's file-name lines are layout, not the task
        assert not re.search(r"(\.\.\.|…|:)\s*$", prose.strip()), q  # never a cut-off or dangling sentence
        assert not re.search(r"\b(below|above|following)\b", prose, re.I), q
        if p.meta["mode"] != "obj" and p.expect.outcome == "ok":
            assert "```" not in q, q  # a code task asks for code; it never contains it


def test_code_in_questions_is_a_real_block(pairs: list) -> None:
    """Where a question shows code ('what happens when ...'), it is a fenced block with its line breaks."""
    for p in pairs:
        for block in re.findall(r"```zig\n(.*?)```", p.instruction, re.S):
            assert "\n" in block.strip() or len(block) < 80


def test_no_explanation_repeated_between_question_and_answer(pairs: list) -> None:
    for p in pairs:
        q_sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+", _prose(p.instruction)) if len(s.strip()) > 40]
        answer = _prose(p.response)
        repeated = [s for s in q_sentences if s in answer]
        assert not repeated, (p.instruction, p.response)


def test_langref_hello_world_asks_for_its_output(langref_path: Path) -> None:
    hello = next(p for p in _pairs(langref_path) if p.meta["example"] == "hello.zig")
    assert "Hello World" in hello.instruction and "`Hello, world!`" in hello.instruction
    assert "const std" not in hello.instruction
    assert "Hello, world!" in hello.response and "```zig\nconst std" in hello.response


def test_sentences_keeps_whole_standalone_sentences() -> None:
    text = ("Zig has three kinds of comments. The example below shows each one. For this case there is an API: "
            "Doc comments document declarations. " + "Long words " * 80 + "end.")
    got = _sentences(text, 5)
    assert got == "Zig has three kinds of comments. Doc comments document declarations."
    assert _sentences("Use `defer` to clean up. ```zig const x = 1; ``` is code.", 3) == "Use `defer` to clean up."


def test_pairs_are_deterministic(sample_path: Path) -> None:
    a, b = _pairs(sample_path), _pairs(sample_path)
    assert [(p.id, p.instruction, p.response) for p in a] == [(p.id, p.instruction, p.response) for p in b]
