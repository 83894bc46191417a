"""Baselines behind the shared ``Recommender`` interface, and a registry by name.

``rec = make_baseline("bm25"); rec.fit(run); rec.recommend(conversation, k=100, exclude=seen)``.
Names: random, popularity, bm25 (query = the current user turn, the better mode on CPCD),
bm25-all (query = every user turn so far),
dense, cooccur, hybrid, and untrained (the track network as training starts, without the
LM: ``talkplay.baselines.untrained``). ``BASELINES`` lists them in report order.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from talkplay.baselines.base import CatalogRecommender, seed_tracks, top_k, user_text
from talkplay.baselines.cooccur import CooccurRecommender, HybridRecommender
from talkplay.baselines.dense import DenseRecommender
from talkplay.baselines.lexical import BM25Recommender, track_document
from talkplay.baselines.simple import PopularityRecommender, RandomRecommender
from talkplay.baselines.untrained import UntrainedRecommender
from talkplay.errors import InputError

REGISTRY: dict[str, Callable[..., CatalogRecommender]] = {
    "random": RandomRecommender,
    "popularity": PopularityRecommender,
    "bm25": lambda **kw: BM25Recommender(query="current", **kw),
    "bm25-all": lambda **kw: BM25Recommender(query="all", **kw),
    "dense": DenseRecommender,
    "cooccur": CooccurRecommender,
    "hybrid": HybridRecommender,
    "untrained": UntrainedRecommender,
}
BASELINES: tuple[str, ...] = tuple(REGISTRY)


def make_baseline(name: str, **kwargs: Any) -> CatalogRecommender:
    """A fresh, unfitted baseline by name; ``InputError`` naming the known ones otherwise."""
    if name not in REGISTRY:
        raise InputError(f"unknown system {name!r} (known: {', '.join(BASELINES)}, talkplay)",
                         field="--systems")
    return REGISTRY[name](**kwargs)


__all__ = ["BASELINES", "REGISTRY", "BM25Recommender", "CatalogRecommender", "CooccurRecommender",
           "DenseRecommender", "HybridRecommender", "PopularityRecommender", "RandomRecommender",
           "UntrainedRecommender",
           "make_baseline", "seed_tracks", "top_k", "track_document", "user_text"]
