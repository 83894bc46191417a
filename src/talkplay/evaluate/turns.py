"""Which turns name music: ``kinds = turn_kinds(conversations, CatalogMentions(catalog))``.

Every scored turn falls in one slice, by what its user message says:

- ``names music``: it names a catalog artist or title;
- ``opening``: the conversation's first turn, naming none ("a playlist of 80s alternative");
- ``follow-up``: a later turn naming none ("these are great, more variety like these",
  "thank you!"): the turns a curator answers from the playlist so far, and where a system
  that matches words against titles goes wrong.

Users type names as they like ("i like bruno mars"), so matching ignores case, on whole
words. Short titles are ordinary phrases ("Thank You", "More"), so a title counts only with
three words or more, or in quotes; artists count with the project's rule for names
(``talkplay.names``: one-word names need four characters and are not bare numbers).
"""

from __future__ import annotations

from talkplay.catalog import Catalog, Conversation
from talkplay.names import QUOTED, _key, _title_forms, _usable

NAMES_MUSIC, OPENING, FOLLOW_UP = "names music", "opening", "follow-up"
TURN_KINDS = (NAMES_MUSIC, OPENING, FOLLOW_UP)
MIN_TITLE_WORDS = 3  # shorter titles count only in quotes


def _lower(text: str) -> tuple[str, ...]:
    return tuple(w.lower() for w in _key(text))


class CatalogMentions:
    """``CatalogMentions(catalog).names_music("i like bruno mars")`` -> True (see the module doc)."""

    def __init__(self, catalog: Catalog) -> None:
        self.keys: set[tuple[str, ...]] = set()
        self.quoted: set[tuple[str, ...]] = set()  # every title form, for quoted mentions
        for tr in catalog.tracks:
            for artist in tr.artists:
                if _usable(key := _lower(artist)):
                    self.keys.add(key)
            for form in _title_forms(tr.title):
                key = _lower(form)
                if _usable(key):
                    self.quoted.add(key)
                    if len(key) >= MIN_TITLE_WORDS:
                        self.keys.add(key)
        self.max_words = max((len(k) for k in self.keys), default=1)

    def names_music(self, text: str) -> bool:
        """Whether ``text`` names a catalog artist or title."""
        if any(_lower(q.group(1)) in self.quoted for q in QUOTED.finditer(text)):
            return True
        ws = _lower(text)
        return any(ws[i: i + n] in self.keys for i in range(len(ws))
                   for n in range(1, min(self.max_words, len(ws) - i) + 1))


def turn_kind(conversation: Conversation, turn: int, mentions: CatalogMentions) -> str:
    """``names music``, ``opening`` or ``follow-up`` for ``conversation.turns[turn]``."""
    if mentions.names_music(conversation.turns[turn].user):
        return NAMES_MUSIC
    return OPENING if turn == 0 else FOLLOW_UP


def turn_kinds(conversations: list[Conversation], mentions: CatalogMentions
               ) -> dict[tuple[str, int], str]:
    """``(conversation id, turn) -> kind`` for every turn of ``conversations``."""
    return {(c.id, i): turn_kind(c, i, mentions) for c in conversations for i in range(len(c.turns))}
