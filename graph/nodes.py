"""Graph nodes: thin wrappers that load by id, call an agent, store the result, and return small updates."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, Literal, TypeVar

from langgraph.runtime import Runtime
from langgraph.types import Send

from doctune.graph.context import Context, aresolve, resolve, run_store
from doctune.graph.names import CURATE, SECTION
from doctune.graph.state import RunState, SectionResult, SectionState
from doctune.schemas import EVIDENCE_RANK, Attempt, Pair, Verdict, extract_zig_blocks, sha256

T = TypeVar("T")

# ---------------------------------------------------------------- run level


async def split(state: RunState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Split the docs into sections, store them, keep their ids (first `max_sections` in document order)."""
    from doctune.agents.splitter import split_paths

    ctx = await aresolve(runtime.context)
    sections = await asyncio.to_thread(split_paths, state["docs"], ctx.settings.split)
    await run_store(runtime, ctx).put_sections(sections)
    limit = state.get("max_sections")
    chosen = sections[:limit] if limit else sections
    return {"section_ids": [s.id for s in chosen], "sections_total": len(sections)}


def fan_out(state: RunState) -> list[Send] | Literal["curate"]:
    """One branch per section without a result yet (LangGraph Send); finished branches are kept on resume.

    Sections that already have a result are skipped: `doctune retry` forks a finished run here with the results
    of the sections it keeps, so only the failed ones are sent again. (A fresh run has no results at this point.)
    """
    have = {r["section_id"] for r in state.get("results", [])}
    return [Send(SECTION, {"section_id": sid}) for sid in state["section_ids"] if sid not in have] or CURATE


# ---------------------------------------------------------------- section subgraph


