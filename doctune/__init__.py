"""doctune: documentation -> compiler-verified instruction dataset -> LoRA fine-tune, with the gain measured.

Public API::

    from doctune import build_graph, load_settings
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["__version__", "build_graph", "load_settings"]

if TYPE_CHECKING:  # pragma: no cover
    from doctune.graph.graph import build_graph
    from doctune.settings import load_settings


def __getattr__(name: str) -> Any:
    # Lazy: `import doctune` must stay cheap (the CLI starts without importing LangGraph or torch).
    if name == "build_graph":
        from doctune.graph.graph import build_graph

        return build_graph
    if name == "load_settings":
        from doctune.settings import load_settings

        return load_settings
    raise AttributeError(name)
