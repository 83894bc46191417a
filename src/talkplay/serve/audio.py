"""Find or render the audio file for a track: ``AudioFiles(cache_dir).path_for(track)``.

Only paths named by the catalog are ever served, and only regular files: a track id from
a URL is looked up in the catalog, never joined onto a directory, so ``../`` in an id is
just an unknown id. Scores (``audio="score:..."``) are rendered once into the run's cache
by ``talkplay.audio_render.render_audio`` and reused.
"""

from __future__ import annotations

import threading
from pathlib import Path

from talkplay.audio_render import render_audio
from talkplay.catalog import Track
from talkplay.errors import TalkPlayError

MEDIA_TYPES = {".wav": "audio/wav", ".mp3": "audio/mpeg", ".ogg": "audio/ogg", ".oga": "audio/ogg",
               ".flac": "audio/flac", ".m4a": "audio/mp4", ".opus": "audio/ogg", ".webm": "audio/webm"}


class NoAudio(LookupError):
    """The track has no audio the server can serve; the message says why."""


class AudioFiles:
    """Resolves tracks to local audio files, rendering scores on first use (thread-safe)."""

    def __init__(self, cache_dir: Path | None) -> None:
        self.cache_dir = cache_dir
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self._failed: dict[str, str] = {}

    def _lock(self, track_id: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(track_id, threading.Lock())

    def direct(self, track: Track) -> Path | None:
        """The track's own file when a browser can play it as is (no work), else None."""
        ref = track.audio or ""
        if ref and "://" not in ref and not ref.startswith("score:"):
            p = Path(ref).expanduser()
            if p.suffix.lower() in MEDIA_TYPES and p.is_file():
                return p
        return None

    def path_for(self, track: Track) -> Path:
        """The audio file to stream for ``track``, rendering (or converting) it if needed.

        Raises ``NoAudio`` with the reason when there is none; may take seconds for a score.
        """
        found = self.direct(track)
        if found is not None:
            return found
        ref = track.audio
        if not ref:
            raise NoAudio(f"track {track.id!r} has no audio")
        if "://" in ref:
            raise NoAudio(f"track {track.id!r} has only remote audio, which this server does not proxy")
        if not ref.startswith("score:") and not Path(ref).expanduser().is_file():
            raise NoAudio(f"audio file of track {track.id!r} is missing")
        if self.cache_dir is None:
            raise NoAudio("no cache directory to render audio into")
        if track.id in self._failed:
            raise NoAudio(self._failed[track.id])
        with self._lock(track.id):
            try:
                path = Path(render_audio(track, self.cache_dir))
            except TalkPlayError as e:
                self._failed[track.id] = f"cannot render audio for track {track.id!r}: {e}"
                raise NoAudio(self._failed[track.id]) from None
        if not path.is_file():
            raise NoAudio(f"rendering track {track.id!r} produced no file")
        return path


def media_type(path: Path) -> str:
    return MEDIA_TYPES.get(path.suffix.lower(), "application/octet-stream")
