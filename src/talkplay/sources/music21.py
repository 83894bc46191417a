"""The music21 corpus importer: ~15,000 real works as the embedded default catalog.

``get_importer("music21").load("-", Issues())`` reads the corpus that ships inside the
``music21`` package. It never parses a score: the work list and numbers come from the
corpus metadata bundle (one pickled file, <1 s), and tune types (``R:``), keys (``K:``),
composers and lyrics (``W:``/``w:``) from the ABC text headers; MusicXML lyrics and
modes are read from the XML text, Humdrum headers from ``!!!`` lines. A full parse of
every score would take tens of minutes on two cores.

Each work's ``audio`` is ``"score:<corpus path>[#<number>]"``, rendered on demand by
``talkplay.audio_render.render_audio``. Playlists come from real groupings: books and
collections, tune types within a collection, Essen regions, opus numbers and masses,
labelled ``music21:derived:<kind>``.
"""

from __future__ import annotations

import re
import zipfile
from collections import defaultdict
from pathlib import Path
from typing import Any

from talkplay.catalog import Catalog, Playlist, Track
from talkplay.errors import InputError
from talkplay.log import get_logger, progress
from talkplay.sources.base import Importer, Issues, register
from talkplay.sources.music21_abc import (
    abc_key,
    abc_lyrics,
    abc_works,
    essen_tags,
    repair_legacy,
    title_type,
    tune_type,
)
from talkplay.sources.music21_data import COLLECTIONS, ESSEN_BOOKS

log = get_logger(__name__)
SECTIONED_BOOKS = {"oneills1850"}  # tune books printed section by section (airs, jigs, reels ...)
MIN_PLAYLIST = {"region": 5}  # other kinds: 2 works or more
_FIFTHS_MAJOR = ["C", "G", "D", "A", "E", "B", "F#", "C#", "Cb", "Gb", "Db", "Ab", "Eb", "Bb", "F"]
_FIFTHS_MINOR = ["A", "E", "B", "F#", "C#", "G#", "D#", "A#", "Ab", "Eb", "Bb", "F", "C", "G", "D"]
_KERN_MODES = {"mix": "mixolydian", "dor": "dorian", "phr": "phrygian", "lyd": "lydian", "ion": "ionian",
               "aeo": "aeolian", "loc": "locrian"}


def corpus_root() -> Path:
    """The folder of the corpus shipped in the installed music21 package."""
    import music21

    return Path(music21.__file__).parent / "corpus"


def score_ref(rel: str, number: str | None) -> str:
    """``"score:bach/bwv66.6.mxl"`` or ``"score:oneills1850/0001-0050.abc#12"``."""
    return f"score:{rel}" + (f"#{number}" if number else "")


def _tidy_title(t: str) -> str:
    # ABC text is repaired as it is read; this catches a title from the metadata bundle
    t = re.sub(r"\s+", " ", repair_legacy(t)).strip().rstrip(".")
    if t.isupper() and len(t) > 3:
        t = t.title()
    m = re.match(r"^(.*), (The|A|An)$", t)
    return f"{m.group(2)} {m.group(1)}" if m else t


def _key_from_fifths(fifths: int, mode: str | None) -> str | None:
    if mode == "minor":
        return f"{_FIFTHS_MINOR[fifths]} minor"
    if mode in (None, "major"):
        return f"{_FIFTHS_MAJOR[fifths]} major" if mode == "major" else None
    return f"{_FIFTHS_MAJOR[fifths]} {mode}" if mode else None


def xml_info(path: Path) -> dict[str, Any]:
    """Lyrics (first verse of the first part that has them), mode and key from MusicXML text."""
    if path.suffix == ".mxl":
        with zipfile.ZipFile(path) as z:
            name = next((n for n in z.namelist() if n.endswith((".xml", ".musicxml"))
                         and not n.startswith("META-INF")), None)
            if name is None:
                return {}
            text = z.read(name).decode("utf-8", errors="replace")
    else:
        text = path.read_text(encoding="utf-8", errors="replace")
    out: dict[str, Any] = {}
    m = re.search(r"<fifths>(-?\d+)</fifths>(?:\s*<mode>(\w+)</mode>)?", text)
    if m:
        key = _key_from_fifths(int(m.group(1)), m.group(2))
        if key:
            out["key"] = key
    for part in re.findall(r"<part\b.*?</part>", text, flags=re.S):
        lyrics = _part_lyrics(part)
        if len(lyrics) >= 10:
            out["lyrics"] = lyrics
            break
    return out


