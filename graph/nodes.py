"""Graph nodes: thin wrappers that load by id, call an agent, store the result, and return small updates."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any, Literal, TypeVar

from langgraph.runtime import Runtime
from langgraph.types import Send

from doctune.agents.checking import already_repaired, check_pairs, code_hash, rejection_reason, repair_one
from doctune.agents.generator import PairGenerator
from doctune.core.schemas import Attempt, Pair
from doctune.core.settings import Settings
from doctune.graph.context import Context, aresolve, resolve, run_store
from doctune.graph.names import CURATE, SECTION
from doctune.graph.state import RunState, SectionResult, SectionState
from doctune.graph.store import Store

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

    Pairs the generator dropped before validation (no ```zig block, empty, duplicate, an unusable answer with its
    raw text) are stored too and recorded as rejected with their reason. An endpoint that keeps failing
    (transient errors after every retry) ends the section with `error` set; a refused key or model (AccessError)
    stops the whole run.
    """
    ctx = await aresolve(runtime.context)
    store = run_store(runtime, ctx)
    section = await store.get_section(state["section_id"])
    if len(section.text) < ctx.settings.generator.min_section_chars:
        return {"pending": [], "generated": 0, "attempt": 0}
    gen = await ctx.aget_generator()
    try:
        result = await _named_run(f"generate: {_label(section)}", section.id, partial(gen.generate, section))
    except Exception as e:
        if not _section_failure(e, runtime):
            raise
        usage = getattr(e, "usage", None)
        tokens = {"input": getattr(usage, "input", 0), "output": getattr(usage, "output", 0)}
        return {"pending": [], "generated": 0, "attempt": 0, "tokens": tokens, "error": _describe("generate", e)}
    pairs = [p for p in result.pairs if p.code_blocks() or not ctx.settings.generator.require_code]
    dropped = [r.pair for r in result.rejected]
    for p in [*pairs, *dropped]:
        p.attempts.append(Attempt(n=0, code_hash=code_hash(p)))
    versions = await store.put_pairs([*dropped, *pairs])
    rejected = [{"pair_id": r.pair.id, "reason": r.reason} for r in result.rejected]
    return {"pending": [p.id for p in pairs], "generated": len(pairs) + len(rejected), "attempt": 0,
            "tokens": result.tokens(), "rejected": rejected, "versions": versions}


