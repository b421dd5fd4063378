"""The unsloth backend: imported only when chosen, a clear one-line error without a GPU or without the [gpu]
extra, and (marker ``gpu``) a real short run where a CUDA GPU and Unsloth are present."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from doctune.core.errors import ToolchainError


def _run_py(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **env})


def test_unsloth_is_never_imported_by_default() -> None:
    code = (
        "import sys\n"
        "import doctune.app.cli, doctune.trainer.api, doctune.trainer.unsloth_backend, doctune.trainer.evaluate\n"
        "from doctune.trainer.config import resolve_config\n"
        "resolve_config('seed-qwen2.5-3b')\n"
        "assert 'unsloth' not in sys.modules, 'unsloth imported'\n"
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'heavy import at module level'\n"
    )
    proc = _run_py(code)
    assert proc.returncode == 0, proc.stderr


def test_no_gpu_gives_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    monkeypatch.delenv("UNSLOTH_ALLOW_CPU", raising=False)
    from doctune.trainer.api import train

    with pytest.raises(ToolchainError, match="needs an NVIDIA GPU.*--backend hf"):
        train(tmp_path / "missing", tmp_path / "out", preset="seed-qwen2.5-3b")


def test_missing_extra_gives_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("torch")
    try:
        import unsloth  # noqa: F401
    except ImportError:
        pass
    except Exception:  # installed but unusable here (no GPU): not this test's case
        pytest.skip("unsloth is installed")
    else:
        pytest.skip("unsloth is installed")
    monkeypatch.setenv("UNSLOTH_ALLOW_CPU", "1")  # get past the GPU check to the import
    from doctune.trainer.unsloth_backend import import_unsloth

    with pytest.raises(ToolchainError, match=r"pip install 'doctune\[gpu\]'"):
        import_unsloth()


def test_cli_prints_one_line_error(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    from tests.test_train_cpu import make_dataset

    ds = make_dataset(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-c", "from doctune.app.cli import main; main()", "train", "--dataset", str(ds),
         "--preset", "seed-qwen2.5-3b", "--out", str(tmp_path / "o")],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("error:") and "GPU" in lines[-1] and "Traceback" not in proc.stderr


@pytest.mark.gpu
def test_unsloth_trains_on_gpu(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    pytest.importorskip("unsloth")
    from doctune.trainer.api import train

    from tests.test_train_cpu import make_dataset

    res = train(make_dataset(tmp_path), tmp_path / "out", preset="cpu-smollm2", backend="unsloth", max_steps=3,
                overrides={"dtype": "auto", "gradient_accumulation_steps": 1})
    assert res.backend == "unsloth" and res.steps == 3 and res.final_loss is not None
    assert (res.adapter_dir / "adapter_model.safetensors").is_file()


def _unsloth_like(base: type) -> type:
    """Unsloth's UnslothTrainingArguments: a subclass of TRL's SFTConfig whose __init__ takes **kwargs."""

    class UnslothTrainingArguments(base):  # type: ignore[misc, valid-type]
        def __init__(self, embedding_learning_rate: float | None = None, *args: object, **kwargs: object) -> None:
            self.embedding_learning_rate = embedding_learning_rate
            super().__init__(*args, **kwargs)

    return UnslothTrainingArguments


def test_sequence_length_kwarg_comes_from_the_config_fields(tmp_path: Path) -> None:
    """Against TRL as installed (unpatched 1.16: `max_length`), not Unsloth's patched SFTConfig."""
    trl = pytest.importorskip("trl")
    import dataclasses

    from doctune.trainer.config import resolve_config
    from doctune.trainer.unsloth_backend import seq_length_kwarg, sft_args_kwargs

    args_cls = _unsloth_like(trl.SFTConfig)
    assert seq_length_kwarg(trl.SFTConfig) == "max_length" and seq_length_kwarg(args_cls) == "max_length"
    cfg = resolve_config("seed-qwen2.5-3b", overrides={"packing": True})
    args = args_cls(output_dir=str(tmp_path), report_to="none", use_cpu=True, **sft_args_kwargs(args_cls, cfg, 321))
    assert args.max_length == 321 and args.packing is True  # the packing override reaches the trainer's args

    @dataclasses.dataclass
    class OldSFTConfig:  # TRL < 0.20 named it max_seq_length
        output_dir: str = ""
        max_seq_length: int | None = None

    assert seq_length_kwarg(_unsloth_like(OldSFTConfig)) == "max_seq_length"
    from doctune.core.errors import ConfigError

    with pytest.raises(ConfigError, match="packing=true"):
        sft_args_kwargs(OldSFTConfig, cfg, 321)
    from transformers import TrainingArguments

    with pytest.raises(ToolchainError, match="neither max_length nor max_seq_length"):
        seq_length_kwarg(TrainingArguments)


def test_use_loftq_sets_loftq_init_or_is_refused() -> None:
    pytest.importorskip("peft")
    torch = pytest.importorskip("torch")
    from doctune.core.errors import ConfigError
    from doctune.trainer.config import resolve_config
    from doctune.trainer.hf_backend import lora_config
    from doctune.trainer.unsloth_backend import loftq_kwargs

    cfg = resolve_config("seed-qwen2.5-3b", overrides={"use_loftq": True, "load_in_4bit": False})
    kw = loftq_kwargs(cfg)
    assert kw["init_lora_weights"] == "loftq" and kw["loftq_config"].loftq_bits == 4
    assert loftq_kwargs(resolve_config("seed-qwen2.5-3b")) == {}
    hf = resolve_config("cpu-smollm2", overrides={"use_loftq": True})
    if torch.cuda.is_available():
        assert lora_config(hf).init_lora_weights == "loftq"
    else:
        with pytest.raises(ConfigError, match="use_loftq needs a CUDA GPU"):
            lora_config(hf)
    assert lora_config(resolve_config("cpu-smollm2")).init_lora_weights is True
