"""Fault injection for the fake OpenAI server: ``Fault`` (one injected fault) and ``FaultPlan`` (seeded, decided
from the request's content and repeat count, never its arrival order)."""

from __future__ import annotations

import hashlib
import json
import random
import threading
from dataclasses import dataclass, field
from typing import Any

# 401/403/404: a refused key, a forbidden or unknown model (only chat requests: /models still answers, like a
# proxy that lists models it will not serve); garbage: a "finished" answer that is prose, not JSON at all.
FAULT_KINDS = ("429", "500", "503", "hang", "malformed", "truncated", "empty", "disconnect", "401", "403", "404", "garbage")


@dataclass(frozen=True)
class Fault:
    """One injected fault. ``kind`` is one of FAULT_KINDS."""

    kind: str
    retry_after_s: float = 1.0  # 429 only; sent as Retry-After (ceil seconds) and retry-after-ms
    answer: str | dict[str, Any] | None = None  # what malformed/truncated cut up (default: the default answer)

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; expected one of {FAULT_KINDS}")


@dataclass
class FaultPlan:
    """Seeded fault injection: each request faults with probability ``rate``, decided from (seed, request hash,
    how many times this same request was seen) so the plan does not depend on arrival order.

    ``max_per_request`` caps faults for identical requests (then they succeed), so bounded retries can finish.
    """

    rate: float = 0.0
    kinds: tuple[str, ...] = ("429", "500", "malformed", "truncated", "empty")
    seed: int = 0
    retry_after_s: float = 1.0
    max_per_request: int | None = None
    _seen: dict[str, int] = field(default_factory=dict, repr=False)
    _faulted: dict[str, int] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def decide(self, body: dict[str, Any]) -> Fault | None:
        key = request_key(body)
        with self._lock:
            n = self._seen.get(key, 0)
            self._seen[key] = n + 1
            if self.max_per_request is not None and self._faulted.get(key, 0) >= self.max_per_request:
                return None
            rng = random.Random(f"{self.seed}:{key}:{n}")
            if rng.random() >= self.rate:
                return None
            self._faulted[key] = self._faulted.get(key, 0) + 1
            return Fault(rng.choice(self.kinds), retry_after_s=self.retry_after_s)


def request_key(body: dict[str, Any]) -> str:
    """Stable hash of what the model is asked (messages + model), independent of dict order."""
    return hashlib.sha256(
        json.dumps([body.get("model"), body.get("messages")], sort_keys=True).encode()
    ).hexdigest()[:16]
