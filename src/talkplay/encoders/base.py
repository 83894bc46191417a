"""The encoder interface, its registry and the stage config.

A per-track encoder turns tracks into rows: ``enc = get_encoder("metadata", EncodeConfig())``
(``talkplay.encoders.pipeline``, where the built-in encoders are imported and so registered);
``enc.keys(tracks)`` gives one content key per track (``None`` when the track lacks the
modality), ``enc.encode(tracks)`` gives ``Encoded(emb, mask, extras)``. Keys drive the
cache: a row whose key is unchanged is never recomputed. Co-occurrence is a whole-catalog
fit and lives in ``cooccur.py``.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from talkplay.catalog import Track
from talkplay.errors import InputError
from talkplay.modalities import DEFAULT_ORDER, MODALITIES


@dataclass
class EncodeConfig:
    """What ``encode_run`` does: ``EncodeConfig(modalities=("metadata", "tags"), audio_limit=20)``.

    ``text_model`` None is the bundled all-MiniLM-L6-v2; ``audio_limit`` encodes audio for a
    deterministic sample of that many tracks (others get mask False); ``shard=(i, n)``
    encodes only rows ``r % n == i`` into a shard file that a later unsharded run merges.
    """

    modalities: tuple[str, ...] = DEFAULT_ORDER
    text_model: str | None = None
    batch_size: int = 64
    audio_model: str = "MSD_musicnn"
    audio_limit: int | None = None
    audio_seconds: float = 30.0  # centred excerpt per track
    audio_top_tags: int = 5
    audio_batch: int = 8  # tracks per musicnn forward pass
    cooccur_dim: int = 64
    cooccur_conversations: bool = True  # liked tracks of a conversation count as a session
    seed: int = 0
    device: str = "cpu"  # torch device for the text and audio models, e.g. "cuda"
    shard: tuple[int, int] | None = None
    force: bool = False  # ignore cached rows

    def validate(self) -> EncodeConfig:
        """Check every field; raise ``InputError`` naming the flag that is wrong."""
        bad = [m for m in self.modalities if m not in MODALITIES]
        if bad or not self.modalities:
            raise InputError(f"unknown modality {bad[0] if bad else '(none given)'}; choose from "
                             f"{', '.join(MODALITIES)}", field="--modalities")
        if self.batch_size < 1:
            raise InputError("must be at least 1", field="--batch-size")
        if self.audio_limit is not None and self.audio_limit < 0:
            raise InputError("must not be negative", field="--audio-limit")
        if self.audio_seconds <= 0:
            raise InputError("must be positive", field="--audio-seconds")
        if self.cooccur_dim < 1:
            raise InputError("must be at least 1", field="--cooccur-dim")
        if self.device != "cpu":
            import torch

            kind = self.device.split(":")[0]
            ok = (kind == "cuda" and torch.cuda.is_available()) or (
                kind == "mps" and torch.backends.mps.is_available())
            if not ok:
                raise InputError(f"device {self.device!r} is not available here", field="--device")
        if self.shard is not None:
            i, n = self.shard
            if n < 1 or not 0 <= i < n:
                raise InputError(f"expected i/n with 0 <= i < n, got {i}/{n}", field="--shard")
        return self


@dataclass
class Encoded:
    """Rows produced by an encoder: embeddings, a presence mask and extra per-row arrays."""

    emb: np.ndarray
    mask: np.ndarray
    extras: dict[str, np.ndarray] = field(default_factory=dict)
    stats: dict[str, float] = field(default_factory=dict)


def cache_key(*parts: object) -> str:
    """``cache_key(model, setting, text)``: a short stable hash of what a row was computed from."""
    h = hashlib.sha1()
    for p in parts:
        h.update(str(p).encode("utf-8"))
        h.update(b"\x00")
    return h.hexdigest()[:20]


class ModalityEncoder(ABC):
    """One modality's per-track encoder (see the module docstring)."""

    modality: str = ""
    extra_names: tuple[str, ...] = ()  # names of per-row arrays in Encoded.extras
    block_size: int = 512  # tracks per ``encode`` call: the unit of progress and of saving

    @property
    @abstractmethod
    def dim(self) -> int: ...

    @abstractmethod
    def info(self) -> dict[str, Any]:
        """Model name and versions, recorded in ``run.json``."""

    @abstractmethod
    def keys(self, tracks: list[Track]) -> list[str | None]:
        """One content key per track; ``None`` where the track lacks this modality."""

    @abstractmethod
    def encode(self, tracks: list[Track]) -> Encoded:
        """Encode tracks that all have this modality (bad inputs may still come back masked)."""

    def extra_dims(self) -> dict[str, int]:
        return {}


Factory = Callable[[EncodeConfig, Path | None], ModalityEncoder]
REGISTRY: dict[str, Factory] = {}


def register(modality: str) -> Callable[[Factory], Factory]:
    """Decorator: ``@register("metadata") def make(cfg, cache_dir): ...``."""

    def deco(fn: Factory) -> Factory:
        REGISTRY[modality] = fn
        return fn

    return deco