async def generate(state: SectionState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Ask the generator for pairs grounded in the section; store them; queue them for validation.

    Pairs the LLM generator dropped before validation (no ```zig block, empty, duplicate, an unusable answer with
    its raw text) are stored too and recorded as rejected with their reason. An endpoint that keeps failing
    (transient errors after every retry) ends the section with `error` set; a refused key or model (AccessError)
    stops the whole run.
    """
    ctx = await aresolve(runtime.context)
    store = run_store(runtime, ctx)
    section = await store.get_section(state["section_id"])
    if len(section.text) < ctx.settings.generator.min_section_chars:
        return {"pending": [], "generated": 0, "attempt": 0}
    gen = await ctx.aget_generator()
    rejected: list[dict[str, str]] = []
    dropped: list[Pair] = []
    try:
        if hasattr(gen, "generate_result"):  # the LLM agent: also says what it dropped, and the tokens
            result = await _named_run(f"generate: {_label(section)}", section.id, partial(gen.generate_result, section))
            pairs, tokens = result.pairs, {"input": result.usage.input, "output": result.usage.output}
            for r in result.rejected:
                r.pair.attempts.append(Attempt(n=0, code_hash=_code_hash(r.pair)))
                rejected.append({"pair_id": r.pair.id, "reason": r.reason})
                dropped.append(r.pair)
        else:
            pairs = await _named_run(f"generate: {_label(section)}", section.id, partial(gen.generate, section))
            tokens = _tokens(pairs)
    except Exception as e:
        if not _section_failure(e, runtime):
            raise
        usage = getattr(e, "usage", None)
        tokens = {"input": getattr(usage, "input", 0), "output": getattr(usage, "output", 0)}
        return {"pending": [], "generated": 0, "attempt": 0, "tokens": tokens, "error": _describe("generate", e)}
    if ctx.settings.generator.require_code:
        pairs = [p for p in pairs if p.code_blocks()]
    for p in pairs:
        p.attempts.append(Attempt(n=0, code_hash=_code_hash(p)))
    versions = await store.put_pairs([*dropped, *pairs])
    return {"pending": [p.id for p in pairs], "generated": len(pairs) + len(rejected), "attempt": 0,
            "tokens": tokens, "rejected": rejected, "versions": versions}


async def validate(state: SectionState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Compile and run every Zig block of the pending pairs; split them into accepted and failing."""
    from doctune.agents.validator import BlockInput

    ctx = await aresolve(runtime.context)
    store, versions = run_store(runtime, ctx), state.get("versions", {})
    pairs = await store.get_pairs(state.get("pending", []), versions)
    items: list[BlockInput] = []
    owners: list[int] = []
    for i, p in enumerate(pairs):
        for j, code in enumerate(blocks_to_check(p)):
            items.append(BlockInput(id=f"{p.id}#{j}", code=code, expect=p.expect, mode=_mode_for(p)))
            owners.append(i)
    verdicts = await (await ctx.aget_validator()).validate_many(items) if items else []
    per_pair: dict[int, list[Verdict]] = {}
    for i, v in zip(owners, verdicts, strict=True):
        per_pair.setdefault(i, []).append(v)
    accepted, failing, infra = [], [], []
    for i, p in enumerate(pairs):
        vs = per_pair.get(i, [])
        # An executor fault (after the validator's own retries) says nothing about the code: never repair it.
        bad = next((v for v in vs if v.verdict == "infra_error"), None) or next((v for v in vs if not v.passed), None)
        p.verdict = bad or (vs[-1] if vs else None)
        p.evidence = _weakest_evidence(vs) if bad is None else "none"
        if p.attempts:
            p.attempts[-1].verdict = p.verdict.verdict if p.verdict else None
        if bad is None:
            accepted.append(p.id)
        elif bad.verdict == "infra_error":
            infra.append({"pair_id": p.id, "reason": "infra_error"})
        else:
            failing.append(p.id)
    return {"accepted": accepted, "failing": failing, "rejected": infra, "pending": [],
            "versions": await store.put_pairs(pairs, versions)}


def route_after_validate(state: SectionState, runtime: Runtime[Context]) -> Literal["repair", "finish"]:
    ctx = resolve(runtime.context)  # a router runs after a node resolved the context: cached, no I/O
    can = ctx.get_generator().can_repair and state.get("attempt", 0) < ctx.settings.generator.max_repairs
    return "repair" if state.get("failing") and can and not state.get("error") else "finish"


async def repair(state: SectionState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Send each failing pair back to the generator with the compiler's output (bounded by max_repairs).

    Each attempt keeps the feedback that was really sent. A repair the model botched rejects that pair with the
    reason; an endpoint that fails for good ends the section with `error` (pairs accepted so far are kept).
    """
    ctx = await aresolve(runtime.context)
    gen = await ctx.aget_generator()
    store, versions = run_store(runtime, ctx), state.get("versions", {})
    attempt = state.get("attempt", 0) + 1
    pending, rejected, written = [], [], {}
    tokens = dict(state.get("tokens") or {"input": 0, "output": 0})
    failing = list(state.get("failing", []))
    label = _label(await store.get_section(state["section_id"]))
    for i, pid in enumerate(failing):
        old = await store.get_pair(pid, versions[pid])
        done = await store.find_pair(pid, versions[pid] + 1)
        if done is not None and done.attempts and done.attempts[-1].n == attempt:
            # Already repaired in this round by an attempt of this node that did not finish (a retried transient
            # error, or a killed process), or by the run a fork replays: keep that answer, do not ask again.
            tokens = {k: tokens.get(k, 0) + v for k, v in _tokens([done]).items()}
            pending.append(pid)
            written[pid] = versions[pid] + 1
            continue
        assert old.verdict is not None
        try:
            new = await _named_run(f"repair: {label}", state["section_id"], partial(gen.repair, old, old.verdict),
                                   attempt=attempt, pair_id=pid)
        except Exception as e:
            if not _section_failure(e, runtime):
                raise
            rejected += [{"pair_id": p, "reason": f"repair_failed: {_one_line(e)}"} for p in failing[i:]]
            return {"pending": pending, "failing": [], "rejected": rejected, "attempt": attempt, "tokens": tokens,
                    "versions": written, "error": _describe("repair", e)}
        if new is None:
            why = getattr(gen, "last_repair_error", {}).get(pid)
            rejected.append({"pair_id": pid, "reason": f"repair_failed: {why}" if why else old.verdict.verdict})
            continue
        new.id = old.id
        feedback = new.meta.get("feedback", old.verdict.stderr)
        new.attempts = [*old.attempts, Attempt(n=attempt, code_hash=_code_hash(new), feedback=feedback)]
        for k, v in _tokens([new]).items():
            tokens[k] = tokens.get(k, 0) + v
        written |= await store.put_pairs([new], versions)
        pending.append(pid)
    return {"pending": pending, "failing": [], "rejected": rejected, "attempt": attempt, "tokens": tokens,
            "versions": written}


async def finish(state: SectionState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Reject what still fails and hand one small result back to the run."""
    ctx = await aresolve(runtime.context)
    store, versions = run_store(runtime, ctx), state.get("versions", {})
    rejected = list(state.get("rejected", []))
    for p in await store.get_pairs(list(state.get("failing", [])), versions):
        rejected.append({"pair_id": p.id, "reason": p.verdict.verdict if p.verdict else "no_verdict"})
    accepted = await store.get_pairs(list(state.get("accepted", [])), versions)
    repairs = {p.id: len(p.attempts) - 1 for p in accepted}
    named = [p.id for p in accepted] + [r["pair_id"] for r in rejected]
    result = SectionResult(
        section_id=state["section_id"],
        generated=state.get("generated", 0),
        accepted=list(state.get("accepted", [])),
        rejected=rejected,
        repairs=repairs,
        tokens=dict(state.get("tokens") or {"input": 0, "output": 0}),
        error=state.get("error") or _infra_error(rejected),
        versions={pid: versions[pid] for pid in named if pid in versions},
    )
    if result["error"]:
        await _trace_failure(f"section failed: {_label(await store.get_section(state['section_id']))}",
                             result["error"])
    return {"results": [result]}


def _infra_error(rejected: list[dict[str, str]]) -> str | None:
    """Pairs the executor could not validate make the section failed (not done): `doctune retry` re-runs it
    once the sandbox / Codapi server works again."""
    n = sum(1 for r in rejected if r["reason"] == "infra_error")
    return f"validate failed: executor infra_error on {n} pair(s) (sandbox or Codapi unavailable)" if n else None


# ---------------------------------------------------------------- after the fan-in


async def curate(state: RunState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Dedup + decontamination (+ judge) over all accepted pairs; every drop keeps its reason."""
    from doctune.agents.curator import curate as run_curator

    ctx = await aresolve(runtime.context)
    store, versions = run_store(runtime, ctx), result_versions(state)
    ids = [pid for r in state.get("results", []) for pid in r["accepted"]]
    pairs = await store.get_pairs(ids, versions)
    prompts = await asyncio.to_thread(_eval_prompts, ctx)
    judge = await _judge(ctx, store, pairs) if ctx.settings.curator.judge else None
    try:
        if judge is None:  # pure CPU and file reads (extra pairs): in a worker thread, off the event loop
            result = await asyncio.to_thread(asyncio.run, run_curator(pairs, ctx.settings, eval_prompts=prompts))
        else:
            result = run_curator(pairs, ctx.settings, eval_prompts=prompts, judge=judge)
            if inspect.isawaitable(result):  # the LLM judge makes curation async
                result = await result
    finally:
        if judge is not None:
            await judge.aclose()
    # New versions: judge scores (kept and dropped pairs keep what the judge thought); merged hand-written pairs.
    everything = [*result.kept, *(p for p, _ in result.dropped)]
    written = await store.put_pairs([p for p in everything if judge is not None or p.id not in versions], versions,
                                    fresh=judge is not None)
    return {
        "kept": [p.id for p in result.kept],
        "dropped": [{"pair_id": p.id, "reason": why} for p, why in result.dropped],
        "versions": {p.id: written.get(p.id, versions.get(p.id, 0)) for p in everything},
    }


def result_versions(state: RunState) -> dict[str, int]:
    """Pair id -> stored version as the section results name them."""
    return {pid: v for r in state.get("results", []) for pid, v in (r.get("versions") or {}).items()}


async def export(state: RunState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Write pairs.jsonl, rejected.jsonl and the HF DatasetDict with its card."""
    from doctune.dataset import export_run

    ctx = await aresolve(runtime.context)
    versions = result_versions(state) | state.get("versions", {})
    rejected = [r["pair_id"] for s in state.get("results", []) for r in s["rejected"]]
    wanted = dict.fromkeys([*state.get("kept", []), *rejected, *(d["pair_id"] for d in state.get("dropped", []))])
    pairs = await run_store(runtime, ctx).get_pairs(list(wanted), versions)
    info = await asyncio.to_thread(export_run, ctx.out_dir, {p.id: p for p in pairs}, state, ctx.settings)
    return {"export": info}


def route_after_export(state: RunState, runtime: Runtime[Context]) -> Literal["train", "__end__"]:
    return "train" if resolve(runtime.context).settings.train.enabled else "__end__"


async def train(state: RunState, runtime: Runtime[Context]) -> dict[str, Any]:
    """LoRA-train on the exported dataset (preset from settings)."""
    from doctune.trainer.pipeline import train_node

    ctx = await aresolve(runtime.context)
    return {"train": await train_node(ctx.settings, ctx.out_dir, state["export"])}


async def evaluate(state: RunState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Before/after pass@1 on held-out tasks -> report.md."""
    from doctune.trainer.pipeline import evaluate_node

    ctx = await aresolve(runtime.context)
    return {"evaluation": await evaluate_node(ctx.settings, ctx.out_dir, state["export"], state["train"])}


# ---------------------------------------------------------------- helpers


def _section_failure(exc: BaseException, runtime: Runtime[Context]) -> bool:
    """Should this exception end the section with an error (True) rather than propagate?

    Transient errors propagate while the node's RetryPolicy still has attempts left (LangGraph retries the
    node); after the last attempt they, like permanent LLM failures, become the section's error. Anything else
    (a bug, a broken toolchain) propagates: that is not one section's problem.
    """
    from doctune.agents.llm import is_llm_failure, is_transient
    from doctune.graph.graph import LLM_RETRY

    if not is_llm_failure(exc):
        return False
    info = getattr(runtime, "execution_info", None)
    attempt = getattr(info, "node_attempt", 1) or 1
    return not (is_transient(exc) and attempt < LLM_RETRY.max_attempts)


async def _named_run(name: str, section_id: str, call: Callable[[], Awaitable[T]], **metadata: Any) -> T:
    """Await ``call()`` inside a child run named ``name`` (e.g. ``generate:<section>``) tagged with the section,
    so a LangSmith trace finds a section's LLM calls by name and tag. A no-op wrapper when tracing is off."""
    from langchain_core.runnables import RunnableLambda

    async def run(_: object) -> T:
        return await call()

    cfg = {"run_name": name, "tags": [f"section:{section_id}"], "metadata": {"section_id": section_id, **metadata}}
    return await RunnableLambda(run, name=name).ainvoke(None, config=cfg)


async def _trace_failure(name: str, error: str) -> None:
    """A child run that ends in error, so a failed section shows as failed in LangSmith (the branch itself returns
    normally: its failure is data for `doctune retry`). A no-op when tracing is off."""
    from langchain_core.runnables import RunnableConfig, RunnableLambda

    class SectionFailed(RuntimeError):
        pass

    def fail(_: object) -> None:
        raise SectionFailed(error)

    try:
        await RunnableLambda(fail, name=name).ainvoke(None, config=RunnableConfig(run_name=name))
    except SectionFailed:
        pass


def _label(section: Any) -> str:
    """A section as LangSmith shows it: its heading path."""
    return section.heading_path or section.title or section.id


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else "")[:300] or type(exc).__name__


def _describe(stage: str, exc: BaseException) -> str:
    """The section's error: stage, exception type and the first line of its message (never a key)."""
    return f"{stage} failed: {type(exc).__name__}: {_one_line(exc)}"


async def _judge(ctx: Context, store: Any, pairs: list[Pair]) -> Any:
    """The LLM judge, given the text of the pairs' sections from the store (conceptual answers are checked
    against it)."""
    from doctune.agents.judge import Judge

    texts = {s.id: s.text for s in await store.get_sections(sorted({p.section_id for p in pairs}))}
    return Judge(ctx.settings, section_text=texts.get)


def blocks_to_check(pair: Pair) -> list[str]:
    """The Zig blocks whose behaviour the pair claims: the response's, else (for 'what happens' pairs) the
    instruction's."""
    blocks = pair.code_blocks()
    if not blocks and pair.expect is not None:
        blocks = extract_zig_blocks(pair.instruction)
    return blocks


def _mode_for(pair: Pair) -> str:
    """'auto' (the validator classifies; fragments are type-checked in a wrapper), except for pairs that claim a
    failure: those must be reproduced exactly the way the doc ran them (e.g. `zig build-obj`)."""
    if pair.expect is not None and pair.expect.outcome != "ok":
        return pair.meta.get("mode", "auto")
    return "auto"


def _code_hash(pair: Pair) -> str | None:
    blocks = pair.code_blocks()
    return sha256("\n".join(blocks)) if blocks else None


def _tokens(pairs: list[Pair]) -> dict[str, int]:
    usage = [p.meta.get("usage") or {} for p in pairs]
    return {"input": sum(u.get("input", 0) for u in usage), "output": sum(u.get("output", 0) for u in usage)}




def _weakest_evidence(verdicts: list[Verdict]) -> str:
    if not verdicts:
        return "none"
    return min((v.evidence for v in verdicts), key=EVIDENCE_RANK.__getitem__)


def _eval_prompts(ctx: Context) -> list[str]:
    from doctune.evals import load_eval_prompts

    return load_eval_prompts(ctx.settings.eval.tasks)
