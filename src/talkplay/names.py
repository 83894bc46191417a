"""Which catalog titles and artists a text names, and which of them it may name.

``names = CatalogNames(catalog)``; ``names.find(text)`` lists every ``Mention`` (a catalog
title or artist, its character span, the tracks it can stand for);
``names.unfaithful(reply, allowed_ids, context)`` lists the mentions a reply may not make:
a title of no track in ``allowed_ids``, an artist of none of them. The same rule scores
replies in ``talkplay eval`` and guards the engine's replies while they are written.

How a name is recognised (so that ordinary words are not read as titles):

- case-sensitive, whole words (letters and digits; punctuation between words is ignored),
  leftmost-longest, so "Love Me Do" is one mention, not "Love" plus "Me Do";
- a title is also known by its head before `` - `` or `` (`` ("Song - Remastered 2009");
- one-word names need at least four characters, are never bare numbers, and do not count
  at the start of a sentence unless quoted ("Stay calm." is not the song "Stay");
- what the conversation's own user turns say, and any name found in an allowed track's
  title, artists or album, is allowed: echoing the request or describing a card is honest.

A reply also may not put in double quotes anything but (part of) an allowed track's title,
artists or album, or the user's words: a quoted title the catalog does not have is still a
title the answer did not bring (``kind="quoted"``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from talkplay.catalog import Catalog

WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")
QUOTED = re.compile(r'["“]([^"“”\n]{1,200})["”]')
MAX_WORDS = 12  # longer names are matched on their first MAX_WORDS words
QUOTES = "\"'“‘«"


@dataclass(frozen=True)
class Mention:
    """A catalog name found in a text: ``kind`` is ``title`` or ``artist``."""

    start: int
    end: int
    kind: str
    name: str
    track_ids: frozenset[str]


@dataclass(frozen=True)
class Allowance:
    """What a reply may name: track ``ids``, and lower-cased ``text`` it may quote or echo."""

    ids: frozenset[str]
    text: str


def words(text: str) -> list[tuple[str, int, int]]:
    """``[(word, start, end), ...]`` for every word of ``text``."""
    return [(m.group(), m.start(), m.end()) for m in WORD.finditer(text)]


def _key(text: str) -> tuple[str, ...]:
    return tuple(w for w, _, _ in words(text))[:MAX_WORDS]


def _title_forms(title: str) -> set[str]:
    forms = {title}
    for sep in (" - ", " (", " ["):
        head = title.split(sep)[0].strip()
        if head:
            forms.add(head)
    return forms


def _usable(key: tuple[str, ...]) -> bool:
    if not key:
        return False
    if len(key) == 1:
        return len(key[0]) >= 4 and not key[0].isdigit()
    return True


class CatalogNames:
    """Every title and artist of a catalog, for finding them in text (see the module doc)."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.keys: dict[tuple[str, ...], tuple[str, str, set[str]]] = {}
        self.prefixes: set[tuple[str, ...]] = set()  # every name's leading words, for streaming
        self.max_words = 1
        for tr in catalog.tracks:
            for form in _title_forms(tr.title):
                self._add(_key(form), "title", form, tr.id)
            for artist in tr.artists:
                self._add(_key(artist), "artist", artist, tr.id)

    def _add(self, key: tuple[str, ...], kind: str, name: str, tid: str) -> None:
        if not _usable(key):
            return
        entry = self.keys.setdefault(key, (kind, name, set()))
        if entry[0] == "artist" and kind == "title":  # a name that is both counts as a title
            entry = self.keys[key] = ("title", name, entry[2])
        entry[2].add(tid)
        self.max_words = max(self.max_words, len(key))
        self.prefixes.update(key[:n] for n in range(1, len(key)))

    def pending(self, text: str) -> int:
        """Where the part of ``text`` that may still grow into a name begins (``len(text)``
        when none can): the last word, which may be incomplete, and any run of words
        before it that begins some name."""
        ws = words(text)
        if not ws:
            return len(text)
        cut = ws[-1][1]
        opened = _open_quote(text)  # a quotation still being written may become a claim
        if opened is not None:
            cut = min(cut, opened)
        closed = [q for q in QUOTED.finditer(text) if q.end() >= len(text.rstrip())]
        if closed:  # one that just closed is judged with the next character
            cut = min(cut, closed[-1].start())
        for i in range(max(0, len(ws) - self.max_words), len(ws) - 1):
            run = tuple(w for w, _, _ in ws[i: len(ws) - 1])
            if run in self.prefixes or run in self.keys:
                cut = min(cut, ws[i][1])
                break
        return cut

    def find(self, text: str) -> list[Mention]:
        """Every catalog name in ``text``, leftmost-longest, in order."""
        ws = words(text)
        out: list[Mention] = []
        i = 0
        while i < len(ws):
            hit = None
            for n in range(min(self.max_words, len(ws) - i), 0, -1):
                entry = self.keys.get(tuple(w for w, _, _ in ws[i: i + n]))
                if entry is not None:
                    hit = (n, entry)
                    break
            if hit is None or (hit[0] == 1 and _sentence_start(text, ws[i][1])):
                i += 1
                continue
            n, (kind, name, ids) = hit
            out.append(Mention(ws[i][1], ws[i + n - 1][2], kind, name, frozenset(ids)))
            i += n
        return out

    def allowance(self, allowed_ids: Iterable[str], context: str = "") -> Allowance:
        """What a reply may name: ``allowed_ids`` and the text it may quote (their titles,
        artists and albums, and ``context``: the user's own words in the conversation)."""
        ids = frozenset(allowed_ids)
        fields = [context]
        for tid in ids:
            if tid in self.catalog.index:
                tr = self.catalog.get(tid)
                fields += [tr.title, *tr.artists, tr.album or ""]
        return Allowance(ids, " \n ".join(fields).lower())

    def unfaithful(self, reply: str, allowed: Iterable[str] | Allowance, context: str = "",
                   final: bool = True) -> list[Mention]:
        """The mentions in ``reply`` that name neither an allowed track nor its artist.

        ``allowed``: track ids (with ``context``, the text the reply may echo) or an
        ``Allowance`` built once for many checks. Quoted text that is no part of an allowed
        track's fields nor of the context counts too; in a ``final`` reply, so does a
        quotation left open.
        """
        if not isinstance(allowed, Allowance):
            allowed = self.allowance(allowed, context)
        bad = []
        for m in self.find(reply):
            if m.track_ids & allowed.ids:  # a title of an allowed track, or an artist of one
                continue
            if occurs(reply[m.start: m.end].lower(), allowed.text):
                continue
            bad.append(m)
        quotes = [(q.start(), q.end(), q.group(1)) for q in QUOTED.finditer(reply)]
        opened = _open_quote(reply) if final else None
        if opened is not None:
            quotes.append((opened, len(reply), reply[opened + 1:]))
        for start, end, said in quotes:
            said = said.strip(" .,;:!?")
            if words(said) and not occurs(said.lower(), allowed.text):
                bad.append(Mention(start, end, "quoted", said, frozenset()))
        return sorted(bad, key=lambda m: m.start)


def occurs(said: str, text: str) -> bool:
    """``said`` occurs in ``text`` as whole words (``occurs("jazz", "cool jazz, please")``)."""
    return re.search(r"(?<!\w)" + re.escape(said) + r"(?!\w)", text) is not None


def _open_quote(text: str) -> int | None:
    """Where an unclosed double quote opens in ``text``, if one does."""
    if text.count('"') % 2:
        return text.rfind('"')
    if text.rfind("“") > text.rfind("”"):
        return text.rfind("“")
    return None


def _sentence_start(text: str, start: int) -> bool:
    """True where a word at ``start`` opens a sentence and is not quoted."""
    before = text[:start].rstrip(" \t")
    if before and before[-1] in QUOTES:
        return False
    return not before or before[-1] in ".!?:;\n"