async def validate(state: SectionState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Check the pending pairs (every Zig block, hidden tests and their vacuity); split them by outcome."""
    ctx = await aresolve(runtime.context)
    store, versions = run_store(runtime, ctx), state.get("versions", {})
    pairs = await store.get_pairs(state.get("pending", []), versions)
    validator, gen = await ctx.aget_validator(), await ctx.aget_generator()  # built off the event loop
    checked = await check_pairs(pairs, validator.validate_many, can_repair=_can_repair(gen, ctx, state))
    return {"accepted": checked.accepted, "failing": checked.failing, "rejected": checked.rejected, "pending": [],
            "versions": await store.put_pairs(pairs, versions)}


def _can_repair(gen: PairGenerator, ctx: Context, state: SectionState) -> bool:
    """Whether a failing pair of this round goes to repair (validate and the router must agree)."""
    return gen.can_repair and state.get("attempt", 0) < ctx.settings.generator.max_repairs


def route_after_validate(state: SectionState, runtime: Runtime[Context]) -> Literal["repair", "finish"]:
    ctx = resolve(runtime.context)  # a router runs after a node resolved the context: cached, no I/O
    can = _can_repair(ctx.get_generator(), ctx, state)
    return "repair" if state.get("failing") and can and not state.get("error") else "finish"


async def repair(state: SectionState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Send each failing pair back to the generator with what failed (bounded by max_repairs).

    A repair the model botched rejects that pair with the reason; an endpoint that fails for good ends the
    section with `error` (pairs accepted so far are kept).
    """
    ctx = await aresolve(runtime.context)
    gen = await ctx.aget_generator()
    store, versions = run_store(runtime, ctx), state.get("versions", {})
    attempt = state.get("attempt", 0) + 1
    pending: list[str] = []
    rejected: list[dict[str, str]] = []
    written: dict[str, int] = {}
    tokens = dict(state.get("tokens") or {"input": 0, "output": 0})
    failing = list(state.get("failing", []))
    label = _label(await store.get_section(state["section_id"]))
    for i, pid in enumerate(failing):
        current, at = await _to_repair(store, pid, versions[pid], attempt)
        try:
            step = await _named_run(f"repair: {label}", state["section_id"],
                                    partial(repair_one, current, gen, attempt), attempt=attempt, pair_id=pid)
        except Exception as e:
            if not _section_failure(e, runtime):
                raise
            rejected += [{"pair_id": p, "reason": f"repair_failed: {_one_line(e)}"} for p in failing[i:]]
            return {"pending": pending, "failing": [], "rejected": rejected, "attempt": attempt, "tokens": tokens,
                    "versions": written, "error": _describe("repair", e)}
        tokens = {k: tokens.get(k, 0) + step.tokens.get(k, 0) for k in ("input", "output")}
        if step.pair is not None:
            written |= await store.put_pairs([step.pair], versions)
        elif step.pending:
            written[pid] = at
        if step.pending:
            pending.append(pid)
        elif step.rejected:
            rejected.append({"pair_id": pid, "reason": step.rejected})
    return {"pending": pending, "failing": [], "rejected": rejected, "attempt": attempt, "tokens": tokens,
            "versions": written}


async def _to_repair(store: Any, pid: str, version: int, attempt: int) -> tuple[Pair, int]:
    """The pair to hand to `repair_one` and its stored version: the next version when an earlier run of this
    node already stored this round's repair (a retried transient error, a killed process, a replayed fork), so
    that answer is kept and the model is not asked again; else the failing version."""
    done = await store.find_pair(pid, version + 1)
    if done is not None and already_repaired(done, attempt):
        return done, version + 1
    return await store.get_pair(pid, version), version


async def finish(state: SectionState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Reject what still fails and hand one small result back to the run."""
    ctx = await aresolve(runtime.context)
    store, versions = run_store(runtime, ctx), state.get("versions", {})
    failing = await store.get_pairs(list(state.get("failing", [])), versions)
    rejected = [*state.get("rejected", []), *({"pair_id": p.id, "reason": rejection_reason(p)} for p in failing)]
    accepted = await store.get_pairs(list(state.get("accepted", [])), versions)
    section = await store.get_section(state["section_id"])
    named = [p.id for p in accepted] + [r["pair_id"] for r in rejected]
    result = SectionResult(
        section_id=state["section_id"],
        generated=state.get("generated", 0),
        accepted=list(state.get("accepted", [])),
        rejected=rejected,
        repairs={p.id: len(p.attempts) - 1 for p in accepted},
        tokens=dict(state.get("tokens") or {"input": 0, "output": 0}),
        error=state.get("error") or _infra_error(rejected),
        source=section.source,
        heading_path=_label(section),
        evidence={p.id: p.evidence for p in accepted},
        versions={pid: versions[pid] for pid in named if pid in versions},
    )
    if result["error"]:
        await _trace_failure(f"section failed: {_label(section)}", result["error"])
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
        else:  # the LLM judge makes curation async
            result = await run_curator(pairs, ctx.settings, eval_prompts=prompts, judge=judge)
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
    ctx = await aresolve(runtime.context)
    return {"export": await write_outputs(run_store(runtime, ctx), ctx.out_dir, state, ctx.settings)}


async def write_outputs(store: Store, out_dir: Path, state: RunState | dict[str, Any], settings: Settings
                        ) -> dict[str, Any]:
    """The run's outputs in `out_dir` from a final state and the run's store (the export node's work; also a
    finished run's, resumed from another directory)."""
    from doctune.agents.dataset import export_run

    versions = result_versions(state) | state.get("versions", {})  # type: ignore[arg-type]
    rejected = [r["pair_id"] for s in state.get("results", []) for r in s["rejected"]]
    wanted = dict.fromkeys([*state.get("kept", []), *rejected, *(d["pair_id"] for d in state.get("dropped", []))])
    pairs = await store.get_pairs(list(wanted), versions)
    sections = await store.get_sections(list(state.get("section_ids", [])))
    return await asyncio.to_thread(export_run, out_dir, {p.id: p for p in pairs}, state, settings,
                                   {s.id: s for s in sections})


def route_after_export(state: RunState, runtime: Runtime[Context]) -> Literal["train", "__end__"]:
    return "train" if resolve(runtime.context).settings.train.enabled else "__end__"


async def train(state: RunState, runtime: Runtime[Context]) -> dict[str, Any]:
    """LoRA-train on the exported dataset (preset and method from settings; GRPO's reward: the run's validator)."""
    from doctune.trainer.pipeline import train_node

    ctx = await aresolve(runtime.context)
    reward = await ctx.areward_validator() if "grpo" in ctx.settings.train.method else None
    return {"train": await train_node(ctx.settings, ctx.out_dir, state["export"], validate_many=reward)}


async def evaluate(state: RunState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Before/after pass@1 on held-out tasks -> report.md."""
    from doctune.trainer.pipeline import evaluate_node

    ctx = await aresolve(runtime.context)
    from doctune.agents.validator import Validator

    return {"evaluation": await evaluate_node(ctx.settings, ctx.out_dir, state["export"], state["train"], Validator)}


# ---------------------------------------------------------------- helpers


def _section_failure(exc: BaseException, runtime: Runtime[Context]) -> bool:
    """Should this exception end the section with an error (True) rather than propagate?

    Transient errors propagate while the node's RetryPolicy still has attempts left (LangGraph retries the
    node); after the last attempt they, like permanent LLM failures, become the section's error. Anything else
    (a bug, a broken toolchain) propagates: that is not one section's problem.
    """
    from doctune.agents.llm import is_llm_failure, is_transient
    from doctune.graph.retry import LLM_RETRY

    if not is_llm_failure(exc):
        return False
    info = getattr(runtime, "execution_info", None)
    attempt = getattr(info, "node_attempt", 1) or 1
    return not (is_transient(exc) and attempt < LLM_RETRY.max_attempts)


async def _named_run(name: str, section_id: str, call: Callable[[], Awaitable[T]], **metadata: Any) -> T:
    """Await ``call()`` inside a child run named ``name`` (e.g. ``generate:<section>``) tagged with the section,
    so a LangSmith trace finds a section's LLM calls by name and tag. A no-op wrapper when tracing is off."""
    from langchain_core.runnables import RunnableConfig, RunnableLambda

    async def run(_: object) -> T:
        return await call()

    cfg = RunnableConfig(run_name=name, tags=[f"section:{section_id}"],
                         metadata={"section_id": section_id, **metadata})
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


def _eval_prompts(ctx: Context) -> list[str]:
    from doctune.evals import load_eval_prompts

    return load_eval_prompts(ctx.settings.eval.tasks)
