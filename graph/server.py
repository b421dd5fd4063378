"""Entry point for the LangGraph server (`langgraph dev` / `langgraph up`, see langgraph.json at the repo root).

Defines `make_graph()`: the compiled doctune graph WITHOUT a checkpointer — the server brings its own persistence
(in-memory for `langgraph dev`, Postgres for `langgraph up` / the platform) and refuses graphs that carry one.

A server run gets no Python `Context`: each node calls `resolve(None)`, which builds one from the environment —
`DOCTUNE_OUT` (where the dataset files go, default ./doctune-out; section text and pairs go to the server's own
store, reached through `runtime.store`), `DOCTUNE_CONFIG` (optional TOML file)
and the usual `DOCTUNE_*` variables (e.g. `DOCTUNE_VALIDATOR__EXECUTOR=codapi`). A run may override the first
two with its JSON context, `{"out_dir": "/data/runs/langref", "config": "/etc/doctune.toml"}` — give each run
its own out_dir, since the dataset files (pairs.jsonl, dataset/) are written per output directory. The run input
is the same as the CLI's: `{"docs": ["path/on/the/server.md"], "max_sections": 5}`.

Why a zero-argument factory and not `build_graph` itself: the server inspects a factory's signature and would
pass its RunnableConfig as `build_graph`'s `checkpointer` argument.
"""

from __future__ import annotations

from typing import Any

from doctune.graph.graph import build_graph


def make_graph() -> Any:
    """The compiled graph for the server (no checkpointer: the server supplies one)."""
    graph = build_graph()
    # The server hands every run a JSON object as context ({} when the client sends none). LangGraph would
    # coerce it into our Context dataclass (settings, services) and fail; passed through as a plain dict,
    # `resolve()` reads its optional "out_dir"/"config" keys and builds the real Context.
    graph.context_schema = None
    return graph
