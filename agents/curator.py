"""The curator: what goes into the dataset after validation, and why anything was left out.

Defines ``curate`` (decontamination against the eval tasks, exact and near-duplicate removal on the normalised
instruction + code, the optional LLM judge, merging hand-written pair files with oversampling) and
``CurationResult`` (kept pairs, and every dropped pair with its reason). Near duplicates use MinHash LSH from
``datasketch`` when installed (the ``curate`` extra), else a small numpy MinHash with banding; candidates are
then confirmed with the exact Jaccard similarity, so both give the same answer up to LSH recall.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from pydantic import BaseModel, Field, ValidationError

from doctune.agents.judge import Judge
from doctune.agents.llm import GenerationError, Usage, is_transient
from doctune.core.errors import InputError
from doctune.core.schemas import EVIDENCE_RANK, Pair, extract_zig_blocks, sha256
from doctune.core.settings import CuratorSettings, Settings

SHINGLE = 5  # words per shingle for near-duplicate detection
NUM_PERM = 128
RECALL_MARGIN = 0.8  # LSH looks for candidates from 0.8 x threshold: exact Jaccard decides, LSH must not miss
MIN_EVAL_TOKENS = 6  # eval prompts shorter than this are too generic to decontaminate against
_WORD = re.compile(r"\w+")
_COMMENT = re.compile(r"//[^\n]*")


class CurationResult(BaseModel):
    """Pairs kept (input order, then extra pairs) and pairs dropped with the reason."""

    kept: list[Pair] = Field(default_factory=list)
    dropped: list[tuple[Pair, str]] = Field(default_factory=list)
    usage: Usage = Field(default_factory=Usage, description="Judge tokens.")
    notes: list[str] = Field(default_factory=list, description="Non-fatal problems (e.g. a judge call failed).")

    def reasons(self) -> Counter[str]:
        """How many pairs were dropped per kind of reason (the text before the first ':')."""
        return Counter(why.split(":", 1)[0] for _, why in self.dropped)


# ---------------------------------------------------------------- normalisation


def tokens(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def code_words(markdown: str) -> str:
    """The Zig code of a Markdown answer as normalised words (// comments dropped); "" without code."""
    return " ".join(tokens(_COMMENT.sub("", "\n".join(extract_zig_blocks(markdown)))))


def dedup_text(pair: Pair) -> str:
    """Normalised instruction + code (the response for pairs without code): case, whitespace, punctuation and
    // comments do not make two pairs different."""
    body = code_words(pair.response) or " ".join(tokens(pair.response))
    return " ".join(tokens(pair.instruction)) + " || " + body


def shingles(text: str, k: int = SHINGLE) -> set[str]:
    words = text.split()
    if len(words) <= k:
        return {" ".join(words)}
    return {" ".join(words[i : i + k]) for i in range(len(words) - k + 1)}


def jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


# ---------------------------------------------------------------- near-duplicate candidates


def _candidates_datasketch(sets: list[set[str]], threshold: float) -> list[list[int]] | None:
    try:
        from datasketch import MinHash, MinHashLSH
    except ImportError:
        return None
    lsh = MinHashLSH(threshold=threshold * RECALL_MARGIN, num_perm=NUM_PERM, weights=(0.2, 0.8))
    first = MinHash(num_perm=NUM_PERM, seed=1)
    kw = {"permutations": first.permutations}  # generating them per pair dominates otherwise
    if getattr(first, "scheme", None) is not None:  # datasketch >= 2 wants the scheme they came from
        kw["scheme"] = first.scheme
    out: list[list[int]] = []
    for i, s in enumerate(sets):
        m = MinHash(num_perm=NUM_PERM, seed=1, **kw)
        m.update_batch([x.encode() for x in s])
        out.append(sorted(int(k) for k in lsh.query(m)))
        lsh.insert(str(i), m)
    return out


def _candidates_numpy(sets: list[set[str]], threshold: float) -> list[list[int]]:
    """MinHash signatures with banding; bands of ``rows`` are chosen so pairs near ``threshold`` collide."""
    import numpy as np

    rng = np.random.default_rng(1)
    # Multiply-shift hashing of 64-bit shingle hashes (uint64 arithmetic wraps mod 2**64, which is the point).
    a = rng.integers(0, 2**64, NUM_PERM, dtype=np.uint64, endpoint=False) | np.uint64(1)
    b = rng.integers(0, 2**64, NUM_PERM, dtype=np.uint64, endpoint=False)
    rows = next(r for r in (16, 8, 4, 2, 1) if (1 / (NUM_PERM // r)) ** (1 / r) <= threshold * RECALL_MARGIN)
    buckets: dict[tuple[int, bytes], list[int]] = {}
    out: list[list[int]] = []
    for i, s in enumerate(sets):
        h = np.array([int(sha256(x, 16), 16) for x in s], dtype=np.uint64)
        sig = ((np.outer(h, a) + b) >> np.uint64(32)).min(axis=0)
        found: set[int] = set()
        for band in range(NUM_PERM // rows):
            key = (band, sig[band * rows : (band + 1) * rows].tobytes())
            found.update(buckets.get(key, ()))
            buckets.setdefault(key, []).append(i)
        out.append(sorted(found))
    return out


def near_duplicates(pairs: list[Pair], threshold: float) -> dict[int, int]:
    """{index of a dropped pair: index of the earlier pair it duplicates}; earlier = kept."""
    sets = [shingles(dedup_text(p)) for p in pairs]
    cands = _candidates_datasketch(sets, threshold)
    if cands is None:
        cands = _candidates_numpy(sets, threshold)
    dropped: dict[int, int] = {}
    for i, earlier in enumerate(cands):
        for j in earlier:
            if j not in dropped and jaccard(sets[i], sets[j]) >= threshold:
                dropped[i] = j
                break
    return dropped


def near_matches(reference: list[str], probes: list[str], threshold: float) -> dict[int, int]:
    """{index of a probe: index of a reference text it near-duplicates (shingle Jaccard >= ``threshold``)} for
    normalised texts (``tokens`` joined by spaces). Empty texts match nothing; probes are not compared with each
    other (decontaminating a test split against its train split)."""
    ref = [(i, shingles(t)) for i, t in enumerate(reference) if t]
    probe = [(i, shingles(t)) for i, t in enumerate(probes) if t]
    sets = [s for _, s in ref] + [s for _, s in probe]
    cands = _candidates_datasketch(sets, threshold)
    if cands is None:
        cands = _candidates_numpy(sets, threshold)
    found: dict[int, int] = {}
    for k, (i, s) in enumerate(probe):
        for j in cands[len(ref) + k]:
            if j < len(ref) and jaccard(s, ref[j][1]) >= threshold:
                found[i] = ref[j][0]
                break
    return found


# ---------------------------------------------------------------- decontamination


class Decontaminator:
    """Word n-gram overlap with the eval prompts (n = ``decontam_ngram``; shorter prompts count as one n-gram)."""

    def __init__(self, eval_prompts: Iterable[str], n: int):
        self.grams: dict[int, dict[tuple[str, ...], int]] = {}
        for k, prompt in enumerate(eval_prompts):
            toks = tokens(prompt)
            if len(toks) < MIN_EVAL_TOKENS:
                continue
            size = min(n, len(toks))
            table = self.grams.setdefault(size, {})
            for i in range(len(toks) - size + 1):
                table.setdefault(tuple(toks[i : i + size]), k)

    def check(self, pair: Pair) -> str | None:
        toks = tokens(pair.instruction + "\n" + pair.response)
        for size, table in self.grams.items():
            for i in range(len(toks) - size + 1):
                gram = tuple(toks[i : i + size])
                if gram in table:
                    return f"contaminated: shares a {size}-gram with eval task #{table[gram]} ({' '.join(gram[:8])} ...)"
        return None


# ---------------------------------------------------------------- extra hand-written pairs


def load_extra_pairs(paths: Iterable[Path | str]) -> list[Pair]:
    """Hand-written pairs from JSONL files: doctune pairs, ``{"instruction", "response"}`` or
    ``{"conversations"|"messages": [{"role", "content"}...]}`` lines."""
    out: list[Pair] = []
    for path in map(Path, paths):
        if not path.is_file():
            raise InputError(f"extra pairs file not found: {path} (curator.extra_pairs)")
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                out.append(_extra_pair(path, n, line))
    return out


def _extra_pair(path: Path, n: int, line: str) -> Pair:
    try:
        data = json.loads(line)
        if "section_id" in data:
            return Pair.model_validate(data)
        turns = data.get("conversations") or data.get("messages")
        if turns:
            data = {"instruction": next(t["content"] for t in turns if t["role"] == "user"),
                    "response": next(t["content"] for t in turns if t["role"] == "assistant")}
        instruction, response = str(data["instruction"]).strip(), str(data["response"]).strip()
    except (ValueError, KeyError, TypeError, StopIteration, ValidationError) as e:
        raise InputError(f"{path}:{n}: not a pair ({type(e).__name__}: {e}); expected "
                         '{"instruction": ..., "response": ...} or {"messages": [...]}') from None
    if not instruction or not response:
        raise InputError(f"{path}:{n}: empty instruction or response")
    return Pair(id="x-" + sha256(f"{path.name}|{instruction}|{response}"), section_id="extra", heading_path="",
                source=str(path), instruction=instruction, response=response,
                kind="code" if extract_zig_blocks(response) else "conceptual", generator="hand-written")


def oversample(pairs: list[Pair], times: int) -> list[Pair]:
    """Each pair ``times`` times (copies get ``-r<k>`` ids), as the original recipe repeated its facts file."""
    out = list(pairs)
    for k in range(1, times):
        out += [p.model_copy(update={"id": f"{p.id}-r{k}", "meta": {**p.meta, "oversample_copy": k}}) for p in pairs]
    return out


# ---------------------------------------------------------------- the curator


def below_min_evidence(pair: Pair, minimum: str | None) -> str | None:
    """Why ``pair`` is dropped by ``curator.min_evidence`` (None: it is kept)."""
    if minimum is None or EVIDENCE_RANK.get(pair.evidence, 0) >= EVIDENCE_RANK[minimum]:
        return None
    return f"below_min_evidence: {pair.evidence} < {minimum}"



def _preference(pair: Pair) -> tuple[int, str]:
    """Which of two duplicates to keep: stronger evidence first, then a stable id order (not arrival order,
    which Send fan-out makes nondeterministic)."""
    return (-EVIDENCE_RANK.get(pair.evidence, 0), pair.id)


def _dedup(pairs: list[Pair], cs: CuratorSettings, result: CurationResult) -> list[Pair]:
    ordered = sorted(pairs, key=_preference)
    seen: dict[str, Pair] = {}
    unique: list[Pair] = []
    for p in ordered:
        key = sha256(dedup_text(p))
        if key in seen:
            result.dropped.append((p, f"duplicate: same instruction and code as {seen[key].id}"))
        else:
            seen[key] = p
            unique.append(p)
    near = near_duplicates(unique, cs.near_dup_threshold)
    for i, j in near.items():
        result.dropped.append((unique[i], f"near-duplicate: Jaccard >= {cs.near_dup_threshold} with {unique[j].id}"))
    return [p for i, p in enumerate(unique) if i not in near]


async def _judge_all(pairs: list[Pair], judge: Judge, settings: Settings, result: CurationResult) -> list[Pair]:
    sem = asyncio.Semaphore(settings.generator.concurrency)
    threshold = settings.curator.judge_threshold

    async def one(p: Pair) -> Pair | None:
        async with sem:
            try:
                v = await judge.score(p)
            except Exception as e:  # a judge failure is no evidence against the pair: keep it, say so
                if not (is_transient(e) or isinstance(e, GenerationError)):
                    raise  # a refused endpoint (401, 404) fails the node with a clear message
                result.notes.append(f"judge failed on {p.id}: {type(e).__name__}: {e}")
                return p
        p.judge_score = v.score
        p.meta["judge_reason"] = v.reason
        if v.score < threshold:
            result.dropped.append((p, f"judge: score {v.score} < {threshold} ({v.reason})"))
            return None
        return p

    scored = await asyncio.gather(*(one(p) for p in pairs))
    return [p for p in scored if p is not None]


async def curate(pairs: list[Pair], settings: Settings, *, eval_prompts: list[str],
                 judge: Judge | None = None, extra: list[Pair] | None = None) -> CurationResult:
    """Drop pairs below ``curator.min_evidence``, decontaminate, deduplicate and (optionally) judge ``pairs``;
    merge the hand-written extra pairs (not validated, so ``min_evidence`` does not apply to them).

    ``judge``: pass one to score pairs (conceptual answers checked against their section when it was built with
    ``section_text``); with ``curator.judge`` set and no judge given, one is built from ``settings.llm``.
    ``extra``: hand-written pairs (default: loaded from ``curator.extra_pairs``), kept out of dedup and the judge,
    repeated ``curator.extra_oversample`` times. Kept pairs come back in input order, extras last.
    """
    cs = settings.curator
    result = CurationResult()
    decon = Decontaminator(eval_prompts, cs.decontam_ngram) if cs.decontaminate else None
    order = {p.id: i for i, p in enumerate(pairs)}
    survivors = []
    for p in pairs:
        why = below_min_evidence(p, cs.min_evidence) or (decon.check(p) if decon else None)
        if why:
            result.dropped.append((p, why))
        else:
            survivors.append(p)
    if cs.dedup:
        survivors = _dedup(survivors, cs, result)
    own_judge = judge is None and cs.judge
    if own_judge:
        judge = Judge(settings)
    if judge is not None:
        try:
            survivors = await _judge_all(survivors, judge, settings, result)
        finally:
            result.usage = judge.usage
            if own_judge:
                await judge.aclose()
    result.kept = sorted(survivors, key=lambda p: order[p.id])
    extras = load_extra_pairs(cs.extra_pairs) if extra is None else extra
    for p in extras:
        if why := (decon.check(p) if decon else None):
            result.dropped.append((p, why))
        else:
            result.kept += oversample([p], cs.extra_oversample)
    return result
