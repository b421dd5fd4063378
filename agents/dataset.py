"""Dataset I/O: the run's files (pairs.jsonl, rejected.jsonl), the HF DatasetDict with its card, and loading.

The train/test split is by section: all pairs of a section land on one side, so the test split measures
generalisation to unseen doc sections, not memorised near-copies.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from doctune.agents.dataset_yield import difficulty
from doctune.core.errors import InputError
from doctune.core.files import FILE_MODE
from doctune.core.schemas import EVIDENCE_RANK, Pair, Section, extract_zig_blocks
from doctune.core.settings import Settings

DATASET_COLUMNS = ("messages", "id", "section_id", "heading_path", "source", "generator", "evidence", "tests",
                   "expect_stdout", "attempts", "difficulty")
INT_COLUMNS = ("attempts",)


def stated_stdout(p: Pair) -> str | None:
    """The stdout a pair states for its program (None when it states none, or expects a failure)."""
    return p.expect.stdout if p.expect is not None and p.expect.outcome == "ok" else None


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
        "attempts": len(p.attempts),
        "difficulty": difficulty(len(p.attempts)),
        "tests": p.tests if p.evidence == "tested" else None,  # only tests that proved the pair (not vacuous)
        "expect_stdout": stated_stdout(p),
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
    """Save a DatasetDict(train, test) to `out` (replacing it atomically); a split without rows is left out."""
    from datasets import Dataset, DatasetDict, Features, Value
    from datasets.utils.logging import disable_progress_bar

    disable_progress_bar()  # our own progress display owns the terminal

    features = Features(
        {
            "messages": [{"role": Value("string"), "content": Value("string")}],
            **{c: Value("int32" if c in INT_COLUMNS else "string") for c in DATASET_COLUMNS if c != "messages"},
        }
    )
    train, test = split_by_section(records, test_size, seed)

    def ds(rows: list[dict[str, Any]]) -> Dataset:
        cols = {c: [r[c] for r in rows] for c in DATASET_COLUMNS}
        return Dataset.from_dict(cols, features=features)

    # An empty split is left out: `datasets` saves it without a data file and then cannot load it back
    # (IndexError in load_from_disk), so a one-section run would export a dataset nobody can train on.
    dd = DatasetDict({name: ds(rows) for name, rows in (("train", train), ("test", test)) if rows})
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=".dataset-"))
    dd.save_to_disk(str(tmp))
    if out.exists():
        shutil.rmtree(out)
    tmp.replace(out)
    return {"train": len(train), "test": len(test)}


def _section(sections: Mapping[str, Section], section_id: str) -> tuple[str, str]:
    """A section's heading path and source (for results recorded without them)."""
    s = sections.get(section_id)
    if s is None:
        return section_id, "?"
    return s.heading_path or section_id, s.source


def export_run(out_dir: Path, pairs: Mapping[str, Pair], state: Mapping[str, Any], settings: Settings,
               sections: Mapping[str, Section] | None = None) -> dict[str, Any]:
    """Write every output of a run and return a small summary (paths and counts). `pairs` holds, by id, every
    pair the state names (kept, rejected, dropped) as the run's store has it at this state's versions;
    `sections` (by id) names the sections of results recorded without their heading and source."""
    from doctune.agents.dataset_card import write_card
    from doctune.agents.dataset_yield import section_yields, source_yields

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
    known = sections or {}
    by_section = section_yields(results, lambda sid: _section(known, sid)[0], state.get("section_ids", []),
                                lambda sid: _section(known, sid)[1])
    info["yield"] = [y.to_json() for y in source_yields(by_section)]  # per source (small: it goes into the state)
    write_card(out_dir / "dataset" / "README.md", info, kept, settings, sections=by_section)
    if settings.dataset.push_to_hub:
        from datasets import load_from_disk

        load_from_disk(str(out_dir / "dataset")).push_to_hub(
            settings.dataset.push_to_hub, private=settings.dataset.hub_private
        )
        info["pushed_to"] = settings.dataset.push_to_hub
    return info


# ---------------------------------------------------------------- the test split as eval tasks

EVAL_TASKS_FILE, EVAL_ANSWERS_FILE = "eval-tasks.jsonl", "eval-answers.jsonl"
_TEST_DECL = re.compile(r'\btest(?:\s*"|\s+[A-Za-z_@]|\s*\{)')  # as doctune.trainer.tasks.TEST_DECL
_MAIN_DECL = re.compile(r"\bpub\s+fn\s+main\s*\(")


def load_dataset_dict(path: Path) -> Any:
    """The saved DatasetDict of a run's out dir (its ``dataset/``) or of a dataset folder. An empty test split is
    not saved (a run of one section has every pair on the train side)."""
    from datasets import DatasetDict, load_from_disk

    folder = path / "dataset" if (path / "dataset" / "dataset_dict.json").is_file() else path
    if not (folder / "dataset_dict.json").is_file():
        raise InputError(f"{path}: no exported dataset (expected {path}/dataset/ from `doctune run`)")
    data = load_from_disk(str(folder))
    if not isinstance(data, DatasetDict) or "train" not in data:
        raise InputError(f"{folder}: expected a DatasetDict with a train split (and a test split, unless empty)")
    return data


