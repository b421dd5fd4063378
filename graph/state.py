"""Graph state: only ids, version numbers, counters and short strings. Section text and pairs live in the run's
store (`doctune.graph.store`); `versions` says which stored version of each pair this state refers to."""

from __future__ import annotations

import operator
from typing import Annotated, Any, NotRequired

# Not typing.TypedDict: on 3.11 pydantic needs typing_extensions' one to build the graph's JSON schemas.
from typing_extensions import TypedDict


class SectionResult(TypedDict):
    """What one section branch produced (small; kept in the run state)."""

    section_id: str
    generated: int
    accepted: list[str]  # pair ids
    rejected: list[dict[str, str]]  # {"pair_id", "reason"}
    repairs: dict[str, int]  # accepted pair id -> repair attempts it needed (0 = first time)
    tokens: dict[str, int]  # {"input", "output"}
    error: str | None  # the branch failed (not the code): retryable
    # For the yield report (doctune.agents.dataset_yield); absent from results checkpointed before they were added:
    source: NotRequired[str]  # the section's document
    heading_path: NotRequired[str]
    evidence: NotRequired[dict[str, str]]  # accepted pair id -> evidence level
    versions: dict[str, int]  # pair id -> its stored version, for every pair in accepted and rejected


class RunInput(TypedDict, total=False):
    docs: list[str]
    max_sections: int | None


class RunState(TypedDict, total=False):
    docs: list[str]
    max_sections: int | None
    section_ids: list[str]
    sections_total: int  # sections the splitter found (before max_sections)
    results: Annotated[list[SectionResult], operator.add]
    kept: list[str]  # pair ids after curation
    dropped: list[dict[str, str]]  # {"pair_id", "reason"}
    versions: dict[str, int]  # pair id -> stored version, for kept and dropped pairs (curation may add one)
    export: dict[str, Any]  # paths and counts
    train: dict[str, Any]
    evaluation: dict[str, Any]


class RunOutput(TypedDict, total=False):
    section_ids: list[str]
    results: list[SectionResult]
    kept: list[str]
    dropped: list[dict[str, str]]
    export: dict[str, Any]
    train: dict[str, Any]
    evaluation: dict[str, Any]


class SectionInput(TypedDict):
    section_id: str


class SectionState(TypedDict, total=False):
    """State of one section's subgraph: generate -> validate -> (repair -> validate)* -> finish."""

    section_id: str
    attempt: int  # repair rounds done; bounded by settings.generator.max_repairs
    generated: int
    pending: list[str]  # pair ids waiting for validation
    failing: list[str]  # pair ids that failed the last validation
    accepted: Annotated[list[str], operator.add]
    rejected: Annotated[list[dict[str, str]], operator.add]
    versions: Annotated[dict[str, int], operator.or_]  # pair id -> current stored version (later steps win)
    tokens: dict[str, int]
    error: str | None
    results: Annotated[list[SectionResult], operator.add]  # the one result handed back to the run


class SectionOutput(TypedDict):
    results: list[SectionResult]
