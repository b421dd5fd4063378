"""Entry point for the LangGraph server (`langgraph dev` / `langgraph up`, see langgraph.json at the repo root).

Defines `make_graph()`: the compiled doctune graph WITHOUT a checkpointer — the server brings its own persistence
(in-memory for `langgraph dev`, Postgres for `langgraph up` / the platform) and refuses graphs that carry one.

A server run gets no Python `Context`: its JSON context `{"out_dir": ..., "config": ...}` (both optional) becomes
a `ServerRun`, and the nodes use the Context of its (out_dir, config), built once per process
(`graph/context.py`: settings from `load_settings(config)`, i.e. the TOML file and the usual `DOCTUNE_*`
variables such as `DOCTUNE_VALIDATOR__EXECUTOR=codapi`). The defaults of those two keys are this entry point's,
read here and only here when the server builds the graph: `DOCTUNE_OUT` (where the dataset files go,
default ./doctune-out; section text and pairs go to the server's own store, reached through `runtime.store`) and `DOCTUNE_CONFIG` (optional TOML file) — the server process's own options, as argv is
the CLI's. Give each run its own out_dir (`{"out_dir": "/data/runs/langref"}`), since the dataset files
(pairs.jsonl, dataset/) are written per output directory. The run input is the same as the CLI's:
`{"docs": ["path/on/the/server.md"], "max_sections": 5}`.

Why a zero-argument factory and not `build_graph` itself: the server inspects a factory's signature and would
pass its RunnableConfig as `build_graph`'s `checkpointer` argument.
"""

from __future__ import annotations

import os
from typing import Any

from doctune.graph.context import server_run_schema
from doctune.graph.graph import build_graph


def make_graph() -> Any:
    """The compiled graph for the server (no checkpointer: the server supplies one)."""
    graph = build_graph()
    # The server hands every run a JSON object as context ({} when the client sends none). LangGraph would
    # coerce it into our Context dataclass (settings, services) and fail; coerced into a ServerRun instead (its
    # defaults: this server's), the nodes get the Context of its out_dir and config.
    graph.context_schema = server_run_schema(out_dir=os.environ.get("DOCTUNE_OUT") or "doctune-out",
                                             config=os.environ.get("DOCTUNE_CONFIG") or None)
    return graph
