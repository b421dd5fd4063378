"""The graph's retry policy for the nodes that call the LLM (generate, repair), shared by the wiring
(`graph.py`) and the nodes that decide when a failure becomes the section's error (`nodes.py`)."""

from __future__ import annotations

from langgraph.types import RetryPolicy


def _transient(exc: Exception) -> bool:
    """Retry only what can succeed on a second try (rate limits, timeouts, 5xx) -- never bad input."""
    from doctune.agents.llm import is_transient

    return is_transient(exc)


# The LLM client already retries transient errors (honouring Retry-After, llm.max_retries times); the graph adds
# one more attempt of the whole node for an endpoint that was down for longer. After that the node records the
# error on the section (see nodes._section_failure) so the run goes on.
LLM_RETRY = RetryPolicy(max_attempts=2, initial_interval=1.0, retry_on=_transient)