def _turn(row: Mapping[str, Any], role: str) -> str:
    return next((m["content"] for m in row.get("messages") or [] if m["role"] == role), "")


def _solution(response: str) -> str | None:
    """The code an evaluator runs for this answer: its longest ```zig block (ties: the first)."""
    blocks = [b for b in extract_zig_blocks(response) if b.strip()]
    return max(blocks, key=len) if blocks else None


def eval_task(row: Mapping[str, Any]) -> tuple[dict[str, Any] | None, str]:
    """(the eval task of a test-split row, "") or (None, why it cannot be one). A task needs checks of its own that
    the validator proved the solution passes: hidden tests (evidence ``tested``) or a stated stdout (a program,
    evidence ``ran`` or better)."""
    prompt, code = _turn(row, "user"), _solution(_turn(row, "assistant"))
    tests, stdout, evidence = row.get("tests"), row.get("expect_stdout"), row.get("evidence") or "none"
    base = {"id": str(row["id"]), "prompt": prompt, "topic": row.get("heading_path") or None}
    if not prompt or code is None:
        return None, "no code"
    if tests and _TEST_DECL.search(tests):
        if evidence != "tested":
            return None, f"hidden tests not proven (evidence {evidence})"
        return {**base, "mode": "test", "tests": tests}, ""
    if stdout is not None:
        if not _MAIN_DECL.search(code):
            return None, "stated stdout but no `pub fn main`"
        if EVIDENCE_RANK.get(evidence, 0) < EVIDENCE_RANK["ran"]:
            return None, f"stated stdout not proven (evidence {evidence})"
        if row.get("generator") == "doc-examples" and stdout.strip() not in prompt:
            # the doc-example generator names a program's output in its instruction only when it is one line:
            # a model could not know the exact stdout that would be required
            return None, "stdout not named in the prompt"
        return {**base, "mode": "run", "expect_stdout": stdout}, ""
    return None, "no hidden tests or stated stdout"


def decontaminate_tasks(tasks: list[dict[str, Any]], answers: list[str], train: list[Mapping[str, Any]],
                        threshold: float) -> dict[int, str]:
    """{index of a task: why it goes}: its prompt or its solution's code near-duplicates a train pair's."""
    from doctune.agents.curator import code_words, near_matches, tokens

    why: dict[int, str] = {}
    for what, ref, probe in (
        ("prompt", [" ".join(tokens(_turn(r, "user"))) for r in train], [" ".join(tokens(t["prompt"])) for t in tasks]),
        ("code", [code_words(_turn(r, "assistant")) for r in train], [code_words(a) for a in answers]),
    ):
        for i, j in near_matches(ref, probe, threshold).items():
            why.setdefault(i, f"near-duplicate of a train pair ({what} of {train[j]['id']})")
    return why


def export_eval_tasks(run_dir: Path, out_dir: Path | None = None, *, threshold: float = 0.85) -> dict[str, Any]:
    """Write the run's test split as eval tasks (``eval-tasks.jsonl``, the format ``doctune eval --tasks`` reads)
    and the run's own solutions as an answers file (``eval-answers.jsonl``, for ``--model ref=answers:FILE``);
    return counts, skips by reason and the paths. Tasks near-duplicating the train split are left out."""
    data = load_dataset_dict(Path(run_dir))
    train, test = list(data["train"]) if "train" in data else [], list(data["test"]) if "test" in data else []
    tasks, answers, skipped = [], [], []
    for row in test:
        task, why = eval_task(row)
        if task is None:
            skipped.append({"id": str(row["id"]), "reason": why})
        else:
            tasks.append(task)
            answers.append(_turn(row, "assistant"))
    dirty = decontaminate_tasks(tasks, answers, train, threshold)
    skipped += [{"id": tasks[i]["id"], "reason": why} for i, why in sorted(dirty.items())]
    keep = [i for i in range(len(tasks)) if i not in dirty]
    out = Path(out_dir or run_dir)
    tasks_path, answers_path = out / EVAL_TASKS_FILE, out / EVAL_ANSWERS_FILE
    write_jsonl(tasks_path, ({k: v for k, v in tasks[i].items() if v is not None} for i in keep))
    write_jsonl(answers_path, ({"id": tasks[i]["id"], "answer": answers[i]} for i in keep))
    return {
        "tasks": len(keep), "test_pairs": len(test),
        "modes": dict(Counter(tasks[i]["mode"] for i in keep)),
        "skipped": dict(Counter(s["reason"].split(" (")[0] for s in skipped)),  # by kind of reason
        "skipped_ids": skipped, "tasks_path": str(tasks_path), "answers_path": str(answers_path),
    }


def export_summary_line(info: Mapping[str, Any]) -> str:
    """One line: tasks written (by mode), skipped (by reason), where."""
    modes = ", ".join(f"{k} {v}" for k, v in sorted(info["modes"].items()))
    skips = "; ".join(f"{k}: {v}" for k, v in sorted(info["skipped"].items())) or "none"
    return (f"{info['tasks']} eval tasks ({modes or 'none'}) from {info['test_pairs']} test-split pairs; "
            f"skipped {sum(info['skipped'].values())} ({skips}) -> {info['tasks_path']}, answers "
            f"{info['answers_path']}")
