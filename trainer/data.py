"""Training data: load the exported dataset, render ChatML, tokenize, and mask everything but assistant tokens.

Two masking paths, one per backend, tested against each other:
- ``tokenize_conversation`` (hf backend): renders the conversation with the tokenizer's chat template and
  tokenizes it segment by segment (prompt up to the generation prompt, then each assistant reply), so labels are
  exactly the assistant replies (with their end-of-turn token) and the prompt tokens match inference.
- ``response_only_labels`` (unsloth backend): the rule of Unsloth's ``train_on_responses_only`` on an already
  tokenized text — train from after each response marker up to the next instruction marker. The unsloth backend
  calls Unsloth itself; this function is its testable twin, used to check Unsloth's labels at run time.

``prepare_dataset`` sets ``max_length`` from the data and warns when any example is longer than the cap.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from doctune.core.errors import ConfigError, InputError

IGNORE = -100
CHATML_INSTRUCTION = "<|im_start|>user\n"
CHATML_RESPONSE = "<|im_start|>assistant\n"


class LengthStats(BaseModel):
    """Token lengths of the training examples and what the cap did to them."""

    n: int
    max_tokens: int
    mean_tokens: float
    total_tokens: int
    max_length: int
    truncated: int
    trained_tokens: int


def load_splits(path: Path) -> tuple[Any, Any | None]:
    """(train, test or None) from a ``DatasetDict.save_to_disk`` folder, a run's out dir, or a pairs JSONL."""
    from datasets import Dataset, DatasetDict, load_from_disk

    path = Path(path)
    if path.is_dir() and not (path / "dataset_dict.json").is_file() and (path / "dataset").is_dir():
        path = path / "dataset"  # a `doctune run` output folder
    if path.is_file():
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if not rows:
            raise InputError(f"{path}: no training examples")
        return Dataset.from_list([{"messages": conversation(r), **reward_fields(r)} for r in rows]), None
    if not path.is_dir():
        raise InputError(f"dataset not found: {path} (give the export's dataset/ folder or pairs.jsonl)")
    try:
        data = load_from_disk(str(path))
    except Exception as e:  # datasets raises FileNotFoundError or its own errors for foreign folders
        raise InputError(f"{path} is not a saved Hugging Face dataset: {e}") from None
    if isinstance(data, DatasetDict):
        if "train" not in data:
            raise InputError(f"{path}: the dataset has no 'train' split (splits: {', '.join(data)})")
        return data["train"], data.get("test")
    return data, None


def reward_fields(row: dict[str, Any]) -> dict[str, Any]:
    """What GRPO's reward reads besides the messages (``doctune.trainer.reward``): the id, hidden ``tests``,
    ``expect_stdout`` and the reference's verdict ``mode``; the same keys for every row (None when absent)."""
    verdict = row.get("verdict")
    mode = row.get("mode") or (verdict.get("mode") if isinstance(verdict, dict) else None)
    return {"id": None if row.get("id") is None else str(row["id"]), "tests": row.get("tests"),
            "expect_stdout": row.get("expect_stdout"), "mode": mode}


def conversation(row: dict[str, Any]) -> list[dict[str, str]]:
    """The row's ChatML messages (``messages``, the recipe's ``conversations``, or instruction/response)."""
    msgs = row.get("messages") or row.get("conversations")
    if msgs is None and "instruction" in row and "response" in row:
        msgs = [{"role": "user", "content": row["instruction"]}, {"role": "assistant", "content": row["response"]}]
    if not msgs or not any(m.get("role") == "assistant" for m in msgs):
        raise InputError(f"example {row.get('id', '?')!r} has no assistant message")
    return [{"role": m["role"], "content": m["content"]} for m in msgs]


def render(tokenizer: Any, messages: list[dict[str, str]], *, generation_prompt: bool = False) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)


