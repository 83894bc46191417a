"""Pieces every baseline shares: the catalog view, conversation text, seeds, top-k.

A baseline subclasses ``CatalogRecommender``, whose ``fit(run)`` loads the catalog and the
run's training conversations and then calls ``_fit``; ``recommend`` turns the
subclass's score vector (one float per catalog track) into k distinct ids, ties broken
by popularity in the training data and then by catalog order, so every ranking is
complete and deterministic.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

import numpy as np

from talkplay.catalog import Catalog, Conversation, Playlist
from talkplay.exclusion import Songs
from talkplay.run import Run
from talkplay.splits import listening_conversations, run_split, training_playlists

QUERY_MODES = ("all", "current")


def user_text(conversation: Conversation, mode: str = "all") -> str:
    """The user's words: every user turn so far (``mode="all"``) or only the last one."""
    if mode not in QUERY_MODES:
        raise ValueError(f"query mode must be one of {QUERY_MODES}, got {mode!r}")
    turns = conversation.turns if mode == "all" else conversation.turns[-1:]
    return "\n".join(t.user for t in turns if t.user)


def seed_tracks(conversation: Conversation) -> list[str]:
    """Tracks the session liked so far, in order; if none, the ones already recommended."""
    liked = [tid for t in conversation.turns for tid in t.liked]
    if liked:
        return list(dict.fromkeys(liked))
    return list(dict.fromkeys(tid for t in conversation.turns[:-1] for tid in t.recommended))


def baskets(playlists: Iterable[Playlist], conversations: Iterable[Conversation]) -> list[list[str]]:
    """Sets of tracks that belong together: each playlist, and each training conversation's
    goal, liked and recommended tracks."""
    out = [list(dict.fromkeys(p.track_ids)) for p in playlists]
    for c in conversations:
        ids = list(c.goal) + [tid for t in c.turns for tid in (*t.liked, *t.recommended)]
        out.append(list(dict.fromkeys(ids)))
    return [b for b in out if b]


def popularity_counts(playlists: Iterable[Playlist], conversations: Iterable[Conversation]) -> Counter[str]:
    """How many playlists and training conversations each track appears in."""
    counts: Counter[str] = Counter()
    for b in baskets(playlists, conversations):
        counts.update(b)
    return counts


def top_k(scores: np.ndarray, ids: list[str], index: dict[str, int], k: int,
          exclude: Iterable[str] = (), tiebreak: np.ndarray | None = None,
          songs: Songs | None = None) -> list[tuple[str, float]]:
    """The k best ``(id, score)`` not in ``exclude``; ties by ``tiebreak`` desc, then catalog
    order; with ``songs``, each song once and none ``exclude`` has under another id first
    (``Songs.distinct``)."""
    exclude = set(exclude)
    n = len(ids)
    mask = np.ones(n, dtype=bool)
    for tid in exclude:
        row = index.get(tid)
        if row is not None:
            mask[row] = False
    rows = np.flatnonzero(mask)
    k = min(k, len(rows))
    if k <= 0:
        return []
    s = scores[rows]
    tb = tiebreak[rows] if tiebreak is not None else np.zeros(len(rows))
    # lexsort sorts by the last key first: score desc, then tiebreak desc, then row asc.
    order = np.lexsort((rows, -tb, -s))[: k + (songs.repeats if songs is not None else 0)]
    ranked = [(ids[rows[j]], float(s[j])) for j in order]
    return ranked if songs is None else songs.distinct(ranked, exclude, k)


class CatalogRecommender:
    """Base for baselines: ``rec = Sub(); rec.fit(run); rec.recommend(conv, k, exclude)``."""

    name = "base"

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self.catalog: Catalog | None = None
        self.ids: list[str] = []
        self.index: dict[str, int] = {}
        self.popularity = np.zeros(0)
        self.playlists: list[Playlist] = []
        self.songs: Songs | None = None

    def fit(self, run: Run) -> None:
        catalog = run.load_catalog(validate=False)
        split = run_split(run, catalog, record=False)  # fitting is part of evaluating: read-only
        self.fit_catalog(catalog, listening_conversations(split.train),
                         training_playlists(catalog.playlists, split.test), run)

    def fit_catalog(self, catalog: Catalog, train: list[Conversation],
                    playlists: list[Playlist] | None = None, run: Run | None = None) -> None:
        """Fit on an in-memory catalog, training conversations and playlists (default: the
        catalog's). ``fit(run)`` calls this with held-out conversations' playlists removed."""
        self.catalog = catalog
        self.ids = catalog.ids()
        self.index = dict(catalog.index)
        self.songs = Songs(catalog)
        self.playlists = list(catalog.playlists if playlists is None else playlists)
        counts = popularity_counts(self.playlists, train)
        self.popularity = np.array([counts.get(t, 0) for t in self.ids], dtype=float)
        self._fit(catalog, train, run)

    def _fit(self, catalog: Catalog, train: list[Conversation], run: Run | None) -> None:
        """Subclasses build their index here."""

    def prefetch(self, conversations: list[Conversation]) -> None:
        """Optional batching hook: called with every context before ``recommend`` is."""

    def scores(self, conversation: Conversation) -> np.ndarray:
        """One score per catalog track; higher is better."""
        raise NotImplementedError

    def recommend(self, conversation: Conversation, k: int = 10,
                  exclude: set[str] | frozenset[str] = frozenset()) -> list[tuple[str, float]]:
        if self.catalog is None:
            raise RuntimeError(f"{self.name}: call fit(run) before recommend")
        return top_k(self.scores(conversation), self.ids, self.index, k, exclude, self.popularity, self.songs)
