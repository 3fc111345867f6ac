"""What a flow remembers from one run to the next (previous digest, certificate states, drills).

Kept as JSON files under ``lab.state_dir``: small, inspectable, and written atomically so a killed
run never leaves half a file.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel

M = TypeVar("M", bound=BaseModel)


def lab_key(lab: str, name: str) -> str:
    """The key of one lab's memory of ``name``: two labs sharing a state directory never read
    each other's (``labops-<lab>-fixed-backups``)."""
    from labops.scope import scoped_name

    return scoped_name(lab, name)


class StateStore:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _path(self, key: str) -> Path:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in key)
        return self.directory / f"{safe}.json"

    def load(self, key: str, model: type[M]) -> M | None:
        path = self._path(key)
        if not path.exists():
            return None
        return model.model_validate(json.loads(path.read_text(encoding="utf-8")))

    def save(self, key: str, value: BaseModel) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self._path(key)
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=path.name, suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(value.model_dump_json(indent=2))
        os.replace(tmp, path)
