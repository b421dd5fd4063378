"""The pair generator's interface and typed results (`doctune.agents.generator` picks an implementation).

What the model botched comes back as data (rejected pairs, ``error``), never as attributes to look up afterwards.
Endpoint failures stay exceptions: they are the infrastructure's, not the pair's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from pydantic import BaseModel, Field

from doctune.agents.llm import Usage
from doctune.core.schemas import Pair, Section


class RejectedPair(BaseModel):
    """A pair dropped before validation, and why."""

    pair: Pair
    reason: str


class GenerationResult(BaseModel):
    """What generating one section produced."""

    pairs: list[Pair] = Field(default_factory=list, description="Usable pairs, ready for validation.")
    rejected: list[RejectedPair] = Field(default_factory=list, description="Pairs dropped before validation.")
    usage: Usage = Field(default_factory=Usage, description="Tokens of every call for this section.")
    passes: int = Field(0, description="Generation passes made (1 + continuations).")
    errors: list[str] = Field(default_factory=list, description="Continuation passes that failed (non-fatal).")
    prompt_hash: str = ""

    def tokens(self) -> dict[str, int]:
        return {"input": self.usage.input, "output": self.usage.output}


class RepairResult(BaseModel):
    """A repair attempt: the new pair, or why there is none (``error``); ``usage`` counts either way."""

    pair: Pair | None = None
    usage: Usage = Field(default_factory=Usage)
    error: str | None = Field(None, description="Why the repair gave nothing usable (None when `pair` is set).")


@dataclass(frozen=True)
class RepairRequest:
    """What a repair is asked to fix (built by ``doctune.agents.checking.repair_request``)."""

    problem: str  # the verdict kind, or "vacuous_tests"
    feedback: str  # the trimmed compiler / test output (and which hidden test failed), as sent to the model
    rewrite_tests: bool = False  # the hidden tests themselves are at fault (vacuous): new tests are wanted


class PairGenerator(Protocol):
    name: str
    can_repair: bool

    async def generate(self, section: Section) -> GenerationResult:
        """Pairs grounded in the section (may be empty), and those dropped before validation."""
        ...

    async def repair(self, pair: Pair, request: RepairRequest) -> RepairResult:
        """A new version of a failing pair; ``RepairResult.error`` says why there is none."""
        ...
