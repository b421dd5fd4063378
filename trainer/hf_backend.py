"""The ``hf`` backend: transformers + PEFT LoRA + TRL ``SFTTrainer``, on CPU or GPU.

Same LoRA settings as the Unsloth backend. Like Unsloth, ``embed_tokens``/``lm_head`` in ``target_modules`` are
trained in full (PEFT ``modules_to_save``) and get ``embedding_learning_rate``. The data arrive pre-tokenized with
labels (``doctune.trainer.data``), so TRL only pads and truncates to ``max_length``, which is set from the data.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any

from rich.console import Console

from doctune.core.errors import ConfigError, InputError
from doctune.trainer.config import TrainConfig
from doctune.trainer.data import prepare_dataset
from doctune.trainer.outputs import TrainResult, run_summary, save_outputs

EMBEDDING_MODULES = ("embed_tokens", "lm_head")
console = Console(stderr=True)


def resolve_model_path(model: str, cache_dir: Path | None = None) -> str:
    """The embedded SmolLM2 name → its converted folder in doctune's cache (``cache_dir``, default
    ~/.cache/doctune); anything else is passed to transformers."""
    from doctune.trainer.smollm2 import MODEL_ID, hf_model_dir

    if model in (MODEL_ID, "smollm2"):
        return str(hf_model_dir(cache_dir))
    return model


def load_base(cfg: TrainConfig) -> tuple[Any, Any, str]:
    """(model, tokenizer, path) for the config's base model, 4-bit only on CUDA."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    path = resolve_model_path(cfg.model, cfg.cache_dir)
    cuda = torch.cuda.is_available()
    dtype = compute_dtype(cfg, cuda)
    kwargs: dict[str, Any] = {"dtype": dtype}
    if cfg.load_in_4bit:
        if not cuda:
            raise ConfigError("load_in_4bit needs a CUDA GPU and bitsandbytes; on CPU set "
                              "train.overrides.load_in_4bit=false (or use the cpu-smollm2 preset)")
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype,
            bnb_4bit_use_double_quant=True,
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except OSError as e:
        raise InputError(f"cannot load base model {cfg.model!r} ({str(e).splitlines()[0]}); without Hub access "
                         "give a local Hugging Face folder: train.overrides.model=DIR") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer, path


def compute_dtype(cfg: TrainConfig, cuda: bool) -> Any:
    import torch

    if cfg.dtype != "auto":
        return getattr(torch, cfg.dtype)
    if not cuda:
        return torch.float32
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def lora_config(cfg: TrainConfig) -> Any:
    from peft import LoraConfig

    targets = [m for m in cfg.target_modules if m not in EMBEDDING_MODULES]
    full = [m for m in cfg.target_modules if m in EMBEDDING_MODULES]
    return LoraConfig(
        r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout, bias=cfg.lora_bias,
        target_modules=targets, modules_to_save=full or None, use_rslora=cfg.use_rslora, task_type="CAUSAL_LM",
        **loftq_kwargs(cfg),
    )


def loftq_kwargs(cfg: TrainConfig) -> dict[str, Any]:
    """``init_lora_weights="loftq"`` with a 4-bit ``LoftQConfig`` when asked for; PEFT's LoftQ quantizes with
    bitsandbytes on a CUDA GPU, so anywhere else it is refused here rather than failing inside PEFT."""
    if not cfg.use_loftq:
        return {}
    import torch

    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        bnb = False
    else:
        bnb = True
    if not (torch.cuda.is_available() and bnb):
        raise ConfigError("use_loftq needs a CUDA GPU and bitsandbytes (LoftQ quantizes the base weights on the "
                          "GPU); set train.overrides.use_loftq=false here")
    from peft import LoftQConfig

    return {"init_lora_weights": "loftq", "loftq_config": LoftQConfig(loftq_bits=4, loftq_iter=1)}


def optimizer_name(cfg: TrainConfig, cuda: bool) -> str:
    if "8bit" not in cfg.optim:
        return cfg.optim
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        bnb = False
    else:
        bnb = True
    if cuda and bnb:
        return cfg.optim
    console.print(f"[yellow]warning:[/] optim={cfg.optim} needs bitsandbytes on a CUDA GPU; using adamw_torch")
    return "adamw_torch"


