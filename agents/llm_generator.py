"""The LLM QA-generator agent: section -> instruction/response pairs, and repair of a pair that failed validation.

Defines the output schemas the model fills (``GeneratedPair``, ``GeneratedPairs``, ``RepairedAnswer``),
``generate_pairs`` (first pass + continuation passes for long sections), ``repair_pair`` (instruction, code, what
failed and the trimmed compiler/test output back to the model) and ``LLMGenerator`` (the ``PairGenerator`` the
graph calls). A code task is a triplet: instruction, solution (in the response) and, apart from it, hidden `test`
blocks that call the solution (``Pair.tests``; "tests" without a `test` block are ignored, kept in
``meta["tests_ignored"]``) or a program's exact stdout (``Pair.expect``). Pairs that cannot be validated (empty
fields, a code task without a ```zig block) are rejected here, with the reason, before validation. No LangGraph here: the graph wires these functions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from langchain_core.messages import HumanMessage, SystemMessage
from pydantic import BaseModel, Field

from doctune import prompts
from doctune.agents.generator_types import GenerationResult, RejectedPair, RepairRequest, RepairResult
from doctune.agents.limits import RequestLimit
from doctune.agents.llm import GenerationError, RateLimiter, StructuredCaller, Usage, is_transient
from doctune.core.schemas import Expect, Pair, Section, extract_zig_blocks, sha256
from doctune.core.settings import Settings
from doctune.core.zig import EXPECTED_VERSION as ZIG_VERSION
from doctune.executors.zigsrc import classify
from doctune.executors.zigstub import declared_test_names

__all__ = ["GeneratedPair", "GeneratedPairs", "GenerationError", "GenerationResult", "LLMGenerator",
           "RepairedAnswer", "generate_pairs", "is_transient", "repair_pair"]

GENERATE_TEMPLATES = ("generate_system", "generate_user", "format_feedback")
REPAIR_TEMPLATES = ("generate_system", "repair", "format_feedback")
PAIRS_SHAPE = ('{"pairs": [{"instruction": "...", "response": "...", "kind": "code" or "conceptual", '
               '"tests": "...", "expected_stdout": "..."}]}')
REPAIR_SHAPE = '{"response": "...", "tests": "..."}'


class GeneratedPair(BaseModel):
    """One pair as the model writes it."""

    instruction: str = Field(description="A self-contained question or task for a Zig programmer.")
    response: str = Field(
        description="The answer. For a code task: a short explanation and the complete program or tests in one "
        "```zig fenced block. For a conceptual question: a prose answer grounded in the documentation."
    )
    kind: Literal["code", "conceptual"] = Field(
        description="'code' for a task whose answer contains Zig code, 'conceptual' for a prose question."
    )
    tests: str = Field(
        "", description="Code task whose solution defines functions or types: hidden Zig `test` blocks that call "
        "them and check the results with std.testing (not shown in the response). Empty otherwise.",
    )
    expected_stdout: str = Field(
        "", description="Code task whose solution is a program (`pub fn main`) writing to stdout: exactly what it "
        "prints, final newline included. Empty otherwise.",
    )


class GeneratedPairs(BaseModel):
    """The model's whole answer for one pass over a section."""

    pairs: list[GeneratedPair] = Field(description="The instruction/response pairs.")


class RepairedAnswer(BaseModel):
    """The model's corrected answer to a failing pair (the instruction stays the same)."""

    response: str = Field(description="The corrected answer: short explanation and the whole code in one ```zig block.")
    tests: str = Field("", description="Only when asked for new hidden tests: the new Zig `test` blocks. Else empty.")


def prompt_hash() -> str:
    return prompts.template_hash(*GENERATE_TEMPLATES)


def _code_count(n: int, settings: Settings) -> int:
    return n if settings.generator.require_code else round(n * settings.generator.code_share)


def _to_pair(g: GeneratedPair, section: Section, settings: Settings, phash: str, n_pass: int) -> tuple[Pair, str | None]:
    """Our Pair from the model's, and why it must be dropped before validation (None = usable)."""
    instruction, response, tests = g.instruction.strip(), g.response.strip(), g.tests.strip()
    blocks = extract_zig_blocks(response)
    has_code = bool(blocks)
    meta: dict[str, Any] = {"pass": n_pass, "declared_kind": g.kind}
    if tests and not (has_code and declared_test_names(tests)):  # "none", "N/A", prose: no hidden tests at all
        meta["tests_ignored"] = tests[:200]
        tests = ""
    program = has_code and classify(max(blocks, key=len)) in ("run", "both")
    stdout = g.expected_stdout if g.expected_stdout.strip() and program else None
    pair = Pair(
        id="l-" + sha256(f"{section.id}|{instruction}|{response}" + (f"|{tests}" if tests else "")),
        section_id=section.id,
        heading_path=section.heading_path,
        source=section.source,
        instruction=instruction,
        response=response,
        kind="code" if has_code else "conceptual",  # what the answer is, whatever the model called it
        generator=f"llm:{settings.llm.model}",
        prompt_hash=phash,
        tests=tests or None,
        expect=Expect(stdout=stdout) if stdout is not None else None,
        meta=meta,
    )
    if not instruction or not response:
        return pair, "empty instruction or response"
    if g.kind == "code" and not has_code:
        return pair, "code task without a ```zig block"
    if settings.generator.require_code and not has_code:
        return pair, "conceptual pair (generator.require_code is set)"
    return pair, None


