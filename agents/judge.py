"""The optional LLM judge: scores one pair 0-100 for correctness and usefulness (the instruction-tuning lecture's
scale, where Llama-3-8B-Instruct scored about 83).

Defines ``JudgeVerdict`` (the model's answer) and ``Judge`` (one per run: client, rate limiter, usage totals).
Conceptual answers are checked against their section's text when a ``section_text`` lookup is given.
"""

from __future__ import annotations

from collections.abc import Callable

from langchain_core.messages import HumanMessage
from pydantic import BaseModel, Field

from doctune import prompts
from doctune.agents.llm import RateLimiter, StructuredCaller, Usage
from doctune.core.schemas import Pair
from doctune.core.settings import Settings
from doctune.core.zig import EXPECTED_VERSION as ZIG_VERSION

JUDGE_SHAPE = '{"score": 0-100, "reason": "one sentence"}'
MAX_SECTION_CHARS = 12000  # the judge sees at most this much of the section (long sections are split anyway)


class JudgeVerdict(BaseModel):
    """The judge's answer for one pair."""

    score: int = Field(ge=0, le=100, description="0 = wrong or useless, 50 = partly right, 80 = correct and clear.")
    reason: str = Field(description="One sentence: the main reason for the score.")


class Judge:
    """LLM-as-judge over the configured endpoint (``settings.llm``)."""

    def __init__(self, settings: Settings, *, section_text: Callable[[str], str | None] | None = None,
                 caller: StructuredCaller | None = None):
        self.settings = settings
        self.section_text = section_text
        self.caller = caller or StructuredCaller(settings.llm, format_retries=settings.generator.format_retries,
                                                 limiter=RateLimiter(settings.llm.requests_per_second))
        self.usage = Usage()
        self.prompt_hash = prompts.template_hash("judge", "format_feedback")

    def _section(self, pair: Pair) -> str | None:
        if self.section_text is None:
            return None
        try:
            text = self.section_text(pair.section_id)
        except (OSError, KeyError, ValueError):
            return None  # hand-written pairs have no section
        return text[:MAX_SECTION_CHARS] if text else None

    async def score(self, pair: Pair) -> JudgeVerdict:
        """Score one pair. Raises GenerationError when the judge's answer stays unusable."""
        user = prompts.render(
            "judge", zig_version=ZIG_VERSION, instruction=pair.instruction, response=pair.response,
            kind=pair.kind, evidence=pair.evidence, section_text=self._section(pair),
        )
        cfg = {"run_name": "llm:judge", "tags": [f"section:{pair.section_id}", f"pair:{pair.id}"],
               "metadata": {"model": self.settings.llm.model, "prompt_hash": self.prompt_hash}}
        try:
            verdict, usage, _ = await self.caller.call(JudgeVerdict, [HumanMessage(content=user)],
                                                       shape=JUDGE_SHAPE, config=cfg)
        except Exception as e:
            self.usage = self.usage + getattr(e, "usage", Usage())
            raise
        self.usage = self.usage + usage
        return verdict

    async def aclose(self) -> None:
        await self.caller.aclose()