def _part_lyrics(part: str) -> str:
    """The first verse of one MusicXML part's lyrics, syllables joined into words."""
    found = re.findall(r"<lyric\b([^>]*)>(.*?)</lyric>", part, flags=re.S)
    if not found:
        return ""
    numbers = [re.search(r'number="(\d+)"', attrs) for attrs, _ in found]
    verse = min((int(m.group(1)) for m in numbers if m), default=None)
    words: list[str] = []
    for (_attrs, body), num in zip(found, numbers, strict=True):
        if verse is not None and num and int(num.group(1)) != verse:
            continue
        syl = re.search(r"<syllabic>(\w+)</syllabic>", body)
        txt = re.search(r"<text[^>]*>(.*?)</text>", body, flags=re.S)
        if not txt:
            continue
        s = _unescape(txt.group(1)).replace("\xad", "")
        kind = syl.group(1) if syl else "single"
        if words and kind in ("middle", "end") and not words[-1].endswith(" "):
            words[-1] += s
        else:
            words.append(s)
        if kind in ("single", "end"):
            words[-1] += " "
    return re.sub(r"\s+", " ", "".join(words)).strip()


def _unescape(s: str) -> str:
    import html

    return html.unescape(s)


def krn_info(path: Path) -> dict[str, Any]:
    """Composer, work (``OPR``), title (``OTL``) and key/mode from a Humdrum file's header lines."""
    out: dict[str, Any] = {}
    with open(path, encoding="utf-8", errors="replace") as f:
        for i, line in enumerate(f):
            if line.startswith("!!!"):
                k, _, v = line[3:].partition(":")
                out.setdefault(k.strip(), v.strip())
            elif "key" not in out:
                m = re.match(r"\*([A-Ga-g][#-]?):(\w{3})?\b", line)
                if m:
                    tonic, mode = m.group(1), m.group(2)
                    name = tonic[0].upper() + tonic[1:].replace("-", "b")
                    default = "minor" if tonic.islower() else "major"
                    out["key"] = f"{name} {_KERN_MODES.get(mode or '', default)}"
            if i > 60 and "key" in out:
                break
    return out


def _bpm(tempo: Any) -> float:
    m = re.search(r"(?:Quarter|=)\s*=?\s*(\d+(?:\.\d+)?)", str(tempo or ""))
    return float(m.group(1)) if m else 100.0


class _Builder:
    """Accumulates tracks and the groupings that become playlists."""

    def __init__(self) -> None:
        self.cat = Catalog()
        self.groups: dict[tuple[str, str], list[str]] = defaultdict(list)  # (kind, name) -> ids

    def add(self, track: Track, groups: list[tuple[str, str]]) -> None:
        if self.cat.add_track(track):
            for g in groups:
                self.groups[g].append(track.id)

    def playlists(self) -> list[Playlist]:
        out, used = [], set()
        for (kind, name), ids in sorted(self.groups.items()):
            if len(ids) >= MIN_PLAYLIST.get(kind, 2):
                slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
                pid, n = f"music21:{kind}:{slug}", 1
                while pid in used:  # two names may share a slug
                    n += 1
                    pid = f"music21:{kind}:{slug}-{n}"
                used.add(pid)
                out.append(Playlist(id=pid, name=name, track_ids=ids,
                                    source=f"music21:derived:{kind}"))
        return out


