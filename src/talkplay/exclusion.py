"""Which tracks a conversation must not be offered again: one rule for every system.

``session_exclude(conversation, request_ids, ...)`` is every track the conversation has
already recommended, liked or rejected, plus the ids given (a request's own exclusions, a
server session's shown tracks). The engines, the HTTP server, the chat session and the
evaluation protocols all call it, so a track counts as "seen" the same way everywhere.
"""

from __future__ import annotations

from collections.abc import Iterable

from talkplay.catalog import Conversation


def session_exclude(conversation: Conversation, *more: Iterable[str]) -> set[str]:
    """Every track the conversation already recommended, liked or rejected, and those in ``more``."""
    out: set[str] = set()
    for t in conversation.turns:
        out.update(t.recommended, t.liked, t.disliked)
    for ids in more:
        out.update(ids)
    return out
