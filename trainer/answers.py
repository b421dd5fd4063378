"""Answers written beforehand, as a "model": ``--model LABEL=answers:FILE[#PICK]``.

Scores reference solutions, stubs or a run's saved answers without loading a model. ``FILE`` is JSONL, one task a
line, matched to tasks by ``id``:

- ``{"id": "...", "answer": "text"}`` (one sample), or ``{"id": "...", "answers": ["text", ...]}``;
- an evaluator's own ``answers.jsonl`` (``{"id", "answers": {label: [...]}, "finish_reasons": {label: [...]}}``)
  with ``#PICK`` naming the label to re-score.

``finish_reason``/``finish_reasons`` (``stop`` | ``length``) are kept when given, so a re-scored cut answer is still
shown as cut. A task without an answer in the file, or with fewer answers than samples, is an input error (a
missing answer is not a wrong one).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from doctune.core.errors import InputError
from doctune.trainer.specs import Generation, ModelSpec


def read_answers(path: Path | str, pick: str | None = None) -> dict[str, list[Generation]]:
    """task id -> its answers, from an answers file (see the module docstring)."""
    out: dict[str, list[Generation]] = {}
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            out[str(row["id"])] = _row_answers(row, pick)
        except (ValueError, KeyError, TypeError) as e:
            raise InputError(f"{path}:{n}: not an answers line ({type(e).__name__}: {e})") from None
    return out


def _row_answers(row: dict[str, Any], pick: str | None) -> list[Generation]:
    if "answer" in row:
        return [Generation(text=str(row["answer"]), finish_reason=row.get("finish_reason") or "stop")]
    texts, reasons = row["answers"], row.get("finish_reasons")
    if isinstance(texts, dict):
        if pick is None:
            raise KeyError(f"several labels ({', '.join(texts)}): name one with answers:FILE#LABEL")
        texts, reasons = texts[pick], (reasons or {}).get(pick)
    if not isinstance(texts, list):
        raise TypeError("'answers' must be a list of strings (or a dict of such lists by label)")
    reasons = reasons or ["stop"] * len(texts)
    return [Generation(text=str(t), finish_reason=str(r)) for t, r in zip(texts, reasons, strict=True)]


class FileAnswers:
    """The generator interface over an answers file (nothing is generated)."""

    def __init__(self, spec: ModelSpec, task_ids: Sequence[str]) -> None:
        self.answers = read_answers(spec.file or "", spec.pick)
        self.task_ids, self.file = list(task_ids), spec.file
        missing = [t for t in self.task_ids if t not in self.answers]
        if missing:
            raise InputError(f"{self.file}: no answer for {len(missing)} task(s): {', '.join(missing[:5])}")

    def generate(self, prompts: Sequence[str], samples: int = 1,
                 on_batch: Callable[[int], None] | None = None) -> list[list[Generation]]:
        if len(prompts) != len(self.task_ids):
            raise ValueError("an answers file needs the task ids of the prompts, in order")
        out = []
        for tid in self.task_ids:
            got = self.answers[tid]
            if len(got) < samples:
                raise InputError(f"{self.file}: task {tid} has {len(got)} answer(s), {samples} sample(s) asked")
            out.append(got[:samples])
            if on_batch:
                on_batch(1)
        return out

    def close(self) -> None:
        """Nothing to release."""
