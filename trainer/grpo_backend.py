"""GRPO with TRL's ``GRPOTrainer`` (the ``hf`` backend; ``unsloth_backend.train_grpo`` reuses ``grpo_args``).

The policy is the preset's base model with a fresh LoRA (same LoRA settings as SFT), or an SFT adapter to start
from (``init_adapter``: GRPO after SFT). Prompts are the rows' user turns (``doctune.trainer.reward.reward_tasks``);
each step samples ``num_generations`` completions per prompt and scores them with the validator reward. Writes
the same outputs as SFT (``adapter/``, ``loss.jsonl`` with the mean reward per step, model card) plus
``rewards.jsonl`` (one line per reward call, written by ``ValidatorReward``).
"""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path
from typing import Any

from doctune.core.errors import ConfigError, InputError
from doctune.trainer.config import TrainConfig
from doctune.trainer.data import LengthStats, render
from doctune.trainer.outputs import TrainResult, run_summary, save_outputs


def check_batch(cfg: TrainConfig) -> None:
    batch = cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps
    if batch % cfg.num_generations:
        raise ConfigError(
            f"train.num_generations={cfg.num_generations} must divide the GRPO batch (per_device_train_batch_size "
            f"x gradient_accumulation_steps = {batch}); e.g. --set num_generations={batch}"
        )


def grpo_args(cfg: TrainConfig, out_dir: Path, cls: Any, *, bf16: bool, fp16: bool, use_cpu: bool,
              optim: str, **extra: Any) -> Any:
    """A ``GRPOConfig`` (or Unsloth's patched subclass ``cls``) from the preset."""
    from doctune.trainer.hf_backend import checkpointing_kwargs

    check_batch(cfg)
    return cls(
        output_dir=str(out_dir / "checkpoints"),
        per_device_train_batch_size=cfg.per_device_train_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        warmup_steps=cfg.warmup_steps, num_train_epochs=cfg.num_train_epochs, max_steps=cfg.max_steps or -1,
        learning_rate=cfg.grpo_learning_rate or cfg.learning_rate, lr_scheduler_type=cfg.lr_scheduler_type,
        weight_decay=cfg.weight_decay, optim=optim, seed=cfg.seed, data_seed=cfg.seed,
        logging_steps=cfg.logging_steps, report_to=list(cfg.report_to) or "none", bf16=bf16, fp16=fp16,
        use_cpu=use_cpu, num_generations=cfg.num_generations, max_completion_length=cfg.max_completion_length,
        temperature=cfg.grpo_temperature, beta=cfg.grpo_beta, save_strategy="no", disable_tqdm=True,
        dataloader_num_workers=0, **checkpointing_kwargs(cls, bool(cfg.gradient_checkpointing)), **extra,
    )


def check_adapter(adapter: Path, cfg: TrainConfig) -> None:
    """An SFT adapter to start from must exist and belong to the preset's base model."""
    conf = adapter / "adapter_config.json"
    if not conf.is_file():
        raise InputError(f"--from-adapter {adapter}: no adapter_config.json there (give an SFT run's adapter/)")
    base = json.loads(conf.read_text()).get("base_model_name_or_path")
    if base not in (cfg.model, None):
        raise ConfigError(f"--from-adapter {adapter} was trained on {base!r}, the preset's model is {cfg.model!r}; "
                          f"set --set model={base}")


def prompt_stats(tokenizer: Any, rows: list[dict[str, Any]], cfg: TrainConfig) -> LengthStats:
    lengths = [len(tokenizer(render(tokenizer, r["prompt"], generation_prompt=True),
                             add_special_tokens=False)["input_ids"]) for r in rows]
    return LengthStats(n=len(lengths), max_tokens=max(lengths), mean_tokens=round(sum(lengths) / len(lengths), 1),
                       total_tokens=sum(lengths), max_length=max(lengths) + cfg.max_completion_length,
                       truncated=0, trained_tokens=0)


def train_grpo(cfg: TrainConfig, rows: list[dict[str, Any]], out_dir: Path, reward: Any, *,
               init_adapter: Path | None = None, show_progress: bool = True) -> TrainResult:
    """GRPO on ``rows`` (``prompt`` + reward-task columns) with ``reward`` (a ``ValidatorReward``)."""
    import torch
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from doctune.trainer.callbacks import make_callbacks
    from doctune.trainer.hf_backend import (
        compute_dtype,
        load_base,
        lora_config,
        optimizer_name,
        quiet_trainer,
    )

    torch.manual_seed(cfg.seed)
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    model, tokenizer, path = load_base(cfg)
    peft_config = lora_config(cfg)
    if init_adapter is not None:
        from peft import PeftModel

        check_adapter(init_adapter, cfg)
        model, peft_config = PeftModel.from_pretrained(model, str(init_adapter), is_trainable=True), None
        # the adapter records the portable name ('smollm2-135m-instruct'); PEFT would look it up on the Hub when
        # saving, so point it at the loaded folder (save_outputs writes the portable name back)
        for conf in model.peft_config.values():
            conf.base_model_name_or_path = path
    cuda = torch.cuda.is_available()
    dtype = compute_dtype(cfg, cuda)
    args = grpo_args(cfg, out_dir, GRPOConfig, bf16=cuda and dtype == torch.bfloat16,
                     fp16=cuda and dtype == torch.float16, use_cpu=not cuda, optim=optimizer_name(cfg, cuda))
    stats = prompt_stats(tokenizer, rows, cfg)
    per_step = (stats.mean_tokens + cfg.max_completion_length) * args.generation_batch_size
    callbacks = make_callbacks(out_dir / "loss.jsonl", per_step, show_progress)
    trainer = GRPOTrainer(model=model, reward_funcs=[reward], args=args, train_dataset=Dataset.from_list(rows),
                          processing_class=tokenizer, peft_config=peft_config, callbacks=callbacks)
    quiet_trainer(trainer)
    t0 = time.monotonic()
    out = trainer.train()
    result = run_summary(cfg, "hf", trainer, out, time.monotonic() - t0, callbacks[0].records, stats)
    return save_outputs(trainer.model, tokenizer, cfg, out_dir, sft_args=args.to_dict(), result=result,
                        method="grpo", from_adapter=init_adapter)
