"""The pair-generator interface the graph calls, its typed results, and the factory that picks one from settings.

Two implementations: the offline doc-example generator (default, no LLM) and the LLM agent
(`doctune.agents.llm_generator`). A generator makes pairs for a section (``GenerationResult``) and may repair a
failing pair (``RepairResult``); what the model botched comes back as data (rejected pairs, ``error``), never as
attributes to look up afterwards. Endpoint failures stay exceptions: they are the infrastructure's, not the pair's.

The result types live in `doctune.agents.generator_types` (shared with the LLM generator without a cycle).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from doctune.agents import doc_examples
from doctune.agents.generator_types import (
    GenerationResult,
    PairGenerator,
    RejectedPair,
    RepairRequest,
    RepairResult,
)
from doctune.core.schemas import Pair, Section

if TYPE_CHECKING:
    from doctune.core.settings import Settings


class DocExampleGenerator:
    """Offline: pairs from the doc's own examples. Deterministic, so it never repairs (it would say the same)."""

    name = doc_examples.GENERATOR_NAME
    can_repair = False

    def __init__(self, settings: Settings):
        self.min_chars = settings.generator.min_section_chars

    async def generate(self, section: Section) -> GenerationResult:
        return GenerationResult(pairs=doc_examples.make_pairs(section), passes=1)

    async def repair(self, pair: Pair, request: RepairRequest) -> RepairResult:
        return RepairResult(error="the doc-example generator cannot rewrite code")


def generator_kind(settings: Settings) -> str:
    """'llm' or 'doc-examples': auto picks llm only when an endpoint is configured."""
    kind = settings.generator.kind
    if kind == "auto":
        return "llm" if settings.llm.base_url else "doc-examples"
    return kind


def make_generator(settings: Settings, *, endpoint_verified: bool = False) -> PairGenerator:
    """The configured generator. ``endpoint_verified``: a preflight probe got an answer from the LLM endpoint with
    this key and model, so the client sends its first requests together (no first-request gate)."""
    if generator_kind(settings) == "llm":
        from doctune.agents.llm_generator import LLMGenerator

        return LLMGenerator(settings, endpoint_verified=endpoint_verified)
    return DocExampleGenerator(settings)


__all__ = ["DocExampleGenerator", "GenerationResult", "PairGenerator", "RejectedPair", "RepairRequest",
           "RepairResult", "generator_kind", "make_generator"]
