"""Collaborative baselines: ``CooccurRecommender()`` and ``HybridRecommender()``.

``cooccur`` scores a track by its summed cosine similarity, in the track-by-basket
incidence matrix built from the run's playlists and training conversations, to the
session's seed tracks (liked so far; else recommended so far); with no seeds, or no
similar tracks, the ranking falls back to popularity. ``hybrid`` fuses the BM25 and
cooccur rankings by reciprocal rank (score = sum of 1 / (60 + rank)); with no seeds it
is the BM25 ranking.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from talkplay.baselines.base import CatalogRecommender, baskets, seed_tracks
from talkplay.baselines.lexical import BM25Recommender
from talkplay.catalog import Catalog, Conversation
from talkplay.run import Run

RRF_K = 60


class CooccurRecommender(CatalogRecommender):
    """Item–item cosine similarity from playlists and training conversations."""

    name = "cooccur"

    def __init__(self, seed: int = 0) -> None:
        super().__init__(seed)
        self._x: sp.csc_matrix | None = None
        self._inv_norm = np.zeros(0)

    def _fit(self, catalog: Catalog, train: list[Conversation], run: Run | None) -> None:
        rows, cols = [], []
        for b_i, basket in enumerate(baskets(self.playlists, train)):
            for tid in basket:
                col = self.index.get(tid)
                if col is not None:
                    rows.append(b_i)
                    cols.append(col)
        n_baskets = (max(rows) + 1) if rows else 0
        x = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n_baskets, len(self.ids)))
        x.data[:] = 1.0  # a track counted twice in one basket is still one co-occurrence
        self._x = x.tocsc()
        deg = np.asarray(self._x.sum(axis=0)).ravel()
        self._inv_norm = np.divide(1.0, np.sqrt(deg), out=np.zeros_like(deg), where=deg > 0)

    def scores(self, conversation: Conversation) -> np.ndarray:
        assert self._x is not None
        cols = [self.index[t] for t in seed_tracks(conversation) if t in self.index]
        if not cols or self._x.shape[0] == 0:
            return np.zeros(len(self.ids))
        # cos(s, j) = <x_s, x_j> / sqrt(d_s d_j): weight baskets by the seeds, project back.
        basket_w = self._x[:, cols] @ self._inv_norm[cols]
        return np.asarray(self._x.T @ basket_w).ravel() * self._inv_norm


def _ranks(scores: np.ndarray, tiebreak: np.ndarray) -> np.ndarray:
    """1-based rank of every row under score desc, tiebreak desc, row asc."""
    order = np.lexsort((np.arange(len(scores)), -tiebreak, -scores))
    ranks = np.empty(len(scores))
    ranks[order] = np.arange(1, len(scores) + 1)
    return ranks


class HybridRecommender(CatalogRecommender):
    """Reciprocal-rank fusion of ``bm25`` (``query`` as in ``BM25Recommender``) and ``cooccur``."""

    name = "hybrid"

    def __init__(self, seed: int = 0, query: str = "current") -> None:
        super().__init__(seed)
        self.bm25 = BM25Recommender(query=query, seed=seed)
        self.cooccur = CooccurRecommender(seed=seed)

    def _fit(self, catalog: Catalog, train: list[Conversation], run: Run | None) -> None:
        self.bm25.fit_catalog(catalog, train, self.playlists, run)
        self.cooccur.fit_catalog(catalog, train, self.playlists, run)

    def scores(self, conversation: Conversation) -> np.ndarray:
        r1 = _ranks(self.bm25.scores(conversation), self.popularity)
        co = self.cooccur.scores(conversation)
        if not co.any():
            # No seeds (or none with neighbours): cooccur would only echo popularity, which
            # buries the text match; the text ranking alone is the sensible answer.
            return 1.0 / (RRF_K + r1)
        return 1.0 / (RRF_K + r1) + 1.0 / (RRF_K + _ranks(co, self.popularity))
