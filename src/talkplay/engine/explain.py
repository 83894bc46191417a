"""Short "why" lines for recommended tracks, from cluster descriptions and co-occurrence.

``Explainer(music, catalog).why("t42", liked=["t7"])`` -> e.g.
``"tags: chill / r&b / smooth; in 3 playlists with 'Golden' you liked"``. The cluster part
comes from ``music.describe(token)`` of the track's tag token (falling back to the other
modalities in a fixed order); the co-occurrence part counts playlists shared with tracks
the user liked in this conversation, or, with no playlists, a shared co-occurrence token.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from talkplay.catalog import Catalog
from talkplay.modalities import MODALITIES

# tags say the most in few words; metadata/lyrics/audio descriptions are fallbacks
_PREFERENCE = ("tags", "audio", "lyrics", "metadata", "cooccur")
MAX_WHY = 120


_LABEL = {"tags": "tags", "audio": "sound", "lyrics": "lyrics", "metadata": "artists", "cooccur": "listeners"}
_ITEMS = {"tags": ("tags", "artists"), "audio": ("tags", "artists"), "lyrics": ("tags", "artists"),
          "metadata": ("artists", "tags"), "cooccur": ("artists", "tags")}


def _prefix_of(token: str) -> str:
    return token.strip("<>").rsplit("_", 1)[0]


def short_description(modality: str, text: str, n: int = 3) -> str:
    """``"tags cluster: chill / r&b / smooth"`` from a tokenizer cluster description.

    Descriptions look like ``"semantic tags cluster 87 (41 tracks): tags a, b; artists c; e.g. ..."``;
    anything else is returned as is.
    """
    head, sep, body = text.partition("): ")
    if not sep:
        return text
    parts = {}
    for piece in body.split("; "):
        kind, _, items = piece.partition(" ")
        parts[kind] = [x.strip() for x in items.split(", ") if x.strip()]
    for kind in _ITEMS.get(modality, ("tags", "artists")):
        if parts.get(kind):
            return f"{_LABEL.get(modality, modality)} cluster: " + " / ".join(parts[kind][:n])
    return head + ")"


class Explainer:
    """See the module docstring; build once per engine."""

    def __init__(self, music: Any, catalog: Catalog) -> None:
        self.music = music
        self.catalog = catalog
        self._by_prefix = {m.prefix: name for name, m in MODALITIES.items()}
        self._playlists: dict[str, set[int]] | None = None
        self._describe_cache: dict[str, str] = {}

    def _playlist_index(self) -> dict[str, set[int]]:
        if self._playlists is None:
            idx: dict[str, set[int]] = defaultdict(set)
            for i, p in enumerate(self.catalog.playlists):
                for t in p.track_ids:
                    idx[t].add(i)
            self._playlists = dict(idx)
        return self._playlists

    def _describe(self, token: str) -> str:
        if token not in self._describe_cache:
            try:
                text = (self.music.describe(token) or "").strip()
            except (KeyError, ValueError, IndexError):
                text = ""
            self._describe_cache[token] = " ".join(text.split())
        return self._describe_cache[token]

    def cluster_reason(self, track_id: str) -> str:
        """The most telling cluster description of the track's tokens ('' if none)."""
        try:
            tokens = self.music.track_tokens(track_id)
        except KeyError:
            return ""
        by_mod = {self._by_prefix.get(_prefix_of(t)): t for t in tokens}
        for mod in _PREFERENCE:
            tok = by_mod.get(mod)
            if tok is None:
                continue
            text = self._describe(tok)
            if text and not text.startswith("no "):
                return short_description(mod, text)
        return ""

    def cooccur_reason(self, track_id: str, liked: Iterable[str]) -> str:
        """'in N playlists with TITLE you liked', or a shared co-occurrence cluster ('' if none)."""
        liked = [t for t in liked if t != track_id and t in self.catalog]
        if not liked:
            return ""
        idx = self._playlist_index()
        mine = idx.get(track_id, set())
        best, best_n = None, 0
        for t in liked:
            n = len(mine & idx.get(t, set()))
            if n > best_n:
                best, best_n = t, n
        if best is not None:
            title = self.catalog.get(best).title
            return f"in {best_n} playlist{'s' if best_n > 1 else ''} with '{title}' you liked"
        cf = MODALITIES["cooccur"].prefix

        def cf_token(t: str) -> str | None:
            try:
                return next((x for x in self.music.track_tokens(t) if _prefix_of(x) == cf), None)
            except KeyError:
                return None

        mine_cf = cf_token(track_id)
        if mine_cf is not None:
            for t in liked:
                if cf_token(t) == mine_cf:
                    return f"listened alongside '{self.catalog.get(t).title}' you liked"
        return ""

    def why(self, track_id: str, liked: Iterable[str] = ()) -> str:
        """One short line: cluster description, then co-occurrence with liked tracks."""
        parts = [p for p in (self.cluster_reason(track_id), self.cooccur_reason(track_id, liked)) if p]
        text = "; ".join(parts)
        return text if len(text) <= MAX_WHY else text[: MAX_WHY - 1].rstrip() + "…"