@register
class Music21Importer(Importer):
    name = "music21"
    description = "the corpus shipped in the music21 package (PATH '-'), or a corpus folder"
    options = ("limit", "collections")

    def load(self, path: str, issues: Issues, limit: int | None = None,
             collections: list[str] | str | None = None, **_: Any) -> Catalog:
        """Build the catalog; ``limit`` keeps N works spread over every collection (see
        ``spread_sample``), ``collections`` restricts to corpus folders (``["bach", ...]``)."""
        root = corpus_root() if path in ("-", "", "music21") else Path(path).expanduser()
        if not root.is_dir():
            raise InputError("not a music21 corpus folder", file=str(root))
        if isinstance(collections, str):
            collections = [c.strip() for c in collections.split(",") if c.strip()]
        entries = self._entries(root, collections)
        if limit is not None:
            entries = spread_sample(entries, limit)
        b = _Builder()
        # works of a folder other than the shipped corpus keep an absolute score path
        self._ref_root = "" if root == corpus_root() else root.resolve().as_posix() + "/"
        abc_cache: dict[str, dict[str, dict[str, Any]]] = {}
        built: list[tuple[Track, list[tuple[str, str]]]] = []
        for rel, number, md in progress(entries, desc="music21 works"):
            folder = rel.split("/")[0]
            try:
                if rel.endswith(".abc"):
                    if rel not in abc_cache:
                        abc_cache[rel] = abc_works((root / rel).read_text(encoding="utf-8", errors="replace"))
                    head = abc_cache[rel].get(number or "1")
                    track, groups = self._abc_track(rel, number, md, head, folder)
                else:
                    track, groups = self._score_track(root, rel, md, folder)
            except (OSError, zipfile.BadZipFile, ValueError) as e:
                issues.report(InputError(f"cannot read score: {e}", file=rel))
                continue
            if track is not None:
                built.append((track, groups))
        infer_sections(built)
        for track, groups in built:
            b.add(track, groups)
        b.cat.playlists = b.playlists()
        return b.cat

    def _entries(self, root: Path, collections: list[str] | None) -> list[tuple[str, str | None, dict]]:
        """(corpus path, number, metadata dict) for every work, from the metadata bundle
        for the shipped corpus, else from the files of a corpus folder."""
        out = []
        if root == corpus_root():
            from music21 import metadata

            bundle = metadata.bundles.MetadataBundle("core")
            bundle.read()
            for _key, e in bundle._metadataEntries.items():  # the bundle has no public item view
                rel = str(e.sourcePath).replace("\\", "/")
                if e.metadata is None:
                    continue
                md = {k: v for k, v in e.metadata.all() if k in (
                    "title", "movementName", "composer", "scoreQuarterLength", "tempoFirst",
                    "timeSignatureFirst", "keySignatureFirst", "alternativeTitle", "number", "opusNumber")}
                out.append((rel, str(e.number) if e.number is not None else None, md))
        else:
            for f in sorted(root.rglob("*")):
                if f.suffix in (".abc", ".mxl", ".xml", ".musicxml", ".krn"):
                    rel = f.relative_to(root).as_posix()
                    if f.suffix == ".abc":
                        for num in abc_works(f.read_text(encoding="utf-8", errors="replace")):
                            out.append((rel, num, {}))
                    else:
                        out.append((rel, None, {}))
        if collections:
            out = [e for e in out if e[0].split("/")[0] in collections]
        # numeric order inside a file so books read as published
        out.sort(key=lambda e: (e[0], int(e[1]) if e[1] and e[1].isdigit() else 0, e[1] or ""))
        seen, uniq = set(), []
        for e in out:
            if (e[0], e[1]) not in seen:
                seen.add((e[0], e[1]))
                uniq.append(e)
        return uniq

    def _abc_track(self, rel: str, number: str | None, md: dict, head: dict | None,
                   folder: str) -> tuple[Track | None, list[tuple[str, str]]]:
        artist, album, year, base_tags = COLLECTIONS.get(folder, (None, None, None, []))
        head = head or {}
        title = _tidy_title(head.get("T", [None])[0] or md.get("title") or "")
        if not title:
            return None, []
        composer = (head.get("C") or [None])[0]
        artists = [composer] if composer and folder not in ("essenFolksong",) else [artist or "Traditional"]
        tags = list(base_tags)
        groups: list[tuple[str, str]] = []
        book = Path(rel).stem
        coll = artist or folder
        ttype = tune_type(head.get("R", [])) or title_type(title)
        extra: dict[str, Any] = {"collection": coll}
        if folder == "essenFolksong":
            base = re.sub(r"\d+$", "", book)
            book_name = ESSEN_BOOKS.get(base, base)
            genres, places = essen_tags(head.get("R", []), head.get("O", []))
            tags += genres + places
            album = book_name
            extra.update({"region": ", ".join(head.get("O", [])), "genre": ", ".join(head.get("R", []))})
            groups.append(("collection", f"Essen: {book_name}"))
            for g in genres[:2]:
                groups.append(("tune_type", f"Essen folk songs: {g}"))
            for place in places:
                if place not in ("europe", "asia", "east asia"):
                    groups.append(("region", f"Folk songs from {place.title()}"))
        else:
            if ttype:
                extra["tune_type"] = ttype
                extra["tune_type_from"] = "R" if tune_type(head.get("R", [])) else "title"
                tags.append(ttype)
                groups.append(("tune_type", f"{ttype.title()}s from {album or coll}"))
            if folder == "airdsAirs":
                groups.append(("collection", f"Aird's Airs, {book.replace('book', 'Volume ')}"))
            elif folder in ("josquin", "miscFolk"):
                groups.append(("collection", f"{coll}: {(head.get('T') or [book])[0]}"
                               if folder == "josquin" else f"{coll}: {book}"))
            else:
                groups.append(("collection", album or coll))
        key = abc_key((head.get("K") or [None])[0])
        meter = (head.get("M") or [md.get("timeSignatureFirst")])[0]
        meter = {"C": "4/4", "C|": "2/2", "none": None}.get(meter or "", meter)
        if key:
            extra["key"] = key
            tags.append(key)
        if meter:
            extra["meter"] = meter
            tags.append(f"{meter} time")
        if head.get("B"):
            extra["book"] = head["B"][0]
        if head.get("S"):
            extra["origin"] = head["S"][0]
        lyrics = abc_lyrics(head)
        ql = md.get("scoreQuarterLength")
        return Track(
            id=f"m21:{rel}" + (f"#{number}" if number else ""),
            title=title[:300], artists=artists, album=album, year=year,
            tags=_dedupe(tags), lyrics=lyrics, audio=score_ref(self._ref_root + rel, number),
            duration=round(float(ql) * 60.0 / _bpm(md.get("tempoFirst")), 1) if ql else None,
            source="music21", extra=extra,
        ), groups

    def _score_track(self, root: Path, rel: str, md: dict, folder: str
                     ) -> tuple[Track | None, list[tuple[str, str]]]:
        artist, album, year, base_tags = COLLECTIONS.get(folder, (None, None, None, []))
        path = root / rel
        info: dict[str, Any] = {}
        if path.suffix in (".mxl", ".xml", ".musicxml"):
            info = xml_info(path)
        elif path.suffix == ".krn":
            info = krn_info(path)
        composer = artist or info.get("COM") or md.get("composer") or "Unknown"
        composer = repair_legacy(composer.split("\n")[0].strip())
        title, groups, tags = _score_title(rel, md, info, folder), [], list(base_tags)
        extra: dict[str, Any] = {"collection": album or composer}
        opus = _opus(rel, info)
        if opus:
            album = album or opus
            extra["opus"] = opus
            groups.append(("opus", f"{composer}: {opus}"))
        groups.append(("composer", f"Works by {composer}"))
        if info.get("key"):
            extra["key"] = info["key"]
            tags.append(info["key"])
        meter = md.get("timeSignatureFirst")
        if meter:
            extra["meter"] = meter
            tags.append(f"{meter} time")
        ql = md.get("scoreQuarterLength")
        return Track(
            id=f"m21:{rel}", title=title[:300], artists=[composer], album=album, year=year,
            tags=_dedupe(tags), lyrics=info.get("lyrics"), audio=score_ref(self._ref_root + rel, None),
            duration=round(float(ql) * 60.0 / _bpm(md.get("tempoFirst")), 1) if ql else None,
            source="music21", extra=extra,
        ), groups


