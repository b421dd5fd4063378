"""Assistant-only loss: labels mask everything but assistant tokens, on both backends' data paths.

- hf path: ``tokenize_conversation`` → TRL ``SFTTrainer`` (checked on the trainer's own prepared dataset and on
  a collated batch, so TRL cannot have dropped or rebuilt our labels);
- unsloth path: ``response_only_labels`` (the rule of Unsloth's ``train_on_responses_only``) on the whole text
  tokenized at once — it must select exactly the same tokens.
Uses the real SmolLM2 tokenizer (ChatML, like Qwen2.5's).
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("transformers")
pytest.importorskip("trl")

from doctune.core.errors import ConfigError  # noqa: E402
from doctune.trainer.data import (  # noqa: E402
    CHATML_INSTRUCTION,
    CHATML_RESPONSE,
    IGNORE,
    chat_markers,
    prepare_dataset,
    render,
    response_only_labels,
    tokenize_conversation,
)

pytestmark = pytest.mark.train

CONVERSATIONS = [
    [
        {"role": "user", "content": "Write `pub fn add(a: i32, b: i32) i32` in Zig."},
        {"role": "assistant", "content": "```zig\npub fn add(a: i32, b: i32) i32 {\n    return a + b;\n}\n```"},
    ],
    [
        {"role": "system", "content": "You answer Zig questions."},
        {"role": "user", "content": "What does `defer` do?"},
        {"role": "assistant", "content": "It runs a statement when the scope exits, in reverse order."},
        {"role": "user", "content": "And errdefer?"},
        {"role": "assistant", "content": "The same, but only when the scope exits with an error."},
    ],
]


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from doctune.trainer.smollm2 import hf_model_dir

    return AutoTokenizer.from_pretrained(hf_model_dir())


def _ids(tok, text: str) -> list[int]:
    return list(tok(text, add_special_tokens=False)["input_ids"])


def _assistant_text(tok, msgs) -> str:
    return "".join(m["content"] + "<|im_end|>\n" for m in msgs if m["role"] == "assistant")


@pytest.mark.parametrize("msgs", CONVERSATIONS)
def test_hf_labels_are_exactly_the_assistant_replies(tokenizer, msgs) -> None:
    out = tokenize_conversation(tokenizer, msgs)
    ids, labels = out["input_ids"], out["labels"]
    assert len(ids) == len(labels)
    assert tokenizer.decode(ids) == render(tokenizer, msgs)  # nothing lost or added
    kept = [t for t in labels if t != IGNORE]
    assert tokenizer.decode(kept) == _assistant_text(tokenizer, msgs)
    # every kept label equals its input token; every user/system token is masked
    assert all(lab in (IGNORE, tid) for tid, lab in zip(ids, labels, strict=True))
    masked = tokenizer.decode([t for t, lab in zip(ids, labels, strict=True) if lab == IGNORE])
    for m in msgs:
        if m["role"] != "assistant":
            assert m["content"] in masked


@pytest.mark.parametrize("msgs", CONVERSATIONS)
def test_unsloth_rule_selects_the_same_tokens(tokenizer, msgs) -> None:
    whole = _ids(tokenizer, render(tokenizer, msgs))  # Unsloth tokenizes the rendered text in one go
    ours = tokenize_conversation(tokenizer, msgs)
    assert whole == ours["input_ids"]
    inst, resp = chat_markers(tokenizer)
    assert (inst, resp) == (CHATML_INSTRUCTION, CHATML_RESPONSE)
    assert response_only_labels(whole, _ids(tokenizer, inst), _ids(tokenizer, resp)) == ours["labels"]


def test_full_text_loss_restores_the_recipe(tokenizer) -> None:
    out = tokenize_conversation(tokenizer, CONVERSATIONS[0], assistant_only=False)
    assert out["labels"] == out["input_ids"]


def test_response_rule_on_plain_ids() -> None:
    # markers: instruction = [1, 2], response = [1, 3]
    ids = [9, 1, 2, 5, 5, 1, 3, 7, 8, 1, 2, 6, 1, 3, 4]
    assert response_only_labels(ids, [1, 2], [1, 3]) == [IGNORE] * 7 + [7, 8] + [IGNORE] * 5 + [4]
    assert response_only_labels([5, 6], [1, 2], [1, 3]) == [IGNORE, IGNORE]


def test_non_chatml_template_is_refused(tokenizer) -> None:
    import copy

    tok = copy.deepcopy(tokenizer)
    tok.chat_template = "{% for m in messages %}### {{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    with pytest.raises(ConfigError, match="assistant_only_loss=false"):
        chat_markers(tok)


def test_trl_keeps_our_labels_and_pads_with_ignore(tokenizer) -> None:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM

    from doctune.trainer.config import resolve_config
    from doctune.trainer.hf_backend import lora_config, sft_config, trainer_class
    from doctune.trainer.smollm2 import hf_model_dir

    cfg = resolve_config("cpu-smollm2")
    data, stats = prepare_dataset(tokenizer, Dataset.from_list([{"messages": m} for m in CONVERSATIONS]),
                                  assistant_only=True, cap=cfg.max_seq_length)
    assert stats.truncated == 0 and stats.max_length == max(len(x) for x in data["input_ids"])
    model = AutoModelForCausalLM.from_pretrained(hf_model_dir())
    trainer = trainer_class(None)(model=model, args=sft_config(cfg, Path("/tmp/doctune-unused"), stats.max_length),
                                  train_dataset=data, processing_class=tokenizer, peft_config=lora_config(cfg))
    want = {tuple(r["input_ids"]): r["labels"] for r in data}
    prepared = list(trainer.train_dataset)
    assert len(prepared) == len(CONVERSATIONS)
    for row in prepared:
        assert list(row["labels"]) == want[tuple(row["input_ids"])]
    batch = trainer.data_collator(prepared)
    for ids, labels, mask in zip(batch["input_ids"], batch["labels"], batch["attention_mask"], strict=True):
        n = int(mask.sum())
        real = [int(t) for t in ids[mask.bool()]]
        assert [int(x) for x in labels[mask.bool()]] == want[tuple(real)]
        assert all(int(x) == IGNORE for x in labels[~mask.bool()]) and n > 0


def test_long_examples_are_counted_and_warned(tokenizer, capsys) -> None:
    from datasets import Dataset

    data, stats = prepare_dataset(tokenizer, Dataset.from_list([{"messages": m} for m in CONVERSATIONS]),
                                  assistant_only=True, cap=64)
    assert stats.truncated == 2 and stats.max_length == 64 and stats.max_tokens > 64
    assert "will be cut" in capsys.readouterr().err
