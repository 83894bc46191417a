"""Per-modality track embeddings: ``encode_run(Run(path), EncodeConfig())``.

Text modalities (metadata, tags, lyrics) use ``TextEncoder``; audio uses a PyTorch port of
musicnn (MSD); co-occurrence is learned from playlists. ``encode_tracks(run, tracks)``
embeds new tracks without writing files.
"""

from __future__ import annotations

from typing import Any

from talkplay.encoders.text import TextEncoder, track_text

__all__ = ["EncodeConfig", "TextEncoder", "audio_tags", "encode_run", "encode_tracks", "load_embeddings",
           "track_text"]


def __getattr__(name: str) -> Any:
    # the pipeline pulls in torch/audio code; import it only when asked for
    if name in ("EncodeConfig", "encode_run", "encode_tracks", "audio_tags", "load_embeddings"):
        from talkplay.encoders import pipeline

        return getattr(pipeline, name)
    raise AttributeError(name)