def infer_sections(built: list[tuple[Track, list[tuple[str, str]]]]) -> int:
    """Give untyped tunes the tune type of the book section they sit in.

    Tune books are ordered by section (O'Neill's runs airs, jigs, slip jigs, reels,
    hornpipes ...), but many tunes carry no ``R:`` field. In a run of tunes without one,
    whose neighbours before and after (same folder) have the same ``R:`` type, the tunes
    with no type at all take it (``extra["tune_type_inferred"] = True``). Returns how
    many tunes were typed.
    """
    n, i = 0, 0
    while i < len(built):
        t = built[i][0]
        if _from_r(t) or _folder(t) not in SECTIONED_BOOKS:
            i += 1
            continue
        folder = _folder(t)
        j = i
        while j < len(built) and _folder(built[j][0]) == folder and not _from_r(built[j][0]):
            j += 1
        prev = built[i - 1] if i > 0 and _folder(built[i - 1][0]) == folder else None
        nxt = built[j] if j < len(built) and _folder(built[j][0]) == folder else None
        if prev and nxt and prev[0].extra.get("tune_type") == nxt[0].extra.get("tune_type"):
            ttype = prev[0].extra["tune_type"]
            group = next(g for g in prev[1] if g[0] == "tune_type")
            for tr, groups in built[i:j]:
                if tr.extra.get("tune_type"):
                    continue
                tr.extra.update(tune_type=ttype, tune_type_inferred=True)
                tr.tags.append(ttype)
                groups.append(group)
                n += 1
        i = j
    return n


