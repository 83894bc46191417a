"""The one interface TalkPlay and every baseline share.

``rec.fit(run)`` once, then ``rec.recommend(conversation, k=10, exclude={...})`` returns
``[(track_id, score), ...]`` best first: k distinct catalog ids, none in ``exclude``.
The ``conversation`` holds the turns so far; its last turn's ``user`` is the current request.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from talkplay.catalog import Conversation
from talkplay.run import Run


@runtime_checkable
class Recommender(Protocol):
    name: str

    def fit(self, run: Run) -> None: ...

    def recommend(
        self, conversation: Conversation, k: int = 10, exclude: set[str] | frozenset[str] = frozenset()
    ) -> list[tuple[str, float]]: ...
