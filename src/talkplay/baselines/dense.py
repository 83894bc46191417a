"""Dense retrieval with the metadata text encoder: ``DenseRecommender(model=None)``.

Tracks are embedded with ``talkplay.encoders.text.TextEncoder`` over
``track_text(track, "metadata")`` (the text the metadata modality uses); the query is
the user's turns so far. Score = cosine similarity. Track vectors are cached under the
run's ``cache/baselines/`` keyed by encoder name and the tracks' texts, so a second
evaluation does not re-encode the catalog; when ``talkplay encode`` already embedded every
track's metadata with the same model, those vectors are used directly.
"""

from __future__ import annotations

import hashlib

import numpy as np

from talkplay.atomic import save_npy_atomic
from talkplay.baselines.base import CatalogRecommender, user_text
from talkplay.catalog import Catalog, Conversation, Track
from talkplay.encoders.text import DEFAULT_TEXT_MODEL, TextEncoder, track_text
from talkplay.log import get_logger
from talkplay.run import Run

log = get_logger(__name__)


def _track_text(track: Track) -> str:
    return track_text(track, "metadata") or track.text()


class DenseRecommender(CatalogRecommender):
    """Cosine between the conversation's text and each track's metadata text."""

    name = "dense"

    def __init__(self, model: str | None = None, seed: int = 0, query: str = "all",
                 batch_size: int = 64) -> None:
        super().__init__(seed)
        self.model = model
        self.query = query
        self.batch_size = batch_size
        self._encoder = None
        self._vectors = np.zeros((0, 0), dtype=np.float32)
        self._queries: dict[str, np.ndarray] = {}

    def _fit(self, catalog: Catalog, train: list[Conversation], run: Run | None) -> None:
        self._encoder = TextEncoder(self.model)
        reused = self._run_embeddings(run) if run is not None else None
        if reused is not None:
            self._vectors = reused
            return
        texts = [_track_text(t) for t in catalog.tracks]
        key = hashlib.sha256("\n".join([self._encoder.name, *self.ids, *texts]).encode()).hexdigest()[:16]
        cache = run.cache_dir / "baselines" / f"dense-{key}.npy" if run is not None else None
        if cache is not None and cache.exists():
            self._vectors = np.load(cache)
            log.debug("dense: loaded %d cached track vectors from %s", len(self._vectors), cache)
            return
        log.info("dense: encoding %d tracks with %s", len(texts), self._encoder.name)
        self._vectors = np.asarray(self._encoder.encode(texts, batch_size=self.batch_size), dtype=np.float32)
        if cache is not None:
            save_npy_atomic(cache, self._vectors)

    def _run_embeddings(self, run: Run) -> np.ndarray | None:
        """The run's own ``embeddings/metadata.npy`` when ``talkplay encode`` made it with this
        model for every catalog track (same text, same encoder: no need to encode again)."""
        info = run.stage("encode").get("modalities", {}).get("metadata", {})
        path, mask_path = run.embeddings_dir / "metadata.npy", run.embeddings_dir / "metadata.mask.npy"
        same_model = info.get("model") == (self.model or DEFAULT_TEXT_MODEL)
        if not (same_model and path.exists() and mask_path.exists()):
            return None
        vectors, mask = np.load(path), np.load(mask_path)
        if len(vectors) != len(self.ids) or not mask.all():
            return None
        log.debug("dense: reusing %s", path)
        return np.asarray(vectors, dtype=np.float32)

    def prefetch(self, conversations: list[Conversation]) -> None:
        """Encode every query text in batches (one at a time is several times slower)."""
        assert self._encoder is not None
        texts = list(dict.fromkeys(user_text(c, self.query) for c in conversations))
        texts = [t for t in texts if t.strip() and t not in self._queries]
        if texts:
            vecs = self._encoder.encode(texts, batch_size=self.batch_size)
            self._queries.update(zip(texts, np.asarray(vecs, dtype=np.float32), strict=True))

    def scores(self, conversation: Conversation) -> np.ndarray:
        assert self._encoder is not None
        text = user_text(conversation, self.query)
        if not text.strip() or len(self._vectors) == 0:
            return np.zeros(len(self.ids))
        q = self._queries.get(text)
        if q is None:
            q = np.asarray(self._encoder.encode([text]), dtype=np.float32)[0]
        return (self._vectors @ q).astype(float)
