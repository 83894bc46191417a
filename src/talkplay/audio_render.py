"""Audio for a track, on demand: score -> MIDI -> WAV, or a real file -> WAV, cached.

``render_audio(track, cache_dir, sample_rate=16000, max_seconds=30.0) -> Path`` returns a
mono 16-bit WAV under ``cache_dir/audio/``. Tracks whose ``audio`` is
``"score:<corpus path>[#<number>]"`` are parsed with music21, exported to MIDI and
synthesised with FluidSynth and the General MIDI soundfont shipped in pretty-midi when
pyfluidsynth and libfluidsynth are installed, else with pretty-midi's own sine
synthesiser. Local audio files are decoded and resampled. Failures raise ``AudioRenderError``
with the reason, and are remembered in the cache so a second call fails fast.
"""

from __future__ import annotations

import hashlib
import re
import tempfile
import warnings
from pathlib import Path

import numpy as np

from talkplay.atomic import write_atomic, write_text_atomic
from talkplay.catalog import Track
from talkplay.errors import TalkPlayError
from talkplay.log import get_logger

log = get_logger(__name__)
DEFAULT_MAX_SECONDS = 30.0


class AudioRenderError(TalkPlayError):
    """A track's audio could not be rendered; the message says why."""


def soundfont_path() -> Path:
    """The TimGM6mb General MIDI soundfont shipped inside pretty-midi."""
    import pretty_midi

    return Path(pretty_midi.__file__).parent / "TimGM6mb.sf2"


def synth_backend() -> str:
    """``"fluidsynth"`` when pyfluidsynth and libfluidsynth load, else ``"sine"``."""
    try:
        import fluidsynth  # noqa: F401
    except (ImportError, OSError):
        return "sine"
    return "fluidsynth" if soundfont_path().exists() else "sine"


def is_renderable(track: Track) -> bool:
    """Cheap check: a score reference or an existing local file (no rendering)."""
    a = track.audio
    if not a:
        return False
    if a.startswith("score:"):
        return True
    return "://" not in a and Path(a).expanduser().exists()


def cache_path(track: Track, cache_dir: Path, sample_rate: int, max_seconds: float | None) -> Path:
    """Where ``render_audio`` keeps this track's WAV (stable across runs)."""
    key = f"{track.audio}|{sample_rate}|{max_seconds}|{synth_backend()}"
    digest = hashlib.sha1(key.encode()).hexdigest()[:16]
    slug = re.sub(r"[^A-Za-z0-9]+", "_", track.id)[-60:].strip("_")
    return Path(cache_dir) / "audio" / f"{slug}-{digest}.wav"


def render_audio(track: Track, cache_dir: str | Path, sample_rate: int = 16000,
                 max_seconds: float | None = DEFAULT_MAX_SECONDS) -> Path:
    """Return a cached mono WAV of ``track`` at ``sample_rate``, at most ``max_seconds`` long."""
    if not track.audio:
        raise AudioRenderError(f"track {track.id!r} has no audio or score")
    out = cache_path(track, Path(cache_dir), sample_rate, max_seconds)
    failed = out.with_suffix(".failed")
    if out.exists():
        return out
    if failed.exists():
        raise AudioRenderError(failed.read_text(encoding="utf-8"))
    try:
        if track.audio.startswith("score:"):
            y = _render_score(track.audio[len("score:"):], sample_rate, max_seconds)
        elif "://" in track.audio:
            raise AudioRenderError(f"track {track.id!r}: remote audio ({track.audio}) is not downloaded")
        else:
            y = _load_file(Path(track.audio).expanduser(), sample_rate, max_seconds)
        if y.size == 0 or float(np.max(np.abs(y))) < 1e-4:
            raise AudioRenderError(f"track {track.id!r}: rendering gave silence")
    except AudioRenderError as e:
        write_text_atomic(failed, str(e))
        raise
    y = (0.9 * y / float(np.max(np.abs(y)))).astype(np.float32)
    import soundfile as sf

    write_atomic(out, lambda p: sf.write(str(p), y, sample_rate, format="WAV", subtype="PCM_16"),
                 suffix=".wav")
    return out


def _parse_score(ref: str):
    from music21 import converter, corpus

    path, _, number = ref.partition("#")
    num = int(number) if number.isdigit() else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if Path(path).is_absolute():
            return converter.parse(path, number=num) if num is not None else converter.parse(path)
        return corpus.parse(path, number=num) if num is not None else corpus.parse(path)


def _render_score(ref: str, sample_rate: int, max_seconds: float | None) -> np.ndarray:
    import pretty_midi
    from music21 import midi

    try:
        score = _parse_score(ref)
    except Exception as e:  # music21 raises many exception types for scores it cannot read
        raise AudioRenderError(f"score {ref}: cannot parse ({type(e).__name__}: {e})") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mf = midi.translate.streamToMidiFile(score)
        with tempfile.TemporaryDirectory(prefix="talkplay-midi-") as tmp:
            mid = Path(tmp) / "score.mid"
            mf.open(str(mid), "wb")
            mf.write()
            mf.close()
            pm = pretty_midi.PrettyMIDI(str(mid))
    except Exception as e:  # MIDI export fails for some ABC tunes (ties, tuplets, voices)
        raise AudioRenderError(f"score {ref}: MIDI export failed ({type(e).__name__}: {e})") from None
    if max_seconds:
        for inst in pm.instruments:
            inst.notes = [n for n in inst.notes if n.start < max_seconds]
            for n in inst.notes:
                n.end = min(n.end, max_seconds)
    if not any(inst.notes for inst in pm.instruments):
        raise AudioRenderError(f"score {ref}: no notes to play")
    if synth_backend() == "fluidsynth":
        y = pm.fluidsynth(fs=sample_rate, sf2_path=str(soundfont_path()))
    else:
        y = pm.synthesize(fs=sample_rate)
    if max_seconds:
        y = y[: int(max_seconds * sample_rate)]
    return np.asarray(y, dtype=np.float32)


def _load_file(path: Path, sample_rate: int, max_seconds: float | None) -> np.ndarray:
    """Decode with soundfile (WAV/FLAC/OGG/MP3), falling back to librosa; mono, resampled."""
    if not path.exists():
        raise AudioRenderError(f"audio file does not exist: {path}")
    import soundfile as sf

    try:
        with sf.SoundFile(str(path)) as f:
            sr = f.samplerate
            frames = int(max_seconds * sr) if max_seconds else -1
            y = f.read(frames=frames, dtype="float32", always_2d=True).mean(axis=1)
    except (sf.LibsndfileError, RuntimeError, TypeError):
        import librosa  # slower to import; only for formats libsndfile cannot read

        try:
            y, sr = librosa.load(str(path), sr=None, mono=True, duration=max_seconds)
        except Exception as e:  # audioread raises various errors for unreadable files
            raise AudioRenderError(f"cannot decode {path}: {type(e).__name__}: {e}") from None
    if sr != sample_rate:
        from math import gcd

        from scipy.signal import resample_poly

        g = gcd(int(sr), int(sample_rate))
        y = resample_poly(y, sample_rate // g, int(sr) // g).astype(np.float32)
    return y
