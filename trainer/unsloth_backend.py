"""The ``unsloth`` backend (GPU): the original recipe's training code path, with assistant-only loss.

``FastLanguageModel.from_pretrained(load_in_4bit=...)`` → ``get_peft_model`` (embed_tokens/lm_head trained with
``embedding_learning_rate``) → chat template from ``unsloth.chat_templates`` → ``UnslothTrainer`` +
``UnslothTrainingArguments`` → ``train_on_responses_only``. Needs the ``[gpu]`` extra and a CUDA GPU; this module
imports Unsloth only when ``train`` is called, and Unsloth is imported before transformers/TRL/PEFT as it requires.
Its masking rule is mirrored by ``doctune.trainer.data.response_only_labels`` (tested without Unsloth) and the
labels Unsloth builds are checked against it before training. SFT-specific arguments (sequence length, packing,
text field) are chosen from the training-arguments class's real fields (``seq_length_kwarg``, tested against
unpatched TRL). ``train_grpo`` is the GRPO path: TRL's ``GRPOTrainer`` as Unsloth patches it, without vLLM.
"""

from __future__ import annotations

import inspect
import json
import os
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from doctune.core.errors import ConfigError, ToolchainError
from doctune.trainer.config import TrainConfig
from doctune.trainer.data import (
    IGNORE,
    chat_markers,
    conversation,
    prepare_dataset,
    render,
    response_only_labels,
)
from doctune.trainer.hf_backend import config_fields
from doctune.trainer.outputs import TrainResult, run_summary, save_outputs

console = Console(stderr=True)


def import_unsloth() -> dict[str, Any]:
    """Unsloth's entry points, or a ToolchainError saying what is missing (GPU or the [gpu] extra)."""
    try:
        import torch
    except ImportError:
        raise ToolchainError("the unsloth backend needs torch with CUDA: pip install 'doctune[gpu]'") from None
    if not torch.cuda.is_available() and os.environ.get("UNSLOTH_ALLOW_CPU") != "1":
        raise ToolchainError(
            "the unsloth backend needs an NVIDIA GPU with CUDA and none is visible; train on CPU with "
            "--backend hf (or --preset cpu-smollm2)"
        )
    try:
        import unsloth  # noqa: F401 - must come before transformers/trl/peft: it patches them
        from unsloth import FastLanguageModel, UnslothTrainer, UnslothTrainingArguments, is_bfloat16_supported
        from unsloth.chat_templates import get_chat_template, train_on_responses_only
    except ImportError as e:
        raise ToolchainError(f"the unsloth backend needs the [gpu] extra ({e}): pip install 'doctune[gpu]'") from None
    except Exception as e:  # Unsloth raises NotImplementedError/RuntimeError when it finds no usable GPU
        raise ToolchainError(f"Unsloth could not start: {type(e).__name__}: {e}") from None
    return {
        "FastLanguageModel": FastLanguageModel, "UnslothTrainer": UnslothTrainer,
        "UnslothTrainingArguments": UnslothTrainingArguments, "is_bfloat16_supported": is_bfloat16_supported,
        "get_chat_template": get_chat_template, "train_on_responses_only": train_on_responses_only,
    }


def _load(u: dict[str, Any], cfg: TrainConfig, **extra: Any) -> tuple[Any, Any, str]:
    import torch

    from doctune.trainer.hf_backend import resolve_model_path

    path = resolve_model_path(cfg.model, cfg.cache_dir)
    model, tokenizer = u["FastLanguageModel"].from_pretrained(
        model_name=path, max_seq_length=cfg.max_seq_length,
        dtype=None if cfg.dtype == "auto" else getattr(torch, cfg.dtype), load_in_4bit=cfg.load_in_4bit, **extra,
    )
    model = u["FastLanguageModel"].get_peft_model(
        model, r=cfg.lora_r, target_modules=list(cfg.target_modules), lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout, bias=cfg.lora_bias, use_gradient_checkpointing=cfg.gradient_checkpointing,
        random_state=cfg.seed, use_rslora=cfg.use_rslora, **loftq_kwargs(cfg),
    )
    if cfg.chat_template:
        tokenizer = u["get_chat_template"](tokenizer, chat_template=cfg.chat_template)
    return model, tokenizer, path


