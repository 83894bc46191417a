"""Which tracks a conversation must not be offered again: one rule for every system.

``session_exclude(conversation, request_ids, ...)`` is every track the conversation has
already recommended, liked or rejected, plus the ids given (a request's own exclusions, a
server session's shown tracks). The engines, the HTTP server, the chat session and the
evaluation protocols all call it, so a track counts as "seen" the same way everywhere.

``Songs(catalog).distinct(ranked, seen, k)`` applies the same rule to songs: a catalog built
from video or store ids holds some songs under several ids (CPCD: 335 ids for 166 songs), and
a list should offer each song once and none the session already has under another id.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from talkplay.catalog import Catalog, Conversation, Track


def session_exclude(conversation: Conversation, *more: Iterable[str]) -> set[str]:
    """Every track the conversation already recommended, liked or rejected, and those in ``more``."""
    out: set[str] = set()
    for t in conversation.turns:
        out.update(t.recommended, t.liked, t.disliked)
    for ids in more:
        out.update(ids)
    return out


def song_key(track: Track) -> tuple[str, tuple[str, ...]] | None:
    """What makes two catalog tracks one song: the same title and artists, case and spacing
    aside. None for a track without a title: nothing says it is another's."""
    def norm(text: str) -> str:
        return " ".join(text.lower().split())

    title = norm(track.title or "")
    return (title, tuple(norm(a) for a in track.artists)) if title else None


class Songs:
    """``songs = Songs(catalog)``: which catalog tracks are the same song (``song_key``).

    ``songs.repeats`` is how many ids repeat a song another id already has: a ranker that
    takes its ``k + songs.repeats`` best tracks holds k distinct songs whenever the catalog does.
    """

    def __init__(self, catalog: Catalog) -> None:
        self.key = {t.id: key for t in catalog.tracks if (key := song_key(t)) is not None}
        self.repeats = len(self.key) - len(set(self.key.values()))

    def distinct(self, ranked: Sequence[tuple[str, float]], seen: Iterable[str], k: int
                 ) -> list[tuple[str, float]]:
        """``songs.distinct(ranked, banned_ids, k)`` -> the first k of ``ranked`` ((id, score),
        best first) with each song once and no song of ``seen`` (ids the session has), those
        repeats kept in order after the rest: a long list still fills, a short one never
        offers a song twice."""
        if not self.repeats:
            return list(ranked[:k])
        had = {self.key[t] for t in seen if t in self.key}
        first, again = [], []
        for tid, score in ranked:
            key = self.key.get(tid)
            (again if key in had else first).append((tid, score))
            if key is not None:
                had.add(key)
            if len(first) >= k:
                break
        return (first + again)[:k]
