"""doctune: documentation -> compiler-verified instruction dataset -> LoRA fine-tune, with the gain measured.

Public API::

    from doctune import build_graph, load_settings, Context     # the graph and what it runs with
    from doctune import run, status, retry                       # a run's lifecycle (sync; arun/astatus/aretry async)
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from doctune.core import __version__

__all__ = ["Context", "__version__", "arun", "aretry", "astatus", "build_graph", "load_settings", "retry", "run",
           "status"]
_LIFECYCLE = ("run", "status", "retry", "arun", "astatus", "aretry")


def _source_checkout_path() -> list[str]:
    """In a source checkout (repo root on sys.path, e.g. a script run from the root), `doctune.agents` etc. live
    in the sibling folders agents/, graph/, ... that an install maps into this package (pyproject `package-dir`).
    Let imports find them there too; an installed package (no pyproject.toml beside it) is left alone."""
    root = Path(__file__).resolve().parent.parent
    pyproject = root / "pyproject.toml"
    if (root / "agents" / "__init__.py").is_file() and pyproject.is_file() and 'name = "doctune"' in pyproject.read_text(
        encoding="utf-8", errors="replace"
    ):
        return [str(root)]
    return []


__path__ += [p for p in _source_checkout_path() if p not in __path__]  # noqa: PLE0605

if TYPE_CHECKING:  # pragma: no cover
    from doctune.app.runner import retry, run, status
    from doctune.core.settings import load_settings
    from doctune.graph.context import Context
    from doctune.graph.graph import build_graph
    from doctune.graph.lifecycle import aretry, arun, astatus


def __getattr__(name: str) -> Any:
    # Lazy: `import doctune` must stay cheap (the CLI starts without importing LangGraph or torch).
    if name == "build_graph":
        from doctune.graph.graph import build_graph

        return build_graph
    if name == "load_settings":
        from doctune.core.settings import load_settings

        return load_settings
    if name == "Context":
        from doctune.graph.context import Context

        return Context
    if name in _LIFECYCLE:  # run/status/retry: the synchronous app face; arun/astatus/aretry: the graph's own
        from doctune.app import runner
        from doctune.graph import lifecycle

        return getattr(runner if name in ("run", "status", "retry") else lifecycle, name)
    raise AttributeError(name)
