"""The two floor baselines: ``RandomRecommender(seed=0)`` and ``PopularityRecommender()``."""

from __future__ import annotations

import hashlib

import numpy as np

from talkplay.baselines.base import CatalogRecommender, top_k
from talkplay.catalog import Conversation


class RandomRecommender(CatalogRecommender):
    """Uniformly random ranking, reproducible from ``seed`` and the conversation so far."""

    name = "random"

    def scores(self, conversation: Conversation) -> np.ndarray:
        key = f"{self.seed}:{conversation.id}:{len(conversation.turns)}"
        rng = np.random.default_rng(int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little"))
        return rng.random(len(self.ids))

    def recommend(self, conversation: Conversation, k: int = 10,
                  exclude: set[str] | frozenset[str] = frozenset()) -> list[tuple[str, float]]:
        # The popularity tie-break of the base class must not leak into a random ranking.
        if self.catalog is None:
            raise RuntimeError(f"{self.name}: call fit(run) before recommend")
        return top_k(self.scores(conversation), self.ids, self.index, k, exclude, songs=self.songs)


class PopularityRecommender(CatalogRecommender):
    """Most frequent tracks in the run's playlists and training conversations first."""

    name = "popularity"

    def scores(self, conversation: Conversation) -> np.ndarray:
        return self.popularity