def loftq_kwargs(cfg: TrainConfig) -> dict[str, Any]:
    """Unsloth's LoftQ switch is ``init_lora_weights="loftq"`` + ``loftq_config`` (it refuses a 4-bit base;
    ``TrainConfig`` already does)."""
    if not cfg.use_loftq:
        return {}
    from peft import LoftQConfig

    return {"init_lora_weights": "loftq", "loftq_config": LoftQConfig(loftq_bits=4, loftq_iter=1)}


def seq_length_kwarg(cls: Any) -> str:
    """The sequence-length field of a TRL ``SFTConfig`` (sub)class: ``max_length`` (TRL >= 0.20, 1.x) or
    ``max_seq_length`` (older TRL, or TRL as Unsloth patches it). Decided from the class's fields, never from a
    ``**kwargs`` signature that accepts anything."""
    fields = config_fields(cls)
    for name in ("max_length", "max_seq_length"):
        if name in fields:
            return name
    raise ToolchainError(f"{cls.__name__} has neither max_length nor max_seq_length; unsupported TRL version")


def sft_args_kwargs(cls: Any, cfg: TrainConfig, max_length: int) -> dict[str, Any]:
    """The SFT-specific keyword arguments for Unsloth's training-arguments class, by its real fields."""
    fields = config_fields(cls)
    extra: dict[str, Any] = {seq_length_kwarg(cls): max_length}
    if "dataset_text_field" in fields:
        extra["dataset_text_field"] = "text"
    if "packing" in fields:
        extra["packing"] = cfg.packing
    elif cfg.packing:
        raise ConfigError(f"packing=true but {cls.__name__} has no 'packing' field (TRL too old for packing)")
    return extra


def _args(u: dict[str, Any], cfg: TrainConfig, out_dir: Path, max_length: int) -> Any:
    cls = u["UnslothTrainingArguments"]
    bf16 = bool(u["is_bfloat16_supported"]())
    return cls(
        output_dir=str(out_dir / "checkpoints"),
        per_device_train_batch_size=cfg.per_device_train_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        warmup_steps=cfg.warmup_steps, num_train_epochs=cfg.num_train_epochs, max_steps=cfg.max_steps or -1,
        learning_rate=cfg.learning_rate, embedding_learning_rate=cfg.embedding_learning_rate,
        fp16=not bf16, bf16=bf16, logging_steps=cfg.logging_steps, optim=cfg.optim, weight_decay=cfg.weight_decay,
        lr_scheduler_type=cfg.lr_scheduler_type, seed=cfg.seed, report_to=list(cfg.report_to) or "none",
        save_strategy="no", disable_tqdm=True, **sft_args_kwargs(cls, cfg, max_length),
    )


def check_labels(trainer: Any, tokenizer: Any, markers: tuple[str, str]) -> None:
    """Compare Unsloth's labels on the first example with our twin of its rule; warn on any difference."""
    row = trainer.train_dataset[0]
    ids, labels = list(row["input_ids"]), list(row["labels"])
    enc = [list(tokenizer(m, add_special_tokens=False)["input_ids"]) for m in markers]
    ours = response_only_labels(ids, enc[0], enc[1])
    if ours != labels:
        console.print("[yellow]warning:[/] Unsloth's assistant-only labels differ from doctune's rule on example 0")
    trained = sum(1 for t in labels if t != IGNORE)
    console.print(f"assistant-only loss: {trained} of {len(ids)} tokens of example 0 are trained")


