"""Per-modality track embeddings: ``encode_run(Run(path), EncodeConfig())``.

Text modalities (metadata, tags, lyrics) use ``TextEncoder``; audio uses a PyTorch port of
musicnn (MSD); co-occurrence is learned from playlists. ``encode_tracks(run, tracks)``
embeds new tracks without writing files.
"""

from talkplay.encoders.pipeline import EncodeConfig, audio_tags, encode_run, encode_tracks, load_embeddings
from talkplay.encoders.text import TextEncoder, track_text

__all__ = ["EncodeConfig", "TextEncoder", "audio_tags", "encode_run", "encode_tracks", "load_embeddings",
           "track_text"]