def sft_config(cfg: TrainConfig, out_dir: Path, max_length: int) -> Any:
    import torch
    from trl import SFTConfig

    cuda = torch.cuda.is_available()
    dtype = compute_dtype(cfg, cuda)
    return SFTConfig(
        output_dir=str(out_dir / "checkpoints"),
        per_device_train_batch_size=cfg.per_device_train_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        warmup_steps=cfg.warmup_steps,
        num_train_epochs=cfg.num_train_epochs,
        max_steps=cfg.max_steps or -1,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler_type,
        weight_decay=cfg.weight_decay,
        optim=optimizer_name(cfg, cuda),
        seed=cfg.seed,
        data_seed=cfg.seed,
        logging_steps=cfg.logging_steps,
        report_to=list(cfg.report_to) or "none",
        bf16=cuda and dtype == torch.bfloat16,
        fp16=cuda and dtype == torch.float16,
        use_cpu=not cuda,
        **checkpointing_kwargs(SFTConfig, bool(cfg.gradient_checkpointing)),
        max_length=max_length,
        packing=cfg.packing,
        save_strategy="no",
        disable_tqdm=True,  # our Rich bar replaces tqdm
        dataloader_num_workers=0,
    )


def config_fields(cls: Any) -> set[str]:
    """The fields a (TRL/transformers) config class really has: its dataclass fields along the MRO plus named
    ``__init__`` parameters (a subclass like Unsloth's may take ``**kwargs`` and hide them from its signature)."""
    import inspect

    names: set[str] = set()
    for klass in getattr(cls, "__mro__", (cls,)):
        names |= set(getattr(klass, "__dataclass_fields__", {}))
        init = klass.__dict__.get("__init__")
        if init is not None:
            names |= {p.name for p in inspect.signature(init).parameters.values()
                      if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self"}
    return names


def checkpointing_kwargs(cls: Any, on: bool) -> dict[str, bool]:
    """transformers 5 renamed gradient_checkpointing to activation_checkpointing (the old name warns)."""
    fields = config_fields(cls)
    return {"activation_checkpointing" if "activation_checkpointing" in fields else "gradient_checkpointing": on}


def trainer_class(embedding_lr: float | None) -> Any:
    """SFTTrainer, or a subclass giving fully trained embedding/LM-head weights their own learning rate."""
    from trl import SFTTrainer

    if embedding_lr is None:
        return SFTTrainer

    class EmbeddingLRTrainer(SFTTrainer):
        optimizer: Any  # set by Trainer (SFTTrainer is untyped to mypy)

        def create_optimizer(self, model: Any = None) -> Any:
            if self.optimizer is None:
                opt_model = self.model if model is None else model
                decay = set(self.get_decay_parameter_names(opt_model))
                groups: dict[tuple[bool, bool], list[Any]] = {}
                for name, p in opt_model.named_parameters():
                    if p.requires_grad:
                        emb = any(m in name for m in EMBEDDING_MODULES) and "lora_" not in name
                        groups.setdefault((emb, name in decay), []).append(p)
                params = [
                    {"params": ps, "weight_decay": self.args.weight_decay if dec else 0.0,
                     **({"lr": embedding_lr} if emb else {})}
                    for (emb, dec), ps in groups.items()
                ]
                cls, kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
                self.optimizer = cls(params, **kwargs)
            return self.optimizer

    return EmbeddingLRTrainer


def quiet_trainer(trainer: Any) -> None:
    """Without tqdm, transformers prints every log dict to stdout; our bar and loss.jsonl already show them."""
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)


def train(cfg: TrainConfig, train_ds: Any, out_dir: Path, *, show_progress: bool = True) -> TrainResult:
    """Train a LoRA adapter on ``train_ds`` (rows with ``messages``) and write everything to ``out_dir``."""
    import torch

    from doctune.trainer.callbacks import make_callbacks

    torch.manual_seed(cfg.seed)
    # transformers' own deprecation notice, raised from inside PEFT/Trainer, is noise for our users
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    model, tokenizer, _ = load_base(cfg)
    tokenized, stats = prepare_dataset(tokenizer, train_ds, assistant_only=cfg.assistant_only_loss,
                                       cap=cfg.max_seq_length)
    args = sft_config(cfg, out_dir, stats.max_length)
    tokens_per_step = stats.total_tokens / stats.n * cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps
    callbacks = make_callbacks(out_dir / "loss.jsonl", tokens_per_step, show_progress)
    trainer = trainer_class(cfg.embedding_learning_rate)(
        model=model, args=args, train_dataset=tokenized, processing_class=tokenizer,
        peft_config=lora_config(cfg), callbacks=callbacks,
    )
    quiet_trainer(trainer)
    t0 = time.monotonic()
    out = trainer.train()
    runtime = time.monotonic() - t0
    result = run_summary(cfg, "hf", trainer, out, runtime, callbacks[0].records, stats)
    return save_outputs(trainer.model, tokenizer, cfg, out_dir, sft_args=args.to_dict(), result=result)
