"""The ``Recommender`` protocol (``talkplay.baselines``) over a trained run's engine.

``rec = TalkPlayRecommender(); rec.fit(run); rec.recommend(conversation, k=10)`` ->
``[(track_id, score)]``, as every baseline answers ``talkplay eval``.
"""

from __future__ import annotations

from talkplay.catalog import Conversation
from talkplay.engine.protocol import Engine, EngineConfig
from talkplay.errors import TalkPlayError
from talkplay.run import Run


class TalkPlayRecommender:
    """The ``Recommender`` protocol over an ``Engine``: ``rec.fit(run); rec.recommend(conv, k)``."""

    name = "talkplay"

    def __init__(self, cfg: EngineConfig | None = None, engine: Engine | None = None) -> None:
        self.cfg = cfg
        self.engine = engine

    def fit(self, run: Run) -> None:
        """Load the run's trained model (training happens in ``talkplay train``)."""
        self.engine = Engine.load(run.path, self.cfg)

    def recommend(self, conversation: Conversation, k: int = 10,
                  exclude: set[str] | frozenset[str] = frozenset()) -> list[tuple[str, float]]:
        if self.engine is None:
            raise TalkPlayError("call fit(run) before recommend")
        return [(r.track_id, r.score) for r in self.engine.recommend(conversation, k, exclude)]
