"""Audio loading and the musicnn audio encoder.

``load_audio(path)`` -> 16 kHz mono float32, raising ``AudioError`` (with the reason) on
files that are missing, unreadable, truncated, silent, too short or sampled too low.
``AudioEncoder().encode_arrays([wave, ...])`` -> (embeddings (n, 200), tag probabilities
(n, 50)) from the MSD musicnn port; ``AudioEncoder().encode_tracks(tracks, cache_dir)``
does the whole thing for catalog tracks, turning every bad file into a logged warning and
a False mask entry, never an exception.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import numpy as np

from talkplay.audio_render import render_audio
from talkplay.catalog import Track
from talkplay.encoders.base import Encoded, ModalityEncoder, cache_key, register
from talkplay.errors import TalkPlayError
from talkplay.log import get_logger, progress

log = get_logger(__name__)

TARGET_SR = 16000
MIN_SR = 4000  # below this the mel bands musicnn listens to are empty
MIN_SECONDS = 0.5
SILENCE_PEAK = 1e-4  # peak amplitude under which a clip counts as silence


class AudioError(TalkPlayError):
    """A track's audio cannot be used; the message says why."""


def _wav_truncated(path: Path) -> bool:
    """True when a RIFF/WAVE file's data chunk claims more bytes than the file holds.

    libsndfile quietly reads what is there, so a cut-off download would pass unnoticed.
    """
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return False
            pos = 12
            while True:
                ch = f.read(8)
                if len(ch) < 8:
                    return False
                cid, clen = ch[:4], struct.unpack("<I", ch[4:])[0]
                if cid == b"data":
                    return clen != 0xFFFFFFFF and pos + 8 + clen > size
                pos += 8 + clen + (clen & 1)
                f.seek(pos)
    except OSError:
        return False


def load_audio(path: str | Path, max_seconds: float | None = None, sr: int = TARGET_SR) -> np.ndarray:
    """Read an audio file -> mono float32 at ``sr`` Hz; raise ``AudioError`` saying what is wrong.

    ``max_seconds`` keeps a centred excerpt (the middle of a song is more typical of it
    than its intro), read without decoding the rest where the format allows.
    """
    import soundfile as sf

    path = Path(path).expanduser()
    if not path.exists():
        raise AudioError(f"audio file not found: {path}")
    if path.stat().st_size == 0:
        raise AudioError(f"audio file is empty: {path}")
    try:
        info = sf.info(str(path))
    except Exception as e:  # not audio at all, or a format libsndfile cannot open
        raise AudioError(f"not a readable audio file: {path} ({e})") from None
    if info.samplerate < MIN_SR:
        raise AudioError(f"sample rate {info.samplerate} Hz is too low (need >= {MIN_SR} Hz): {path}")
    if path.suffix.lower() in (".wav", ".wave") and _wav_truncated(path):
        raise AudioError(f"audio file is truncated (data chunk runs past the end): {path}")
    start, stop = 0, None
    if max_seconds and info.frames > 0:
        want = int(max_seconds * info.samplerate)
        if info.frames > want:
            start = (info.frames - want) // 2
            stop = start + want
    try:
        data, file_sr = sf.read(str(path), start=start, stop=stop, dtype="float32", always_2d=True)
    except Exception as e:  # truncated or corrupt compressed stream
        raise AudioError(f"cannot decode audio (truncated or corrupt?): {path} ({e})") from None
    if data.shape[0] == 0:
        raise AudioError(f"no audio could be decoded (truncated or empty stream): {path}")
    wave = data.mean(axis=1)
    if not np.all(np.isfinite(wave)):
        raise AudioError(f"audio contains NaN or infinite samples: {path}")
    if wave.shape[0] / file_sr < MIN_SECONDS:
        secs = wave.shape[0] / file_sr
        raise AudioError(f"audio is only {secs:.2f} s long (need >= {MIN_SECONDS} s): {path}")
    if float(np.max(np.abs(wave))) < SILENCE_PEAK:
        raise AudioError(f"audio is silent: {path}")
    if file_sr != sr:
        import librosa

        wave = librosa.resample(wave, orig_sr=file_sr, target_sr=sr)
    return np.ascontiguousarray(wave, dtype=np.float32)