def _messages(section: Section, n: int, n_code: int, covered: Sequence[str]) -> list[Any]:
    user = prompts.render(
        "generate_user", zig_version=ZIG_VERSION, heading_path=section.heading_path or section.title,
        source=section.source, section_text=section.text, n_pairs=n, n_code=n_code, covered=list(covered),
    )
    return [SystemMessage(content=prompts.render("generate_system", zig_version=ZIG_VERSION)),
            HumanMessage(content=user)]


async def generate_pairs(section: Section, settings: Settings, *, covered: Sequence[str] = (), n: int | None = None,
                         caller: StructuredCaller | None = None) -> GenerationResult:
    """Pairs grounded in ``section``: one pass, plus continuation passes (asking for aspects not yet covered)
    when the section is longer than ``generator.continuation_chars``, up to ``generator.max_continuations``.

    A first answer that stays unusable after the format re-asks (not JSON, cut off at max_tokens, empty) is
    returned as a rejected pair holding the raw text (reason ``unusable_answer: ...``): the model failed, not the
    infrastructure. Raises AccessError for a refused key/model and transient errors once our retries are spent.
    """
    gs = settings.generator
    n = n or gs.pairs_per_section
    caller = caller or StructuredCaller(settings.llm, format_retries=gs.format_retries)
    phash = prompt_hash()
    result = GenerationResult(prompt_hash=phash)
    seen, done = list(covered), {c.strip().lower() for c in covered}
    passes = 1 + (gs.max_continuations if len(section.text) > gs.continuation_chars else 0)
    raw = ""
    for k in range(passes):
        cfg = {"run_name": "llm:generate", "tags": [f"section:{section.id}"],
               "metadata": {"model": settings.llm.model, "prompt_hash": phash, "pass": k, "section_id": section.id}}
        try:
            answer, usage, raw = await caller.call(GeneratedPairs, _messages(section, n, _code_count(n, settings), seen),
                                                 shape=PAIRS_SHAPE, config=cfg)
        except GenerationError as e:
            result.usage = result.usage + e.usage
            if k == 0:  # nothing usable at all: the answer itself is the rejected "pair", kept with its text
                result.rejected.append(RejectedPair(pair=unusable_pair(section, settings, phash, e),
                                                    reason=f"unusable_answer: {e.reason}"))
            else:
                result.errors.append(f"pass {k}: {e}")
            break
        result.usage, result.passes = result.usage + usage, k + 1
        new = 0
        for g in answer.pairs:
            pair, reason = _to_pair(g, section, settings, phash, k)
            key = pair.instruction.lower()
            if key in done:
                reason = reason or "duplicate instruction in this section"
            done.add(key)
            if reason is None:
                result.pairs.append(pair)
                seen.append(pair.instruction)
                new += 1
            else:
                result.rejected.append(RejectedPair(pair=pair, reason=reason))
        if new == 0:
            break  # the model has nothing new to say about this section
    if not result.pairs and not result.rejected:
        empty = GenerationError("the model returned no pairs", raw=raw, reason="the model returned no pairs")
        result.rejected.append(RejectedPair(pair=unusable_pair(section, settings, phash, empty),
                                            reason=f"unusable_answer: {empty.reason}"))
    _spread_usage(result)
    return result


def unusable_pair(section: Section, settings: Settings, phash: str, err: GenerationError) -> Pair:
    """A model answer that could not be used, as a pair record: the response is the raw text (for rejected.jsonl),
    the id a hash of section and text (a resumed run that gets the same answer writes the same record)."""
    raw = err.raw or ""
    return Pair(
        id="u-" + sha256(f"{section.id}|{raw}"),
        section_id=section.id,
        heading_path=section.heading_path,
        source=section.source,
        instruction=f"(the model's answer for section {section.heading_path or section.title!r})",
        response=raw,
        kind="conceptual",
        generator=f"llm:{settings.llm.model}",
        prompt_hash=phash,
        meta={"unusable": err.reason},
    )


