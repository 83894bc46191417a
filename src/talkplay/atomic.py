"""Atomic file writes: write to a temp file in the same folder, then rename.

A crash or a bad row never leaves a half-written artifact behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temp path; on success it replaces ``path`` atomically.

    Use as ``with atomic_path("x.npy", suffix=".npy") as tmp: np.save(tmp, arr)``.
    The suffix matters for writers that append one (``np.save`` adds ``.npy``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or ".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_atomic(path: str | Path, writer: Callable[[Path], Any], suffix: str = "") -> Path:
    """Call ``writer(tmp_path)`` then move the result to ``path``."""
    with atomic_path(path, suffix=suffix) as tmp:
        writer(tmp)
    return Path(path)


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return write_atomic(path, lambda p: p.write_text(text, encoding="utf-8"))


def write_json_atomic(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    return write_text_atomic(path, json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n")


def jsonl_text(rows: list[dict[str, Any]]) -> str:
    """The text ``write_jsonl_atomic`` writes: one JSON object per line."""
    return "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in rows)


def write_jsonl_atomic(path: str | Path, rows: list[dict[str, Any]]) -> Path:
    """Write one JSON object per line to ``path`` atomically."""
    return write_text_atomic(path, jsonl_text(rows))


def save_npy_atomic(path: str | Path, array: Any) -> Path:
    """``np.save`` to ``path`` atomically."""
    import numpy as np

    return write_atomic(path, lambda p: np.save(p, array), suffix=".npy")