def train(cfg: TrainConfig, train_ds: Any, out_dir: Path, *, show_progress: bool = True) -> TrainResult:
    """Same contract as ``doctune.trainer.hf_backend.train``."""
    u = import_unsloth()
    from doctune.trainer.callbacks import make_callbacks
    from doctune.trainer.hf_backend import quiet_trainer

    model, tokenizer, _ = _load(u, cfg)
    markers = chat_markers(tokenizer) if cfg.assistant_only_loss else None  # fail before any training work
    _, stats = prepare_dataset(tokenizer, train_ds, assistant_only=cfg.assistant_only_loss, cap=cfg.max_seq_length)
    texts = train_ds.map(lambda r: {"text": render(tokenizer, conversation(r))}, remove_columns=train_ds.column_names)
    args = _args(u, cfg, out_dir, stats.max_length)
    tokens_per_step = stats.total_tokens / stats.n * cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps
    callbacks = make_callbacks(out_dir / "loss.jsonl", tokens_per_step, show_progress)
    tok_kw = "processing_class" if "processing_class" in inspect.signature(u["UnslothTrainer"].__init__).parameters \
        else "tokenizer"
    trainer = u["UnslothTrainer"](model=model, train_dataset=texts, args=args, callbacks=callbacks,
                                  **{tok_kw: tokenizer})
    if markers is not None:
        trainer = u["train_on_responses_only"](trainer, instruction_part=markers[0], response_part=markers[1])
        check_labels(trainer, tokenizer, markers)
    quiet_trainer(trainer)
    t0 = time.monotonic()
    out = trainer.train()
    runtime = time.monotonic() - t0
    result = run_summary(cfg, "unsloth", trainer, out, runtime, callbacks[0].records, stats)

    return save_outputs(model, tokenizer, cfg, out_dir, sft_args=args.to_dict(), result=result, merge=_merge)


def _merge(m: Any, tok: Any, merged: Path) -> None:
    m.save_pretrained_merged(str(merged), tok, save_method="merged_16bit")


def load_adapter_weights(model: Any, adapter: Path, cfg: TrainConfig) -> None:
    """Put an SFT adapter's LoRA weights into the freshly built PEFT model (same r and targets required):
    Unsloth cannot load the adapter folder itself when its base is a doctune name such as 'smollm2-135m-instruct'."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    from doctune.trainer.grpo_backend import check_adapter

    check_adapter(adapter, cfg)
    conf = json.loads((adapter / "adapter_config.json").read_text())
    if conf.get("r") != cfg.lora_r:
        raise ConfigError(f"--from-adapter {adapter} has LoRA r={conf.get('r')}, the preset r={cfg.lora_r}; "
                          f"set --set lora_r={conf.get('r')}")
    result = set_peft_model_state_dict(model, load_file(str(adapter / "adapter_model.safetensors")))
    if getattr(result, "unexpected_keys", None):
        raise ConfigError(f"--from-adapter {adapter}: its weights do not fit the preset's LoRA targets")


def train_grpo(cfg: TrainConfig, rows: list[dict[str, Any]], out_dir: Path, reward: Any, *,
               init_adapter: Path | None = None, show_progress: bool = True) -> TrainResult:
    """Same contract as ``doctune.trainer.grpo_backend.train_grpo``, on Unsloth (its import patches TRL's
    ``GRPOTrainer`` with its faster loss and generation; vLLM is not used: ``fast_inference=False``)."""
    u = import_unsloth()
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from doctune.trainer.callbacks import make_callbacks
    from doctune.trainer.grpo_backend import grpo_args, prompt_stats
    from doctune.trainer.hf_backend import quiet_trainer

    model, tokenizer, _ = _load(u, cfg, fast_inference=False, max_lora_rank=cfg.lora_r)
    if init_adapter is not None:
        load_adapter_weights(model, init_adapter, cfg)
    bf16 = bool(u["is_bfloat16_supported"]())
    args = grpo_args(cfg, out_dir, GRPOConfig, bf16=bf16, fp16=not bf16, use_cpu=False, optim=cfg.optim)
    stats = prompt_stats(tokenizer, rows, cfg)
    per_step = (stats.mean_tokens + cfg.max_completion_length) * args.generation_batch_size
    callbacks = make_callbacks(out_dir / "loss.jsonl", per_step, show_progress)
    trainer = GRPOTrainer(model=model, reward_funcs=[reward], args=args, train_dataset=Dataset.from_list(rows),
                          processing_class=tokenizer, callbacks=callbacks)
    quiet_trainer(trainer)
    t0 = time.monotonic()
    out = trainer.train()
    result = run_summary(cfg, "unsloth", trainer, out, time.monotonic() - t0, callbacks[0].records, stats)
    return save_outputs(model, tokenizer, cfg, out_dir, sft_args=args.to_dict(), result=result, merge=_merge,
                        method="grpo", from_adapter=init_adapter)
