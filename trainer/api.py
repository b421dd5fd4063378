"""The trainer's entry point for the CLI and the graph: ``train(dataset, out_dir, preset=..., ...) -> TrainResult``.

Resolves the preset, loads the training split and hands over to the chosen backend. The unsloth backend is
imported only when chosen (it must be imported before transformers and needs the ``[gpu]`` extra).

Methods: ``sft`` (default), ``grpo`` (reward from the Zig validator; optionally from an SFT adapter) and
``sft+grpo`` (SFT into ``<out>/sft``, then GRPO from that adapter into ``<out>``). GRPO needs ``validate_many``,
injected by the caller (this floor does not import the validator agent; see ``doctune.trainer.reward``).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, Literal

from doctune.core.errors import ConfigError, InputError, ToolchainError
from doctune.core.schemas import ValidateMany
from doctune.trainer.config import TrainConfig, resolve_config
from doctune.trainer.outputs import TrainResult

Method = Literal["sft", "grpo", "sft+grpo"]
METHODS: tuple[str, ...] = ("sft", "grpo", "sft+grpo")


def train(
    dataset: Path | str,
    out_dir: Path | str,
    *,
    preset: str = "cpu-smollm2",
    max_steps: int | None = None,
    backend: str = "auto",
    overrides: dict[str, Any] | None = None,
    show_progress: bool = True,
    method: str = "sft",
    validate_many: ValidateMany | None = None,
    close: Callable[[], Coroutine[Any, Any, None]] | None = None,
    init_adapter: Path | str | None = None,
    cache_dir: Path | None = None,
) -> TrainResult:
    """Train a LoRA adapter on the dataset's train split; outputs go to ``out_dir`` (see ``outputs.py``).

    ``close`` (optional) releases what ``validate_many`` holds; it runs on the same event loop, after training.
    ``cache_dir``: doctune's cache (``settings.cache_dir``), where the embedded SmolLM2 is converted."""
    if method not in METHODS:
        raise ConfigError(f"--method {method!r}: choose one of {', '.join(METHODS)}")
    cfg = resolve_config(preset, overrides=overrides, max_steps=max_steps, backend=backend, cache_dir=cache_dir)
    if method == "sft":
        return train_with_config(cfg, dataset, out_dir, show_progress=show_progress)
    if validate_many is None:
        raise ConfigError(f"--method {method} needs a validator for its reward (validate_many)")
    start = Path(init_adapter) if init_adapter is not None else None
    if method == "sft+grpo":
        if start is not None:
            raise ConfigError("--from-adapter and --method sft+grpo exclude each other (sft+grpo trains its own)")
        start = train_with_config(cfg, dataset, Path(out_dir) / "sft", show_progress=show_progress).adapter_dir
    return grpo_with_config(cfg, dataset, out_dir, validate_many, close=close, init_adapter=start,
                            show_progress=show_progress)


def _backend_module(cfg: TrainConfig) -> Any:
    if cfg.backend == "unsloth":
        from doctune.trainer import unsloth_backend

        unsloth_backend.import_unsloth()  # fail fast (no GPU / no extra), and before anything imports transformers
        return unsloth_backend
    _require_train_extra()
    from doctune.trainer import hf_backend

    return hf_backend


def train_with_config(
    cfg: TrainConfig, dataset: Path | str, out_dir: Path | str, *, show_progress: bool = True
) -> TrainResult:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    module = _backend_module(cfg)
    from doctune.trainer.data import load_splits

    train_ds, _ = load_splits(Path(dataset))
    return module.train(cfg, train_ds, out, show_progress=show_progress)


def grpo_with_config(
    cfg: TrainConfig, dataset: Path | str, out_dir: Path | str, validate_many: ValidateMany, *,
    close: Callable[[], Coroutine[Any, Any, None]] | None = None, init_adapter: Path | None = None,
    show_progress: bool = True,
) -> TrainResult:
    """GRPO on the train split's verifiable rows; every validation runs on one event loop thread."""
    from rich.console import Console

    from doctune.trainer.data import load_splits
    from doctune.trainer.grpo_backend import check_batch
    from doctune.trainer.reward import LoopThread, ValidatorReward, reward_tasks

    check_batch(cfg)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    module = _backend_module(cfg)
    if cfg.backend == "hf":
        from doctune.trainer import grpo_backend

        module = grpo_backend
    train_ds, _ = load_splits(Path(dataset))
    loop = LoopThread()
    try:
        rows, counts = loop.run(reward_tasks(list(train_ds), validate_many))
        Console(stderr=True).print("GRPO prompts by check: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
        if not rows:
            raise InputError(f"{dataset}: no training row has Zig code or hidden tests to reward; GRPO needs some")
        reward = ValidatorReward(validate_many, out / "rewards.jsonl", loop)
        return module.train_grpo(cfg, rows, out, reward, init_adapter=init_adapter, show_progress=show_progress)
    finally:
        if close is not None:
            loop.run(close(), timeout=60)
        loop.close()


def _require_train_extra() -> None:
    missing = []
    for mod in ("torch", "transformers", "peft", "trl"):
        try:
            __import__(mod)
        except ImportError:
            missing.append(mod)
    if missing:
        raise ToolchainError(f"training needs {', '.join(missing)}: pip install 'doctune[train]'")