def resolve_audio(track: Track, cache_dir: Path | None, max_seconds: float | None = 30.0) -> Path:
    """The local file holding ``track``'s audio, rendering ``score:`` works into ``cache_dir``."""
    ref = track.audio
    if not ref:
        raise AudioError(f"track {track.id} has no audio")
    if ref.startswith("score:"):
        if cache_dir is None:
            raise AudioError(f"track {track.id}: rendering a score needs a cache folder")
        try:
            return Path(render_audio(track, cache_dir, sample_rate=TARGET_SR, max_seconds=max_seconds))
        except TalkPlayError as e:
            raise AudioError(f"track {track.id}: cannot render score: {e}") from None
    if "://" in ref:
        raise AudioError(f"track {track.id}: remote audio is not fetched ({ref}); download it first")
    return Path(ref).expanduser()


class AudioEncoder:
    """musicnn embeddings and tags: ``AudioEncoder().encode_arrays([wave16k])`` -> (emb, probs).

    The embedding of a clip is the mean over its 3 s patches of musicnn's 200-unit
    penultimate layer; the tag probabilities are the mean patch sigmoid outputs (as the
    musicnn tagger reports them).
    """

    def __init__(self, model: str = "MSD_musicnn", max_seconds: float = 30.0,
                 batch_patches: int = 32, device: str = "cpu") -> None:
        from talkplay.encoders.musicnn import labels_for

        self.model = model
        self.max_seconds = max_seconds
        self.batch_patches = batch_patches
        self.device = device
        self.labels = labels_for(model)
        self._net = None
        self.dim = 200

    @property
    def name(self) -> str:
        return self.model

    def net(self):  # noqa: ANN201 - torch module, loaded on first use
        if self._net is None:
            from talkplay.encoders.musicnn import load_musicnn

            self._net = load_musicnn(self.model, self.device)
        return self._net

    def encode_arrays(self, waves: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """16 kHz mono clips -> (embeddings (n, 200) float32, tag probabilities (n, 50) float32)."""
        import torch

        from talkplay.encoders.musicnn import log_mel, patches

        if not waves:
            return np.zeros((0, self.dim), np.float32), np.zeros((0, len(self.labels)), np.float32)
        per_clip = [patches(log_mel(w)) for w in waves]
        owners = np.concatenate([np.full(len(p), i) for i, p in enumerate(per_clip)])
        allp = np.concatenate(per_clip, axis=0)
        pens, probs = [], []
        net = self.net()
        with torch.inference_mode():
            for s in range(0, len(allp), self.batch_patches):
                logits, pen = net(torch.from_numpy(allp[s:s + self.batch_patches]).to(self.device))
                pens.append(pen.float().cpu().numpy())
                probs.append(torch.sigmoid(logits).float().cpu().numpy())
        pen_all, prob_all = np.concatenate(pens), np.concatenate(probs)
        counts = np.bincount(owners, minlength=len(waves)).astype(np.float64)[:, None]
        emb = np.zeros((len(waves), pen_all.shape[1]))
        pr = np.zeros((len(waves), prob_all.shape[1]))
        np.add.at(emb, owners, pen_all)
        np.add.at(pr, owners, prob_all)
        return (emb / counts).astype(np.float32), (pr / counts).astype(np.float32)

    def encode_tracks(self, tracks: list[Track], cache_dir: Path | None = None, batch_size: int = 8,
                      show_progress: bool = True
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, float]]:
        """Encode catalog tracks -> (embeddings, tag probs, mask, stats).

        A track whose audio is missing or bad gets a logged warning, a zero row and mask
        False; ``stats`` counts seconds of audio encoded.
        """
        n = len(tracks)
        emb = np.zeros((n, self.dim), np.float32)
        probs = np.zeros((n, len(self.labels)), np.float32)
        mask = np.zeros(n, bool)
        seconds = 0.0
        failed = 0
        starts = range(0, n, batch_size)
        for s in progress(starts, total=len(starts), desc="audio") if show_progress else starts:
            idx, waves = [], []
            for i in range(s, min(s + batch_size, n)):
                t = tracks[i]
                try:
                    path = resolve_audio(t, cache_dir, self.max_seconds)
                    wave = load_audio(path, max_seconds=self.max_seconds)
                except AudioError as e:
                    log.warning("audio skipped for track %s: %s", t.id, e)
                    failed += 1
                    continue
                idx.append(i)
                waves.append(wave)
                seconds += len(wave) / TARGET_SR
            if waves:
                e, p = self.encode_arrays(waves)
                emb[idx], probs[idx], mask[idx] = e, p, True
        return emb, probs, mask, {"audio_seconds": round(seconds, 2), "failed": failed}

    def top_tags(self, probs: np.ndarray, k: int = 5) -> list[tuple[str, float]]:
        """The ``k`` most probable tags of one track's probability row, as (tag, p)."""
        order = np.argsort(-probs, kind="stable")[:k]
        return [(self.labels[i], round(float(probs[i]), 4)) for i in order]


