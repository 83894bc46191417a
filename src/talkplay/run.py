"""The run directory: the unit a user moves around, and its ``run.json`` record.

``Run(path)`` names every artifact path in one place; ``run.record(stage, info)`` merges a
stage's config, versions and timings into ``run.json`` atomically.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from talkplay import __version__
from talkplay.atomic import write_json_atomic
from talkplay.catalog import Catalog


class Run:
    """Paths and metadata of one run directory: ``run = Run("runs/demo")``."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    # artifact locations, one obvious place each
    @property
    def meta_path(self) -> Path:
        return self.path / "run.json"

    @property
    def embeddings_dir(self) -> Path:
        return self.path / "embeddings"

    @property
    def tokenizer_dir(self) -> Path:
        return self.path / "tokenizer"

    @property
    def dialogs_dir(self) -> Path:
        return self.path / "dialogs"

    @property
    def model_dir(self) -> Path:
        return self.path / "model"

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / "checkpoints"

    @property
    def eval_dir(self) -> Path:
        return self.path / "eval"

    @property
    def cache_dir(self) -> Path:
        return self.path / "cache"

    def load_catalog(self, validate: bool = True) -> Catalog:
        return Catalog.load(self.path, validate=validate)

    def meta(self) -> dict[str, Any]:
        """The parsed ``run.json`` (empty dict if none yet)."""
        if not self.meta_path.exists():
            return {}
        return json.loads(self.meta_path.read_text(encoding="utf-8"))

    def record(self, stage: str, info: dict[str, Any]) -> None:
        """Merge ``info`` under ``stages[stage]`` in ``run.json``, with version and time."""
        meta = self.meta()
        meta.setdefault("talkplay_version", __version__)
        meta.setdefault("created", time.strftime("%Y-%m-%dT%H:%M:%S"))
        stages = meta.setdefault("stages", {})
        entry = stages.setdefault(stage, {})
        entry.update(info)
        entry["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        self.path.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.meta_path, meta)

    def stage(self, stage: str) -> dict[str, Any]:
        """What ``run.json`` records for a stage (empty if it has not run)."""
        return self.meta().get("stages", {}).get(stage, {})
