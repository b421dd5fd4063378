"""File-backed store for the big things (section text, pairs with code, compiler output), keyed by id.

Graph state holds only ids and short status; this keeps the checkpoint DB from growing with every step.
Writes are atomic (temp file + rename), so a killed run never leaves half a record behind.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from doctune.core.files import FILE_MODE
from doctune.core.schemas import Pair, Section


class Store:
    """`<out>/store/{sections,pairs}/<id>.json`."""

    def __init__(self, root: Path | str):
        self.root = Path(root)

    def _path(self, kind: str, key: str) -> Path:
        return self.root / kind / f"{key}.json"

    def _write(self, path: Path, data: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(data)
            os.chmod(tmp, FILE_MODE)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def put_section(self, section: Section) -> str:
        self._write(self._path("sections", section.id), section.model_dump_json())
        return section.id

    def get_section(self, section_id: str) -> Section:
        return Section.model_validate_json(self._path("sections", section_id).read_text(encoding="utf-8"))

    def put_pair(self, pair: Pair) -> str:
        self._write(self._path("pairs", pair.id), pair.model_dump_json())
        return pair.id

    def get_pair(self, pair_id: str) -> Pair:
        return Pair.model_validate_json(self._path("pairs", pair_id).read_text(encoding="utf-8"))

    def has_pair(self, pair_id: str) -> bool:
        return self._path("pairs", pair_id).is_file()

    def put_json(self, kind: str, key: str, obj: object) -> None:
        self._write(self._path(kind, key), json.dumps(obj, ensure_ascii=False))

    def get_json(self, kind: str, key: str) -> object:
        return json.loads(self._path(kind, key).read_text(encoding="utf-8"))

    def iter_pairs(self) -> Iterator[Pair]:
        d = self.root / "pairs"
        if d.is_dir():
            for p in sorted(d.glob("*.json")):
                yield Pair.model_validate_json(p.read_text(encoding="utf-8"))
