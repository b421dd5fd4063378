"""A run's data in LangGraph's store (`BaseStore`): section text, every version of every pair, the run's record.

Graph state holds only ids and version numbers; the bodies live here, so checkpoints stay small. The store is
whatever the graph runs with: the SQLite store inside the run's checkpoint database, the Postgres store beside
the Postgres checkpointer, or a LangGraph server's own store (`runtime.store`).

Append-only: a pair is written as `<pair id>@<version>`, and a step that changes a pair (validate adds its
verdict, repair writes the next attempt, the judge its score) writes the next version, never over an earlier one.
State carries each pair's current version, so a checkpoint that is resumed, replayed or forked reads the pairs as
they were at that checkpoint, and several workers on one database share one run's data. The version a step
writes follows from its input state, so a step run again from the same checkpoint (after a kill, a retried
error, a retry's fork) writes the same key with what it computes again: the same for the compiler's verdicts and
the doc-example generator, and an LLM repair already stored is reused, not asked again. The LLM judge, whose
scores may differ from one asking to the next, writes to the first free version instead (`fresh=True`).
Namespaces:

    ("doctune", <run id>, "sections")   <section id>            -> Section
    ("doctune", <run id>, "pairs")      <pair id>@<version>     -> Pair
    ("doctune", "runs")                 <run id>                -> the run's record (what run.json holds)
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from langgraph.store.base import BaseStore, GetOp, PutOp

from doctune.core.schemas import Pair, Section

ROOT = "doctune"
RUNS = (ROOT, "runs")


def pair_key(pair_id: str, version: int) -> str:
    return f"{pair_id}@{version}"


class Store:
    """One run's data in a `BaseStore` (async: every call is one batch of store operations, one round trip)."""

    def __init__(self, base: BaseStore, run_id: str):
        self.base = base
        self.run_id = run_id
        self._sections = (ROOT, run_id, "sections")
        self._pairs = (ROOT, run_id, "pairs")

    # ------------------------------------------------------------ sections (written once by split)

    async def put_sections(self, sections: Iterable[Section]) -> None:
        await self._put([(self._sections, s.id, s.model_dump(mode="json")) for s in sections])

    async def get_section(self, section_id: str) -> Section:
        (section,) = await self.get_sections([section_id], strict=True)
        return section

    async def get_sections(self, section_ids: list[str], *, strict: bool = False) -> list[Section]:
        """The stored sections of `section_ids`, in order; missing ones are skipped (or raise KeyError)."""
        values = await self._get(self._sections, section_ids, strict)
        return [Section.model_validate(v) for v in values if v is not None]

    # ------------------------------------------------------------ pairs (append-only versions)

    async def put_pairs(self, pairs: Iterable[Pair], after: Mapping[str, int] | None = None, *,
                        fresh: bool = False) -> dict[str, int]:
        """Write each pair as its next version (the one after `after[pair.id]`; 0 if absent) or, with `fresh`,
        the first version after that which is not stored yet; returns {pair id: version written}, which the
        caller keeps in its state."""
        pairs = list(pairs)
        versions = {p.id: (after or {}).get(p.id, -1) + 1 for p in pairs}
        todo = list(versions) if fresh else []
        while todo:  # ends: each round moves every taken pair one version up, and only so many are stored
            found = await self._get(self._pairs, [pair_key(p, versions[p]) for p in todo], False)
            todo = [p for p, value in zip(todo, found, strict=True) if value is not None]
            for p in todo:
                versions[p] += 1
        await self._put([(self._pairs, pair_key(p.id, versions[p.id]), p.model_dump(mode="json")) for p in pairs])
        return versions

    async def get_pair(self, pair_id: str, version: int) -> Pair:
        (pair,) = await self.get_pairs([pair_id], {pair_id: version})
        return pair

    async def get_pairs(self, pair_ids: list[str], versions: Mapping[str, int]) -> list[Pair]:
        """The pairs at the versions the caller's state names, in order (KeyError if one is not stored)."""
        keys = [pair_key(p, versions[p]) for p in pair_ids]
        return [Pair.model_validate(v) for v in await self._get(self._pairs, keys, True)]

    async def find_pair(self, pair_id: str, version: int) -> Pair | None:
        """The pair at `version` if some earlier (unfinished) step already wrote it, else None."""
        (value,) = await self._get(self._pairs, [pair_key(pair_id, version)], False)
        return None if value is None else Pair.model_validate(value)

    # ------------------------------------------------------------ whole run (status, tests, inspection)

    async def all_sections(self) -> list[Section]:
        return [Section.model_validate(v) for _, v in sorted(await self._all(self._sections))]

    async def latest_pairs(self) -> dict[str, Pair]:
        """Every stored pair at its newest version (not necessarily the one a given checkpoint refers to)."""
        newest: dict[str, tuple[int, dict[str, Any]]] = {}
        for key, value in await self._all(self._pairs):
            pid, _, v = key.rpartition("@")
            if pid not in newest or int(v) > newest[pid][0]:
                newest[pid] = (int(v), value)
        return {pid: Pair.model_validate(value) for pid, (_, value) in sorted(newest.items())}

    # ------------------------------------------------------------ plumbing

    async def _all(self, ns: tuple[str, ...], page: int = 500) -> list[tuple[str, dict[str, Any]]]:
        out: list[tuple[str, dict[str, Any]]] = []
        seen = 0
        while True:
            items = await self.base.asearch(ns, limit=page, offset=seen)
            seen += len(items)
            out += [(it.key, it.value) for it in items if tuple(it.namespace) == ns]
            if len(items) < page:
                return out

    async def _put(self, items: list[tuple[tuple[str, ...], str, dict[str, Any]]]) -> None:
        if items:
            await self.base.abatch([PutOp(ns, key, value, index=False) for ns, key, value in items])

    async def _get(self, ns: tuple[str, ...], keys: list[str], strict: bool) -> list[dict[str, Any] | None]:
        if not keys:
            return []
        items = await self.base.abatch([GetOp(ns, k) for k in keys])
        if strict and (missing := [k for k, it in zip(keys, items, strict=True) if it is None]):
            raise KeyError(f"run {self.run_id}: {ns[-1]} not in the store: {', '.join(missing[:5])}")
        return [None if it is None else it.value for it in items]  # type: ignore[union-attr]


async def get_record(base: BaseStore, run_id: str) -> dict[str, Any] | None:
    """The run's record as the database holds it (None if this database has no run of that id)."""
    item = await base.aget(RUNS, run_id)
    return None if item is None else dict(item.value)


async def list_records(base: BaseStore, limit: int = 20) -> list[dict[str, Any]]:
    """The records of the runs this database holds (newest first, at most ``limit``)."""
    items = await base.asearch(RUNS, limit=limit)
    return [dict(i.value) for i in sorted(items, key=lambda i: i.updated_at, reverse=True)]


async def put_record(base: BaseStore, info: dict[str, Any]) -> None:
    """Save the run's record (run id, docs, settings of record, attempts) in the database."""
    await base.aput(RUNS, info["run_id"], json.loads(json.dumps(info, default=str)), index=False)
