"""BM25 over track metadata: ``BM25Recommender(query="current")`` or ``(query="all")``.

Each track is a document of its title, artists, album and tags, indexed with ``bm25s``
(English stop words removed). The query is every user turn so far (``"all"``) or only
the current one (``"current"``, the default: it scores higher on CPCD); tracks the
query does not match fall back to popularity.
"""

from __future__ import annotations

import bm25s
import numpy as np

from talkplay.baselines.base import CatalogRecommender, user_text
from talkplay.catalog import Catalog, Conversation, track_document
from talkplay.run import Run
from talkplay.tracks.words import tokenize


class BM25Recommender(CatalogRecommender):
    """Lexical retrieval; ``query`` picks which user turns form the query."""

    def __init__(self, query: str = "current", seed: int = 0, k1: float = 1.5, b: float = 0.75) -> None:
        super().__init__(seed)
        if query not in ("all", "current"):
            raise ValueError(f"query must be 'all' or 'current', got {query!r}")
        self.query = query
        self.name = "bm25" if query == "current" else "bm25-all"
        self.k1, self.b = k1, b
        self._bm25: bm25s.BM25 | None = None
        self._vocab: set[str] = set()

    def _fit(self, catalog: Catalog, train: list[Conversation], run: Run | None) -> None:
        corpus = tokenize([track_document(t) for t in catalog.tracks])
        self._vocab = {tok for doc in corpus for tok in doc}
        self._bm25 = bm25s.BM25(k1=self.k1, b=self.b)
        self._bm25.index(corpus, show_progress=False)

    def scores(self, conversation: Conversation) -> np.ndarray:
        assert self._bm25 is not None
        text = user_text(conversation, self.query)
        tokens = [t for t in tokenize([text])[0] if t in self._vocab] if text else []
        if not tokens:
            return np.zeros(len(self.ids))
        return np.asarray(self._bm25.get_scores(tokens), dtype=float)
