"""The pair-generator interface the graph calls, and the factory that picks one from settings.

Two implementations: the offline doc-example generator (default, no LLM) and the LLM agent
(`doctune.agents.llm_generator`). A generator makes pairs for a section and may repair a failing pair.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from doctune.agents import doc_examples
from doctune.schemas import Pair, Section, Verdict

if TYPE_CHECKING:
    from doctune.settings import Settings


class PairGenerator(Protocol):
    name: str
    can_repair: bool

    async def generate(self, section: Section) -> list[Pair]:
        """Pairs grounded in the section (may be empty)."""
        ...

    async def repair(self, pair: Pair, verdict: Verdict) -> Pair | None:
        """A new version of a failing pair, given the validator's verdict; None if it cannot repair."""
        ...


class DocExampleGenerator:
    """Offline: pairs from the doc's own examples. Deterministic, so it never repairs (it would say the same)."""

    name = doc_examples.GENERATOR_NAME
    can_repair = False

    def __init__(self, settings: Settings):
        self.min_chars = settings.generator.min_section_chars

    async def generate(self, section: Section) -> list[Pair]:
        return doc_examples.make_pairs(section)

    async def repair(self, pair: Pair, verdict: Verdict) -> Pair | None:
        return None


def generator_kind(settings: Settings) -> str:
    """'llm' or 'doc-examples': auto picks llm only when an endpoint is configured."""
    kind = settings.generator.kind
    if kind == "auto":
        return "llm" if settings.llm.resolved_base_url() else "doc-examples"
    return kind


def make_generator(settings: Settings, *, endpoint_verified: bool = False) -> PairGenerator:
    """The configured generator. ``endpoint_verified``: a preflight probe got an answer from the LLM endpoint with
    this key and model, so the client sends its first requests together (no first-request gate)."""
    if generator_kind(settings) == "llm":
        from doctune.agents.llm_generator import LLMGenerator

        return LLMGenerator(settings, endpoint_verified=endpoint_verified)
    return DocExampleGenerator(settings)