def _from_r(t: Track) -> bool:
    return t.extra.get("tune_type_from") == "R"


def _folder(t: Track) -> str:
    return t.id[4:].split("/")[0]


def spread_sample(entries: list, limit: int) -> list:
    """A deterministic subset of ``limit`` works: each corpus folder gets a share in
    proportion to its size (at least one work), taken evenly through the folder, so a
    small demo catalog still has every collection and every tune type in it."""
    if limit >= len(entries):
        return entries
    if limit <= 0:
        return []
    by_folder: dict[str, list] = defaultdict(list)
    for e in entries:
        by_folder[e[0].split("/")[0]].append(e)
    total = len(entries)
    quota = {f: min(len(v), max(1, round(limit * len(v) / total))) for f, v in by_folder.items()}
    # trim the largest shares until the total fits
    while sum(quota.values()) > limit:
        f = max(quota, key=lambda k: (quota[k], k))
        quota[f] -= 1
    picked = []
    for f, v in by_folder.items():
        q = quota[f]
        if q:
            step = len(v) / q
            picked += [v[int(i * step)] for i in range(q)]
    keep = set(map(id, picked))
    return [e for e in entries if id(e) in keep]


def _score_title(rel: str, md: dict, info: dict, folder: str) -> str:
    stem = Path(rel).stem
    if folder == "bach":
        return f"Chorale BWV {stem.replace('bwv', '')}"
    if folder == "palestrina" and info.get("OTL"):
        return f"{info['OTL']} ({info.get('OPR', 'Palestrina')})"
    if folder == "monteverdi":
        m = re.match(r"madrigal\.(\d+)\.(\d+)", stem)
        if m:
            return f"Madrigal, Book {m.group(1)}, No. {m.group(2)}"
    for cand in (md.get("title"), info.get("OTL"), md.get("movementName")):
        if cand and not str(cand).endswith((".mxl", ".xml", ".krn")) and cand not in ("Music21 Fragment",):
            return _tidy_title(str(cand))
    name = re.sub(r"([a-z])([A-Z])", r"\1 \2", stem).replace("_", " ")
    parent = Path(rel).parent.name
    return _tidy_title(f"{parent} {name}" if parent != folder else name)


def _opus(rel: str, info: dict) -> str | None:
    parts = rel.split("/")
    if info.get("OPR"):
        return info["OPR"]
    m = re.match(r"madrigal\.(\d+)\.", Path(rel).name)
    if m:
        return f"Madrigals, Book {m.group(1)}"
    if len(parts) >= 3:
        m = re.match(r"opus(\d+)(?:no(\d+))?", parts[1])
        if m:
            return f"Op. {m.group(1)}" + (f" No. {m.group(2)}" if m.group(2) else "")
        if re.match(r"k\d+", parts[1]):
            return f"K. {parts[1][1:]}"
        return parts[1].replace("_", " ").title()
    return None


def _dedupe(items: list[str]) -> list[str]:
    seen, out = set(), []
    for x in items:
        k = x.lower()
        if x and k not in seen:
            seen.add(k)
            out.append(x)
    return out
