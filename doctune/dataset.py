"""Dataset I/O: the run's files (pairs.jsonl, rejected.jsonl), the HF DatasetDict with its card, and loading.

The train/test split is by section: all pairs of a section land on one side, so the test split measures
generalisation to unseen doc sections, not memorised near-copies.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from doctune.schemas import Pair
from doctune.settings import Settings

_UMASK = os.umask(0)  # read the process umask (the only API sets it), then put it back
os.umask(_UMASK)
FILE_MODE = 0o666 & ~_UMASK  # what open() would give; mkstemp's 0600 would surprise users

DATASET_COLUMNS = ("messages", "id", "section_id", "heading_path", "source", "generator", "evidence")


def pair_record(p: Pair) -> dict[str, Any]:
    """One line of pairs.jsonl: ChatML messages + metadata."""
    v = p.verdict
    return {
        "messages": p.messages(),
        "id": p.id,
        "section_id": p.section_id,
        "heading_path": p.heading_path,
        "source": p.source,
        "generator": p.generator,
        "kind": p.kind,
        "evidence": p.evidence,
        "prompt_hash": p.prompt_hash,
        "judge_score": p.judge_score,
        "repairs": max(0, len(p.attempts) - 1),
        "verdict": v.model_dump(include={"verdict", "mode", "compiled_only", "duration_s", "executor"}) if v else None,
    }


def rejected_record(p: Pair, reason: str) -> dict[str, Any]:
    """One line of rejected.jsonl: the pair, why it was dropped, and the compiler's message."""
    return {
        "id": p.id,
        "section_id": p.section_id,
        "heading_path": p.heading_path,
        "reason": reason,
        "instruction": p.instruction,
        "response": p.response,
        "generator": p.generator,
        "verdict": p.verdict.model_dump(mode="json") if p.verdict else None,
        "attempts": [a.model_dump(mode="json") for a in p.attempts],
    }


def write_jsonl(path: Path, rows: Iterable[Mapping[str, Any]]) -> int:
    """Atomically write rows as JSONL; returns the count."""
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, encoding="utf-8", suffix=".tmp") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    os.chmod(f.name, FILE_MODE)
    Path(f.name).replace(path)
    return n


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def split_by_section(records: list[dict[str, Any]], test_size: float, seed: int) -> tuple[list, list]:
    """Whole sections go to test until about `test_size` of the sections are there (at least one if >= 2)."""
    sections = sorted({r["section_id"] for r in records})
    random.Random(seed).shuffle(sections)
    n_test = round(len(sections) * test_size)
    if test_size > 0 and n_test == 0 and len(sections) >= 2:
        n_test = 1
    test_ids = set(sections[:n_test])
    train = [r for r in records if r["section_id"] not in test_ids]
    test = [r for r in records if r["section_id"] in test_ids]
    return train, test


def save_dataset(records: list[dict[str, Any]], out: Path, test_size: float, seed: int) -> dict[str, int]:
    """Save a DatasetDict(train, test) to `out` (replacing it atomically)."""
    from datasets import Dataset, DatasetDict, Features, Value
    from datasets.utils.logging import disable_progress_bar

    disable_progress_bar()  # our own progress display owns the terminal

    features = Features(
        {
            "messages": [{"role": Value("string"), "content": Value("string")}],
            **{c: Value("string") for c in DATASET_COLUMNS if c != "messages"},
        }
    )
    train, test = split_by_section(records, test_size, seed)

    def ds(rows: list[dict[str, Any]]) -> Dataset:
        cols = {c: [r[c] for r in rows] for c in DATASET_COLUMNS}
        return Dataset.from_dict(cols, features=features)

    dd = DatasetDict({"train": ds(train), "test": ds(test)})
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=".dataset-"))
    dd.save_to_disk(str(tmp))
    if out.exists():
        shutil.rmtree(out)
    tmp.replace(out)
    return {"train": len(train), "test": len(test)}


def export_run(out_dir: Path, pairs: Mapping[str, Pair], state: Mapping[str, Any], settings: Settings
               ) -> dict[str, Any]:
    """Write every output of a run and return a small summary (paths and counts). `pairs` holds, by id, every
    pair the state names (kept, rejected, dropped) as the run's store has it at this state's versions."""
    from doctune.dataset_card import write_card

    results = state.get("results", [])
    kept = [pairs[pid] for pid in state.get("kept", [])]
    rejected_rows = [rejected_record(pairs[r["pair_id"]], r["reason"]) for s in results for r in s["rejected"]]
    rejected_rows += [rejected_record(pairs[d["pair_id"]], d["reason"]) for d in state.get("dropped", [])]
    failed = [{"section_id": s["section_id"], "reason": "section_failed", "error": s["error"]} for s in results if s["error"]]
    records = [pair_record(p) for p in kept]
    n_pairs = write_jsonl(out_dir / "pairs.jsonl", records)
    write_jsonl(out_dir / "rejected.jsonl", rejected_rows + failed)
    split_counts = save_dataset(records, out_dir / "dataset", settings.dataset.test_size, settings.dataset.seed)
    reasons = Counter(r["reason"] for r in rejected_rows)
    info: dict[str, Any] = {
        "pairs": n_pairs,
        "rejected": len(rejected_rows),
        "failed_sections": len(failed),
        "reasons": dict(reasons),
        "splits": split_counts,
        "pairs_path": str(out_dir / "pairs.jsonl"),
        "rejected_path": str(out_dir / "rejected.jsonl"),
        "dataset_path": str(out_dir / "dataset"),
        "generators": dict(Counter(p.generator for p in kept)),
        "evidence": dict(Counter(p.evidence for p in kept)),
        "sources": sorted({p.source for p in kept}),
        "tokens": {k: sum(s["tokens"].get(k, 0) for s in results) for k in ("input", "output")},
    }
    write_card(out_dir / "dataset" / "README.md", info, kept, settings)
    if settings.dataset.push_to_hub:
        from datasets import load_from_disk

        load_from_disk(str(out_dir / "dataset")).push_to_hub(
            settings.dataset.push_to_hub, private=settings.dataset.hub_private
        )
        info["pushed_to"] = settings.dataset.push_to_hub
    return info
