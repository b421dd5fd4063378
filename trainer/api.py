"""The trainer's entry point for the CLI and the graph: ``train(dataset, out_dir, preset=..., ...) -> TrainResult``.

Resolves the preset, loads the training split and hands over to the chosen backend. The unsloth backend is
imported only when chosen (it must be imported before transformers and needs the ``[gpu]`` extra).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from doctune.errors import ToolchainError
from doctune.trainer.config import TrainConfig, resolve_config
from doctune.trainer.outputs import TrainResult


def train(
    dataset: Path | str,
    out_dir: Path | str,
    *,
    preset: str = "cpu-smollm2",
    max_steps: int | None = None,
    backend: str = "auto",
    overrides: dict[str, Any] | None = None,
    show_progress: bool = True,
) -> TrainResult:
    """Train a LoRA adapter on the dataset's train split; outputs go to ``out_dir`` (see ``outputs.py``)."""
    cfg = resolve_config(preset, overrides=overrides, max_steps=max_steps, backend=backend)
    return train_with_config(cfg, dataset, out_dir, show_progress=show_progress)


def train_with_config(
    cfg: TrainConfig, dataset: Path | str, out_dir: Path | str, *, show_progress: bool = True
) -> TrainResult:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.backend == "unsloth":
        from doctune.trainer import unsloth_backend

        unsloth_backend.import_unsloth()  # fail fast (no GPU / no extra), and before anything imports transformers
        module: Any = unsloth_backend
    else:
        _require_train_extra()
        from doctune.trainer import hf_backend

        module = hf_backend
    from doctune.trainer.data import load_splits

    train_ds, _ = load_splits(Path(dataset))
    return module.train(cfg, train_ds, out, show_progress=show_progress)


def _require_train_extra() -> None:
    missing = []
    for mod in ("torch", "transformers", "peft", "trl"):
        try:
            __import__(mod)
        except ImportError:
            missing.append(mod)
    if missing:
        raise ToolchainError(f"training needs {', '.join(missing)}: pip install 'doctune[train]'")
