"""Chat session state: the conversation so far, what was shown, liked and rejected.

``s = ChatSession()``; ``conv = s.ask("some jazz")``; ``resp = engine.respond(conv)``;
``s.answer(resp)``; ``s.like(1)`` / ``s.reject(2)`` mark the last answer's tracks (1-based,
as the cards are numbered); ``s.reset()`` starts over. ``s.exclude`` is every track the
session has shown, liked or rejected: the engine never recommends one of them again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from talkplay.catalog import Conversation, Turn
from talkplay.errors import TalkPlayError
from talkplay.exclusion import session_exclude


@dataclass
class ChatSession:
    """One listener's conversation; see the module docstring."""

    conversation: Conversation = field(default_factory=lambda: Conversation(id="chat"))
    shown: list[str] = field(default_factory=list)  # the last answer's tracks, card order

    @property
    def exclude(self) -> set[str]:
        return session_exclude(self.conversation)

    @property
    def liked(self) -> list[str]:
        return [x for t in self.conversation.turns for x in t.liked]

    def ask(self, text: str) -> Conversation:
        """Add the user's message as a new turn; returns the conversation to answer."""
        text = text.strip()
        if not text:
            raise TalkPlayError("say something first")
        self.conversation.turns.append(Turn(user=text))
        return self.conversation

    def answer(self, response: Any) -> None:
        """Record the engine's ``Response`` on the pending turn."""
        if not self.conversation.turns:
            raise TalkPlayError("no question to answer")
        turn = self.conversation.turns[-1]
        turn.recommended = [r.track_id for r in response.recommendations]
        turn.assistant = response.reply
        self.shown = list(turn.recommended)

    def _pick(self, n: int) -> tuple[Turn, str]:
        if not self.shown or not self.conversation.turns:
            raise TalkPlayError("no tracks shown yet")
        if not 1 <= n <= len(self.shown):
            raise TalkPlayError(f"pick a track between 1 and {len(self.shown)}")
        return self.conversation.turns[-1], self.shown[n - 1]

    def like(self, n: int) -> str:
        """Mark the n-th shown track as liked; returns its id."""
        return self._mark(n, liked=True)

    def reject(self, n: int) -> str:
        """Mark the n-th shown track as rejected; returns its id."""
        return self._mark(n, liked=False)

    def _mark(self, n: int, liked: bool) -> str:
        # a track is liked or rejected, never both: marking one way clears the other
        turn, tid = self._pick(n)
        add, drop = (turn.liked, turn.disliked) if liked else (turn.disliked, turn.liked)
        if tid in drop:
            drop.remove(tid)
        if tid not in add:
            add.append(tid)
        return tid

    def reset(self) -> None:
        """Forget everything and start a new conversation."""
        self.conversation = Conversation(id=self.conversation.id)
        self.shown = []
