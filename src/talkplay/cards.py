"""A track's card as plain text: what the model reads right after it writes a track.

``card_text(track)`` gives ``"Blue in Green" by Miles Davis | album: Kind of Blue | year: 1959
| tags: jazz, modal`` (fields the catalog lacks are left out). ``Cards(catalog)`` is the
lookup the renderer and the engines share: ``cards(track_id) -> " <card>\\n"``, the exact
text that follows a music block, in training and at inference alike. Replies are written
after the cards, so the model copies titles and facts from its context instead of
recalling them from its weights.
"""

from __future__ import annotations

from talkplay.catalog import Catalog, Track

MAX_TAGS = 3


def _plain(text: str) -> str:
    # one line, and never anything a tokenizer could read as special-token markup
    return " ".join(str(text).split()).replace("<|", "< |")


def card_text(track: Track, max_tags: int = MAX_TAGS) -> str:
    """``card_text(track) -> '"Title" by A & B | album: … | year: … | tags: a, b, c'``."""
    head = f'"{_plain(track.title)}"'
    if track.artists:
        head += f" by {_plain(' & '.join(track.artists[:2]))}"
    parts = [head]
    if track.album:
        parts.append(f"album: {_plain(track.album)}")
    if track.year:
        parts.append(f"year: {track.year}")
    tags = [_plain(t) for t in track.tags if t.strip()][:max_tags]
    if tags:
        parts.append("tags: " + ", ".join(tags))
    return " | ".join(parts)


class Cards:
    """``cards = Cards(catalog); cards("t1")`` -> the text written after ``t1``'s music block."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self._cache: dict[str, str] = {}

    def __call__(self, track_id: str) -> str:
        text = self._cache.get(track_id)
        if text is None:
            text = self._cache[track_id] = f" {card_text(self.catalog.get(track_id))}\n"
        return text
