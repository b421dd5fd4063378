"""Node names of the doctune graph, one place: the graph is wired with them and the run lifecycle reads
checkpoints by them (no string literals for LangGraph node names elsewhere)."""

from __future__ import annotations

from typing import Final

SPLIT: Final = "split"
SECTION: Final = "section"  # the per-section subgraph reached by Send
CURATE: Final = "curate"
EXPORT: Final = "export"
TRAIN: Final = "train"
EVALUATE: Final = "evaluate"

GENERATE: Final = "generate"
VALIDATE: Final = "validate"
REPAIR: Final = "repair"
FINISH: Final = "finish"