def _encode(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []


def tokenize_conversation(
    tokenizer: Any, messages: list[dict[str, str]], *, assistant_only: bool = True
) -> dict[str, list[int]]:
    """``input_ids`` and ``labels`` (-100 outside assistant replies when ``assistant_only``)."""
    full = render(tokenizer, messages)
    ids: list[int] = []
    labels: list[int] = []
    done = 0  # characters of `full` already tokenized
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        prompt = render(tokenizer, messages[:i], generation_prompt=True)
        upto = render(tokenizer, messages[: i + 1])
        if not (full.startswith(prompt) and full.startswith(upto) and len(prompt) >= done):
            raise InputError("the chat template does not render conversations prefix by prefix; cannot mask")
        seg = _encode(tokenizer, full[done : len(prompt)])
        ids += seg
        labels += [IGNORE] * len(seg)
        reply = _encode(tokenizer, full[len(prompt) : len(upto)])
        ids += reply
        labels += reply
        done = len(upto)
    tail = _encode(tokenizer, full[done:])
    ids += tail
    labels += [IGNORE] * len(tail)
    if not assistant_only:
        labels = list(ids)
    return {"input_ids": ids, "labels": labels}


def _find(seq: list[int], sub: list[int], start: int) -> int:
    first, n = sub[0], len(sub)
    for j in range(start, len(seq) - n + 1):
        if seq[j] == first and seq[j : j + n] == sub:
            return j
    return -1


def response_only_labels(input_ids: list[int], instruction_ids: list[int], response_ids: list[int]) -> list[int]:
    """Unsloth's ``train_on_responses_only`` rule: labels only from after each response marker up to the next
    instruction marker (or the end); everything else, markers included, is -100."""
    labels = [IGNORE] * len(input_ids)
    j = 0
    while (a := _find(input_ids, response_ids, j)) >= 0:
        start = a + len(response_ids)
        nxt = _find(input_ids, instruction_ids, start)
        end = len(input_ids) if nxt < 0 else nxt
        labels[start:end] = input_ids[start:end]
        j = end
    return labels


def prepare_dataset(tokenizer: Any, train: Any, *, assistant_only: bool, cap: int) -> tuple[Any, LengthStats]:
    """Tokenize ``train`` (a ``datasets.Dataset`` with ``messages``) → columns ``input_ids``, ``labels``."""
    import datasets
    from rich.console import Console

    datasets.disable_progress_bars()  # ours and TRL's dataset passes take seconds; the training bar is what counts

    def _map(row: dict[str, Any]) -> dict[str, list[int]]:
        return tokenize_conversation(tokenizer, conversation(row), assistant_only=assistant_only)

    tokenized = train.map(_map, remove_columns=train.column_names)
    lengths = [len(x) for x in tokenized["input_ids"]]
    if not lengths:
        raise InputError("the training split is empty")
    longest = max(lengths)
    truncated = sum(1 for n in lengths if n > cap)
    if truncated:
        Console(stderr=True).print(
            f"[yellow]warning:[/] {truncated} of {len(lengths)} examples are longer than max_seq_length={cap} "
            f"tokens (longest {longest}) and will be cut; raise max_seq_length to keep them whole"
        )
    trained = sum(sum(1 for t in lab[:cap] if t != IGNORE) for lab in tokenized["labels"])
    stats = LengthStats(
        n=len(lengths),
        max_tokens=longest,
        mean_tokens=round(sum(lengths) / len(lengths), 1),
        total_tokens=sum(min(n, cap) for n in lengths),
        max_length=min(longest, cap),
        truncated=truncated,
        trained_tokens=trained,
    )
    return tokenized, stats


def chat_markers(tokenizer: Any) -> tuple[str, str]:
    """(instruction_part, response_part) for ``train_on_responses_only``, read off the tokenizer's template."""
    probe = render(tokenizer, [{"role": "user", "content": "x"}], generation_prompt=True)
    if CHATML_INSTRUCTION in probe and probe.endswith(CHATML_RESPONSE):
        return CHATML_INSTRUCTION, CHATML_RESPONSE
    raise ConfigError(
        "assistant-only loss needs the chat template's turn markers and this template is not ChatML; use a ChatML "
        "template (chat_template='qwen-2.5') or set assistant_only_loss=false"
    )
