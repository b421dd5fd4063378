"""The doctune state machine, wired in one place.

    split -> Send(section) x N -> curate -> export -> [train -> evaluate]
    section: generate -> validate -> (repair -> validate)* -> finish

`build_graph()` returns the compiled graph. Pass a checkpointer for durable runs (the CLI uses SQLite at
<out>/state.sqlite); a LangGraph server brings its own. Run-time services come in `context=Context(...)`.
"""

from __future__ import annotations

from typing import Any

from langgraph.graph import END, START, StateGraph

from doctune.graph import nodes
from doctune.graph.context import Context
from doctune.graph.names import (
    CURATE,
    EVALUATE,
    EXPORT,
    FINISH,
    GENERATE,
    REPAIR,
    SECTION,
    SPLIT,
    TRAIN,
    VALIDATE,
)
from doctune.graph.retry import LLM_RETRY
from doctune.graph.state import RunInput, RunOutput, RunState, SectionInput, SectionOutput, SectionState


def build_section_graph() -> Any:
    """Per-section subgraph reached by Send; the repair loop is bounded by settings.generator.max_repairs."""
    g = StateGraph(SectionState, context_schema=Context, input_schema=SectionInput, output_schema=SectionOutput)
    g.add_node(GENERATE, nodes.generate, retry_policy=LLM_RETRY)
    g.add_node(VALIDATE, nodes.validate)
    g.add_node(REPAIR, nodes.repair, retry_policy=LLM_RETRY)
    g.add_node(FINISH, nodes.finish)
    g.add_edge(START, GENERATE)
    g.add_edge(GENERATE, VALIDATE)
    g.add_conditional_edges(VALIDATE, nodes.route_after_validate, [REPAIR, FINISH])
    g.add_edge(REPAIR, VALIDATE)
    g.add_edge(FINISH, END)
    return g.compile()


def build_graph(checkpointer: Any = None, store: Any = None) -> Any:
    """The whole pipeline as a compiled LangGraph graph (`from doctune import build_graph`).

    `store` (a LangGraph `BaseStore`) holds the run's section text and pairs; without one (a server brings its
    own; a script with an in-memory checkpointer) nodes use the server's store or an in-memory one."""
    g = StateGraph(RunState, context_schema=Context, input_schema=RunInput, output_schema=RunOutput)
    g.add_node(SPLIT, nodes.split)
    g.add_node(SECTION, build_section_graph())
    g.add_node(CURATE, nodes.curate)
    g.add_node(EXPORT, nodes.export)
    g.add_node(TRAIN, nodes.train)
    g.add_node(EVALUATE, nodes.evaluate)
    g.add_edge(START, SPLIT)
    g.add_conditional_edges(SPLIT, nodes.fan_out, [SECTION, CURATE])
    g.add_edge(SECTION, CURATE)
    g.add_edge(CURATE, EXPORT)
    g.add_conditional_edges(EXPORT, nodes.route_after_export, [TRAIN, END])
    g.add_edge(TRAIN, EVALUATE)
    g.add_edge(EVALUATE, END)
    return g.compile(checkpointer=checkpointer, store=store)
