"""What the evaluator's generators take and give: a parsed ``--model LABEL=SPEC`` and one generated answer.
(Shared by ``generate`` and ``answers``, so neither imports the other.)"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel


class Generation(BaseModel):
    """One answer and why it ended: ``stop`` (end of turn) or ``length`` (cut at the token budget)."""

    text: str
    finish_reason: str = "stop"

    @property
    def truncated(self) -> bool:
        return self.finish_reason == "length"


class ModelSpec(BaseModel):
    """A parsed ``LABEL=SPEC``."""

    label: str
    kind: Literal["local", "openai", "answers"]
    path: str | None = None  # base model folder (local)
    adapter: str | None = None  # LoRA adapter folder (local)
    model: str | None = None  # endpoint model name
    base_url: str | None = None
    file: str | None = None  # answers file
    pick: str | None = None  # which label's answers in an evaluator answers.jsonl
