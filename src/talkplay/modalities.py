"""The five modalities and their token names, in the paper's default order.

Every stage refers to modalities by these names: embeddings are stored as
``embeddings/<name>.npy`` (float32, one row per catalog track in catalog order) with
``embeddings/<name>.mask.npy`` (bool, True where the track has that modality), and
music tokens are written ``<{prefix}_{code:04d}>``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Modality:
    name: str  # file and config name
    prefix: str  # token prefix
    description: str


MODALITIES: dict[str, Modality] = {
    m.name: m
    for m in [
        Modality("cooccur", "cf", "playlist co-occurrence"),
        Modality("tags", "tag", "semantic tags"),
        Modality("metadata", "meta", "title, artists, album"),
        Modality("lyrics", "lyr", "lyrics"),
        Modality("audio", "aud", "audio"),
    ]
}
DEFAULT_ORDER: tuple[str, ...] = tuple(MODALITIES)

MUSIC_OPEN = "<|music|>"
MUSIC_CLOSE = "<|/music|>"


def token_name(modality: str, code: int) -> str:
    """``token_name("tags", 87) == "<tag_0087>"``."""
    return f"<{MODALITIES[modality].prefix}_{code:04d}>"
# Content-grounded tracks: the one position a track occupies; its input embedding is the
# track's row, computed from its content (``talkplay.tracks``), never a learnt token row.
TRACK_SLOT = "<|track|>"
