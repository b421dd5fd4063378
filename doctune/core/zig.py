"""Locate the Zig toolchain shipped by the `ziglang` wheel (pinned to 0.14.0)."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

from doctune.core.errors import ToolchainError

EXPECTED_VERSION = "0.14.0"


@functools.cache
def zig_dir() -> Path:
    """Directory holding the `zig` binary and its `lib/` (read-only inside the sandbox)."""
    try:
        import ziglang
    except ImportError:
        raise ToolchainError("the 'ziglang' package is not installed: pip install ziglang==0.14.0") from None
    d = Path(ziglang.__file__).resolve().parent
    if not (d / "zig").is_file():
        raise ToolchainError(f"ziglang is installed but {d / 'zig'} is missing")
    return d


def zig_exe() -> Path:
    return zig_dir() / "zig"


@functools.cache
def zig_version() -> str:
    try:
        out = subprocess.run([str(zig_exe()), "version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise ToolchainError(f"cannot run {zig_exe()}: {e}") from None
    if out.returncode != 0:
        raise ToolchainError(f"`zig version` failed: {out.stderr.strip()}")
    return out.stdout.strip()
