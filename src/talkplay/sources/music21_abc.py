"""Reading ABC tune headers as text: fast, no score parsing.

``abc_works(text) -> {"12": {"T": [...], "R": [...], "K": [...], "w": [...], ...}}`` keyed
by the ``X:`` number, plus helpers that turn header values into tags, keys and lyrics, and
``repair_legacy`` for the Essen files whose umlauts came through as control characters.
"""

from __future__ import annotations

import re
from typing import Any

from talkplay.sources.music21_data import (
    CONTINENTS,
    ESSEN_GENRES,
    ESSEN_PLACES,
    TITLE_TYPES,
    TUNE_TYPES,
)

_FIELD = re.compile(r"^([A-Za-z]):\s*(.*?)\s*$")
_KEEP = set("TCRONBSKMLQZHWw")
# Some Essen (EsAC) files were typed on DOS/Atari machines and converted to UTF-8 as if they
# were Latin-1, so "grüner" reads "gr\x81ner" and "saß" reads "saá". A C1 control character
# (U+0080-U+009F) is never real text, so it is the evidence that a file is one of them.
_C1 = re.compile("[\x80-\x9f]")
# cp437's letters at 0x80-0x9A (Ç ü é â ä ... Ö Ü), and the Atari ST's ß at 0x9E ("Stra\x9een")
_LEGACY = {chr(b): bytes([b]).decode("cp437") for b in range(0x80, 0x9B)} | {"\x9e": "ß"}
# cp437's ß (0xE1) reads as Latin-1 "á"; in these German texts it always follows a vowel
# (saá, Straáburg), which a real á in a legacy file never does (checked over the corpus)
_LEGACY_SZ = re.compile("(?<=[aeiouäöüAEIOUÄÖÜ])á")
_MODES = {"": "major", "maj": "major", "ion": "major", "m": "minor", "min": "minor", "aeo": "minor",
          "dor": "dorian", "mix": "mixolydian", "phr": "phrygian", "lyd": "lydian", "loc": "locrian"}


def repair_legacy(text: str, legacy: bool | None = None) -> str:
    """``repair_legacy("Einst saá ich auf gr\\x81ner Heide") == "Einst saß ich auf grüner Heide"``.

    ``legacy``: the text comes from a file known to be legacy-encoded (it has a C1 character
    somewhere); None decides from the text itself. Text without that evidence, and text that
    would keep a control character after repair, is returned unchanged: "Slán", "Seán" and
    the Latin-1 text of other files are never touched.
    """
    if legacy is None:
        legacy = bool(_C1.search(text))
    if not legacy:
        return text
    fixed = _LEGACY_SZ.sub("ß", _C1.sub(lambda m: _LEGACY.get(m.group(), m.group()), text))
    return text if _C1.search(fixed) else fixed


def abc_works(text: str) -> dict[str, dict[str, list[str]]]:
    """Header fields (and lyric lines) of every tune in an ABC file, keyed by ``X:`` number.

    A legacy-encoded file (see ``repair_legacy``) is repaired line by line first: one file
    mixes broken lines with lines someone already fixed ("religiöse").
    """
    works: dict[str, dict[str, list[str]]] = {}
    cur: dict[str, list[str]] | None = None
    if _C1.search(text):
        # split at newlines only: str.splitlines also breaks at U+0085, which here is "à"
        text = "\n".join(repair_legacy(line, legacy=True) for line in text.split("\n"))
    for line in text.splitlines():
        m = _FIELD.match(line)
        if not m:
            continue
        f, v = m.group(1), m.group(2)
        if f == "X":
            num = v.split()[0] if v.split() else str(len(works) + 1)
            cur = {} if num in works else works.setdefault(num, {})
            continue
        if cur is not None and f in _KEEP and v:
            cur.setdefault(f, []).append(v.split("%")[0].strip() if f not in "Ww" else v)
    return works


def abc_key(k: str | None) -> str | None:
    """``"Ador"`` -> ``"A dorian"``, ``"F#m"`` -> ``"F# minor"``, ``"G"`` -> ``"G major"``."""
    if not k:
        return None
    m = re.match(r"^\s*([A-Ga-g])([#b]?)\s*([A-Za-z]*)", k)
    if not m or k.strip().lower().startswith(("none", "hp")):
        return None
    mode = _MODES.get(m.group(3)[:3].lower(), None)
    if mode is None:
        mode = "major"
    return f"{m.group(1).upper()}{m.group(2)} {mode}"


def tune_type(rs: list[str]) -> str | None:
    """The normalised tune type of an ABC ``R:`` value (``"slipjig"`` -> ``"slip jig"``)."""
    for r in rs:
        r = re.sub(r"\s+", " ", r.strip().lower()).strip(" .")
        if r and not r.startswith("?"):
            return TUNE_TYPES.get(r, r)
    return None


def title_type(title: str) -> str | None:
    """The tune type named at the end of a title (``"Duke of Gordon's Strathspey"``)."""
    low = title.lower().rstrip(". ")
    for t in sorted(TITLE_TYPES, key=len, reverse=True):
        if low.endswith(" " + t) or low.endswith("-- " + t) or low == t:
            return TUNE_TYPES.get(t, "quick step" if t == "quickstep" else t)
    return None


def essen_tags(rs: list[str], os_: list[str]) -> tuple[list[str], list[str]]:
    """English genre tags from Essen ``R:`` and place tags (country, region) from ``O:``."""
    genres: list[str] = []
    for r in rs:
        r = r.replace("]", "").strip()
        whole = ESSEN_GENRES.get(r.lower())
        parts = [whole] if whole else [ESSEN_GENRES.get(p.strip().lower()) or p.strip().lower()
                                       for p in re.split(r"[,;]", r)]
        genres += [p for p in parts if p and "?" not in p and len(p) > 1]
    places: list[str] = []
    for o in os_:
        for p in re.split(r"[,;/]", o):
            p = re.sub(r"\(.*?\)|\?", "", p).strip().lower()
            if not p:
                continue
            if p in CONTINENTS:
                if CONTINENTS[p]:
                    places.append(CONTINENTS[p])
                continue
            places.append(ESSEN_PLACES.get(p, p))
    return list(dict.fromkeys(genres)), list(dict.fromkeys(places))


def abc_lyrics(head: dict[str, Any]) -> str | None:
    """Lyrics from aligned ``w:`` lines (syllables joined) and free ``W:`` lines."""
    lines = []
    for w in head.get("w", []):
        w = re.sub(r"-\s*", "", w)  # syllable joins
        w = re.sub(r"[_*|]", " ", w).replace("~", " ").replace("\\-", "-")
        lines.append(re.sub(r"\s+", " ", w).strip())
    lines += [w.strip() for w in head.get("W", []) if w.strip()]
    text = "\n".join(x for x in lines if x)
    return text if len(text) >= 10 else None