def _spread_usage(result: GenerationResult) -> None:
    """Put the section's token usage on its pairs (meta["usage"]) so that summing them gives the exact total."""
    holders = result.pairs or [r.pair for r in result.rejected]
    k = len(holders)
    for i, p in enumerate(holders):
        share = {f: getattr(result.usage, f) // k + (getattr(result.usage, f) % k if i == 0 else 0)
                 for f in ("input", "output")}
        p.meta["usage"] = share


async def repair_pair(pair: Pair, request: RepairRequest, settings: Settings, *, attempt: int = 1,
                      caller: StructuredCaller | None = None) -> Pair:
    """A new version of ``pair`` that the model fixed from ``request`` (what failed, the compiler's/tests' output).

    The instruction stays; the response is replaced; a triplet's hidden tests stay unless the request asks for
    new ones (vacuous tests). ``meta["usage"]`` holds this call's tokens and ``meta["feedback"]`` what was sent.
    Raises GenerationError when the answer is unusable, has no ```zig block, or lacks the new tests it was asked for.
    """
    caller = caller or StructuredCaller(settings.llm, format_retries=settings.generator.format_retries)
    user = prompts.render(
        "repair", zig_version=ZIG_VERSION, instruction=pair.instruction, response=pair.response,
        problem=request.problem, compiler_output=request.feedback, tests=pair.tests,
        rewrite_tests=request.rewrite_tests, expected_stdout=pair.expect.stdout if pair.expect else None,
    )
    rhash = prompts.template_hash(*REPAIR_TEMPLATES)
    cfg = {"run_name": "llm:repair", "tags": [f"section:{pair.section_id}", f"pair:{pair.id}"],
           "metadata": {"model": settings.llm.model, "prompt_hash": rhash, "attempt": attempt,
                        "section_id": pair.section_id}}
    msgs = [SystemMessage(content=prompts.render("generate_system", zig_version=ZIG_VERSION)), HumanMessage(content=user)]
    answer, usage, _ = await caller.call(RepairedAnswer, msgs, shape=REPAIR_SHAPE, config=cfg)
    response, tests = answer.response.strip(), pair.tests
    if not extract_zig_blocks(response):
        raise GenerationError("the repaired answer has no ```zig block", raw=response, usage=usage)
    if request.rewrite_tests:
        tests = answer.tests.strip()
        if not declared_test_names(tests):
            raise GenerationError("new hidden tests were asked for and the answer has no `test` block",
                                  raw=answer.tests, usage=usage)
    return pair.model_copy(update={
        "response": response, "kind": "code", "verdict": None, "evidence": "none", "tests": tests,
        "meta": {**pair.meta, "usage": usage.as_meta(), "repair_prompt_hash": rhash, "feedback": request.feedback},
    }, deep=True)


class LLMGenerator:
    """The LLM agent behind the graph's generate/repair nodes (``doctune.agents.generator.PairGenerator``).

    One instance per run: it owns the client, the rate limiter and the in-memory usage totals.
    """

    can_repair = True

    def __init__(self, settings: Settings, *, caller: StructuredCaller | None = None, endpoint_verified: bool = False):
        self.settings = settings
        self.name = f"llm:{settings.llm.model}"
        self.caller = caller or StructuredCaller(
            settings.llm, format_retries=settings.generator.format_retries,
            limiter=RateLimiter(settings.llm.requests_per_second),
            in_flight=RequestLimit(settings.generator.concurrency), endpoint_verified=endpoint_verified,
        )
        self.usage = Usage()
        for name in prompts.names():  # read the templates here (built off the event loop), not in a node
            prompts.source(name)

    async def generate(self, section: Section, covered: Sequence[str] = ()) -> GenerationResult:
        try:
            result = await generate_pairs(section, self.settings, covered=covered, caller=self.caller)
        except GenerationError as e:
            self.usage = self.usage + e.usage
            raise
        self.usage = self.usage + result.usage
        return result

    async def aclose(self) -> None:
        await self.caller.aclose()

    async def repair(self, pair: Pair, request: RepairRequest) -> RepairResult:
        """The repaired pair, or (an unusable answer) why there is none; endpoint failures raise."""
        try:
            new = await repair_pair(pair, request, self.settings, attempt=len(pair.attempts), caller=self.caller)
        except GenerationError as e:
            self.usage = self.usage + e.usage
            return RepairResult(usage=e.usage, error=str(e))
        usage = Usage(**new.meta["usage"])
        self.usage = self.usage + usage
        return RepairResult(pair=new, usage=usage)