def _musicnn_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("musicnn")
    except PackageNotFoundError:
        return "unknown"


class AudioModalityEncoder(ModalityEncoder):
    """The ``audio`` modality: musicnn embeddings, with tag probabilities as an extra array."""

    modality = "audio"
    extra_names = ("tagprobs",)

    def __init__(self, model: str = "MSD_musicnn", max_seconds: float = 30.0, cache_dir: Path | None = None,
                 batch: int = 8, device: str = "cpu") -> None:
        self.audio = AudioEncoder(model, max_seconds=max_seconds, device=device)
        self.cache_dir = cache_dir
        self.batch = batch
        self.block_size = batch

    @property
    def dim(self) -> int:
        return self.audio.dim

    def extra_dims(self) -> dict[str, int]:
        return {"tagprobs": len(self.audio.labels)}

    def info(self) -> dict[str, Any]:
        return {"model": self.audio.model, "kind": "musicnn (PyTorch port of the TF1 checkpoint)",
                "dim": self.dim, "embedding": "mean over 3 s patches of the 200-unit penultimate layer",
                "max_seconds": self.audio.max_seconds, "sample_rate": TARGET_SR,
                "labels": self.audio.labels, "versions": {"musicnn": _musicnn_version()}}

    def keys(self, tracks: list[Track]) -> list[str | None]:
        out: list[str | None] = []
        for t in tracks:
            if not t.audio:
                out.append(None)
                continue
            stamp = ""
            if not t.audio.startswith("score:") and "://" not in t.audio:
                p = Path(t.audio).expanduser()
                try:  # a replaced or repaired file gets a new key, so it is encoded again
                    st = p.stat()
                    stamp = f"{st.st_size}:{st.st_mtime_ns}"
                except OSError:
                    stamp = "missing"
            out.append(cache_key(self.audio.model, self.audio.max_seconds, t.audio, stamp))
        return out

    def encode(self, tracks: list[Track]) -> Encoded:
        emb, probs, mask, stats = self.audio.encode_tracks(tracks, self.cache_dir, batch_size=self.batch,
                                                           show_progress=False)
        return Encoded(emb=emb, mask=mask, extras={"tagprobs": probs}, stats=stats)


@register("audio")
def _make(cfg: Any, cache_dir: Path | None) -> AudioModalityEncoder:
    # render_audio keeps its WAVs under <cache_dir>/audio/ itself
    return AudioModalityEncoder(cfg.audio_model, cfg.audio_seconds, cache_dir, cfg.audio_batch, cfg.device)
