"""Training presets: the seed preset is the original recipe value for value; overrides are validated."""

from __future__ import annotations

import pytest

from doctune.core.errors import ConfigError
from doctune.trainer.config import resolve_config

# ../shared/RECIPE.md §5, written out independently of presets.py.
RECIPE = {
    "backend": "unsloth",
    "model": "Qwen/Qwen2.5-3B-Instruct",
    "max_seq_length": 4096,
    "load_in_4bit": True,
    "dtype": "auto",
    "lora_r": 128,
    "lora_alpha": 128,
    "lora_dropout": 0.0,
    "lora_bias": "none",
    "target_modules": ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head",
                       "embed_tokens"),
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
    "chat_template": "qwen-2.5",
}


def test_seed_preset_is_the_recipe() -> None:
    cfg = resolve_config("seed-qwen2.5-3b")
    got = {k: getattr(cfg, k) for k in RECIPE}
    assert got == RECIPE
    # Our one deliberate difference: loss on assistant tokens only, with a setting to restore the recipe's.
    assert cfg.assistant_only_loss is True
    assert resolve_config("seed-qwen2.5-3b", overrides={"assistant_only_loss": False}).assistant_only_loss is False
    assert cfg.report_to == ()  # W&B only when asked for


def test_cpu_preset_is_small_and_bounded() -> None:
    cfg = resolve_config("cpu-smollm2")
    assert cfg.backend == "hf" and cfg.model == "smollm2-135m-instruct"
    assert cfg.lora_r <= 16 and cfg.max_steps is not None and cfg.max_steps <= 100
    assert not cfg.load_in_4bit


def test_overrides_max_steps_and_backend() -> None:
    cfg = resolve_config("cpu-smollm2", overrides={"lora_r": 4, "target_modules": ["q_proj"]}, max_steps=3,
                         backend="unsloth")
    assert (cfg.lora_r, cfg.target_modules, cfg.max_steps, cfg.backend) == (4, ("q_proj",), 3, "unsloth")


@pytest.mark.parametrize(
    ("preset", "overrides", "needle"),
    [
        ("nope", {}, "unknown preset 'nope'"),
        ("cpu-smollm2", {"lora_rank": 8}, "train.overrides.lora_rank"),
        ("cpu-smollm2", {"lora_r": 0}, "train.lora_r"),
        ("cpu-smollm2", {"embedding_learning_rate": 1e-5}, "embed_tokens"),
        ("seed-qwen2.5-3b", {"use_loftq": True}, "load_in_4bit=false"),
        ("cpu-smollm2", {"num_generations": 1}, "train.num_generations"),
    ],
)
def test_bad_settings_name_the_field(preset: str, overrides: dict, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        resolve_config(preset, overrides=overrides)


def test_cpu_preset_trains_from_step_one() -> None:
    """transformers' linear warm-up gives step 1 a learning rate of 0 when warmup_steps >= 1."""
    torch = pytest.importorskip("torch")
    from transformers import get_scheduler

    cfg = resolve_config("cpu-smollm2")
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.learning_rate)
    sched = get_scheduler(cfg.lr_scheduler_type, opt, num_warmup_steps=cfg.warmup_steps,
                          num_training_steps=cfg.max_steps)
    assert sched.get_last_lr()[0] > 0  # the rate the first optimizer step uses


def test_grpo_values_fit_each_preset() -> None:
    from doctune.trainer.grpo_backend import check_batch

    for name in ("cpu-smollm2", "seed-qwen2.5-3b"):
        cfg = resolve_config(name)
        check_batch(cfg)  # the batch is a multiple of the group
        assert cfg.num_generations >= 2 and cfg.grpo_learning_rate is not None
    with pytest.raises(ConfigError, match="num_generations=3 must divide"):
        check_batch(resolve_config("cpu-smollm2", overrides={"num_generations": 3}))
