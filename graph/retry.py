"""The graph's retry policy for the nodes that call the LLM (generate, repair), shared by the wiring
(`graph.py`) and the nodes that decide when a failure becomes the section's error (`nodes.py`)."""

from __future__ import annotations

from langgraph.types import RetryPolicy

from doctune.agents.llm import is_transient

# One retry rule (agents/llm.py, LLMRetry): every LLM request is retried by its client on the errors `is_transient`
# names (HTTP 408/409/425/429/5xx, timeouts, connection errors; never 400/401/403/404 or an unusable answer),
# llm.max_retries times, waiting Retry-After or a jittered exponential backoff. When those retries run out, the
# graph runs the whole node once more, for the same errors only (an endpoint down for longer than the client
# waited); after that the node records the error on the section (see nodes._section_failure) and the run goes on.
LLM_RETRY = RetryPolicy(max_attempts=2, initial_interval=1.0, retry_on=is_transient)
