"""The catalog schema: tracks, playlists and conversations, stored as Parquet.

Load with ``Catalog.load(run_dir)``; save with ``catalog.save(run_dir)`` (atomic, one file
per table). Every record is validated on construction through ``validate_*`` so that bad
rows are reported by file, row and field.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from talkplay.atomic import atomic_path
from talkplay.errors import InputError

MAX_LYRICS_CHARS = 20_000  # longer lyrics are truncated with a warning; megabytes are an error
MAX_FIELD_CHARS = 1_000  # titles, artists, albums, tags
MAX_LYRICS_HARD = 1_000_000
MAX_YEAR = 9999  # the catalog stores years as int32; anything beyond is a typo or a timestamp

TRACKS_FILE = "catalog.parquet"
PLAYLISTS_FILE = "playlists.parquet"
CONVERSATIONS_FILE = "conversations.parquet"


@dataclass
class Track:
    """One recordable work: ``Track(id="t1", title="Song", artists=["Band"])``."""

    id: str
    title: str
    artists: list[str] = field(default_factory=list)
    album: str | None = None
    year: int | None = None
    tags: list[str] = field(default_factory=list)
    lyrics: str | None = None
    audio: str | None = None  # a path, a URL, or "score:<corpus path>" rendered on demand
    duration: float | None = None
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def text(self) -> str:
        """A one-line description: ``title by artists (album)``."""
        s = self.title
        if self.artists:
            s += " by " + ", ".join(self.artists)
        if self.album:
            s += f" ({self.album})"
        return s


def track_document(track: Track) -> str:
    """The words a track can be found by: title, artists, album and tags, space-joined."""
    parts = [track.title, *track.artists, track.album or "", *track.tags]
    return " ".join(p for p in parts if p)


@dataclass
class Playlist:
    """An ordered list of track ids: ``Playlist(id="p1", name="Reels", track_ids=[...])``."""

    id: str
    name: str
    track_ids: list[str] = field(default_factory=list)
    source: str = ""


@dataclass
class Turn:
    """One exchange: the user's message, the tracks the assistant recommended, its reply.

    ``liked``/``disliked`` hold the user's feedback on this turn's tracks where known.
    """

    user: str
    assistant: str = ""
    recommended: list[str] = field(default_factory=list)
    liked: list[str] = field(default_factory=list)
    disliked: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Conversation:
    """A conversation as imported: ``Conversation(id="c1", turns=[Turn(...)], goal=[...])``."""

    id: str
    turns: list[Turn] = field(default_factory=list)
    goal: list[str] = field(default_factory=list)
    profile: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Conversation:
        turns = [Turn(**t) for t in d.get("turns", [])]
        return cls(
            id=str(d["id"]),
            turns=turns,
            goal=list(d.get("goal", [])),
            profile=dict(d.get("profile") or {}),
            source=d.get("source", ""),
            extra=dict(d.get("extra") or {}),
        )


# --- validation ---------------------------------------------------------------------


def _show(value: Any) -> str:
    """A short repr for messages: a megabyte of bad input must not become a megabyte of error."""
    try:
        r = repr(value)
    except ValueError:  # an int too long to print
        return f"a {type(value).__name__} too long to show"
    return r if len(r) <= 60 else r[:57] + "..."


def _unicode(value: str, fld: str, where: dict[str, Any]) -> str:
    # JSON's \ud800-style escapes decode to lone surrogates, which no file format can store
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise InputError(f"holds {value[e.start]!r}, a lone surrogate that is not valid Unicode",
                         field=fld, **where) from None
    return value


def _req_str(value: Any, fld: str, where: dict[str, Any], allow_empty: bool = False) -> str:
    if value is None or (isinstance(value, float) and value != value):  # NaN: a null from pandas
        raise InputError("required field is missing", field=fld, **where)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise InputError(f"expected text, got {type(value).__name__}", field=fld, **where)
    value = _unicode(value, fld, where).strip()
    if not value and not allow_empty:
        raise InputError("must not be empty", field=fld, **where)
    if len(value) > MAX_FIELD_CHARS:
        raise InputError(f"is {len(value)} characters long (limit {MAX_FIELD_CHARS})", field=fld, **where)
    return value


def _opt_str(value: Any, fld: str, where: dict[str, Any]) -> str | None:
    if value is None or (isinstance(value, float) and value != value):  # NaN from pandas
        return None
    s = _req_str(value, fld, where, allow_empty=True)
    return s or None


def _str_list(value: Any, fld: str, where: dict[str, Any]) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value.strip()] if value.strip() else []
    if not isinstance(value, (list, tuple)) and not hasattr(value, "tolist"):
        raise InputError(f"expected a list of text, got {type(value).__name__}", field=fld, **where)
    items = value.tolist() if hasattr(value, "tolist") else value
    out = []
    for x in items:
        if x is None:
            continue
        out.append(_req_str(x, fld, where, allow_empty=True))
    return [x for x in out if x]


def validate_track(d: dict[str, Any], *, file: str | None = None, line: int | None = None,
                   row: int | None = None, check_audio: bool = True) -> Track:
    """Build a ``Track`` from a raw dict, raising ``InputError`` that names the bad field.

    ``check_audio`` verifies local audio paths exist (URLs and ``score:`` refs are kept).
    """
    where: dict[str, Any] = {"file": file, "line": line, "row": row}
    tid = _req_str(d.get("id"), "id", where)
    where["track"] = tid  # every later error names the track
    title = _req_str(d.get("title"), "title", where)
    year = d.get("year")
    if year is not None and not (isinstance(year, float) and year != year):
        try:
            if isinstance(year, bool):
                raise TypeError
            year = int(str(year)[:4]) if isinstance(year, str) else int(year)
        except (TypeError, ValueError, OverflowError):
            raise InputError(f"expected a year, got {_show(year)}", field="year", **where) from None
        if not -MAX_YEAR <= year <= MAX_YEAR:
            raise InputError(f"year {year} is out of range", field="year", **where)
    else:
        year = None
    lyrics = d.get("lyrics")
    if lyrics is not None and not isinstance(lyrics, str):
        raise InputError(f"expected text, got {type(lyrics).__name__}", field="lyrics", **where)
    if lyrics is not None and len(lyrics) > MAX_LYRICS_HARD:
        raise InputError(f"is {len(lyrics):,} characters long (limit {MAX_LYRICS_HARD:,})",
                         field="lyrics", **where)
    if lyrics is not None:
        lyrics = _unicode(lyrics, "lyrics", where).strip()[:MAX_LYRICS_CHARS] or None
    audio = _opt_str(d.get("audio"), "audio", where)
    if audio and check_audio and "://" not in audio and not audio.startswith("score:"):
        try:
            found = Path(audio).expanduser().exists()
        except (OSError, ValueError, RuntimeError):  # NUL byte, name too long, unknown ~user
            found = False
        if not found:
            raise InputError(f"audio file does not exist: {audio}", field="audio", **where)
    duration = d.get("duration")
    if duration is not None and not (isinstance(duration, float) and duration != duration):
        try:
            if isinstance(duration, bool):
                raise TypeError
            duration = float(duration)
        except (TypeError, ValueError, OverflowError):
            raise InputError(f"expected seconds, got {_show(duration)}", field="duration", **where) from None
        if not math.isfinite(duration):
            raise InputError(f"expected seconds, got {duration}", field="duration", **where)
        if duration < 0:
            raise InputError("must not be negative", field="duration", **where)
    else:
        duration = None
    extra = d.get("extra") or {}
    if isinstance(extra, str):
        try:
            extra = json.loads(extra)
        except (ValueError, RecursionError) as e:
            raise InputError(f"broken JSON: {e}", field="extra", **where) from None
    if not isinstance(extra, dict):
        raise InputError("expected an object", field="extra", **where)
    source = d.get("source") or ""
    source = _unicode(source if isinstance(source, str) else str(source), "source", where)
    return Track(
        id=tid,
        title=title,
        artists=_str_list(d.get("artists"), "artists", where),
        album=_opt_str(d.get("album"), "album", where),
        year=year,
        tags=_str_list(d.get("tags"), "tags", where),
        lyrics=lyrics,
        audio=audio,
        duration=duration,
        source=source,
        extra=extra,
    )


# --- storage ------------------------------------------------------------------------

_TRACK_SCHEMA = pa.schema([
    ("id", pa.string()), ("title", pa.string()), ("artists", pa.list_(pa.string())),
    ("album", pa.string()), ("year", pa.int32()), ("tags", pa.list_(pa.string())),
    ("lyrics", pa.string()), ("audio", pa.string()), ("duration", pa.float64()),
    ("source", pa.string()), ("extra", pa.string()),
])
_PLAYLIST_SCHEMA = pa.schema([
    ("id", pa.string()), ("name", pa.string()), ("track_ids", pa.list_(pa.string())),
    ("source", pa.string()),
])
_CONVERSATION_SCHEMA = pa.schema([("id", pa.string()), ("source", pa.string()), ("json", pa.string())])


def _json_dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, default=str)


def _table(rows: list[dict[str, Any]], schema: pa.Schema, what: str) -> pa.Table:
    try:
        return pa.Table.from_pylist(rows, schema=schema)
    except (pa.ArrowException, ValueError, TypeError, OverflowError):
        # find the record for the message; the importers' checks should make this unreachable
        for r in rows:
            try:
                pa.Table.from_pylist([r], schema=schema)
            except (pa.ArrowException, ValueError, TypeError, OverflowError) as e:
                raise InputError(f"cannot store {what} {r.get('id')!r}: {e}", field=what) from None
        raise


def _json_field(obj: Any, what: str, rid: str) -> str:
    try:
        return _json_dumps(obj)
    except (ValueError, TypeError, RecursionError) as e:
        raise InputError(f"cannot store {what} {rid!r}: {e}", field=what) from None


class Catalog:
    """Tracks, playlists and conversations of one run.

    ``Catalog.load(run_dir)`` reads and validates; ``catalog.save(run_dir)`` writes
    atomically. ``catalog.tracks`` keeps insertion order; ``catalog.index[id]`` is the row.
    """

    def __init__(self, tracks: Iterable[Track] = (), playlists: Iterable[Playlist] = (),
                 conversations: Iterable[Conversation] = ()) -> None:
        self.tracks: list[Track] = []
        self.index: dict[str, int] = {}
        self.playlists: list[Playlist] = list(playlists)
        self.conversations: list[Conversation] = list(conversations)
        for t in tracks:
            self.add_track(t)

    def __len__(self) -> int:
        return len(self.tracks)

    def __contains__(self, track_id: object) -> bool:
        return track_id in self.index

    def get(self, track_id: str) -> Track:
        """Return the track with this id; ``KeyError`` if absent."""
        return self.tracks[self.index[track_id]]

    def add_track(self, track: Track, replace: bool = False) -> bool:
        """Add a track; on a duplicate id keep the first unless ``replace``. Returns True if new."""
        if track.id in self.index:
            if replace:
                self.tracks[self.index[track.id]] = track
            return False
        self.index[track.id] = len(self.tracks)
        self.tracks.append(track)
        return True

    def ids(self) -> list[str]:
        return [t.id for t in self.tracks]

    def merge(self, other: Catalog) -> dict[str, int]:
        """Merge another catalog in (idempotent by id). Returns counts of what was new."""
        new_tracks = sum(self.add_track(t) for t in other.tracks)
        have_pl = {p.id for p in self.playlists}
        new_pl = [p for p in other.playlists if p.id not in have_pl]
        self.playlists.extend(new_pl)
        have_cv = {c.id for c in self.conversations}
        new_cv = [c for c in other.conversations if c.id not in have_cv]
        self.conversations.extend(new_cv)
        return {"tracks": new_tracks, "playlists": len(new_pl), "conversations": len(new_cv)}

    # -- persistence --
    def save(self, run_dir: str | Path) -> None:
        """Write the three tables into ``run_dir`` atomically.

        Every table is built before any file is written, and the files replace the old ones
        only after all three are written, so a failure leaves the run as it was.
        """
        run_dir = Path(run_dir)
        tables = {
            TRACKS_FILE: _table([{**asdict(t), "extra": _json_field(t.extra, "track", t.id)}
                                 for t in self.tracks], _TRACK_SCHEMA, "track"),
            PLAYLISTS_FILE: _table([asdict(p) for p in self.playlists], _PLAYLIST_SCHEMA, "playlist"),
            CONVERSATIONS_FILE: _table([
                {"id": c.id, "source": c.source, "json": _json_field(c.to_dict(), "conversation", c.id)}
                for c in self.conversations], _CONVERSATION_SCHEMA, "conversation"),
        }
        run_dir.mkdir(parents=True, exist_ok=True)
        with contextlib.ExitStack() as stack:
            for name, table in tables.items():
                tmp = stack.enter_context(atomic_path(run_dir / name, suffix=".parquet"))
                pq.write_table(table, tmp)

    @classmethod
    def exists(cls, run_dir: str | Path) -> bool:
        return (Path(run_dir) / TRACKS_FILE).exists()

    @classmethod
    def load(cls, run_dir: str | Path, validate: bool = True) -> Catalog:
        """Read a run's catalog; raises ``InputError`` naming the file and row if it is bad."""
        run_dir = Path(run_dir)
        path = run_dir / TRACKS_FILE
        if not path.exists():
            raise InputError(f"no catalog in {run_dir}; run `talkplay import` first", file=str(path))
        cat = cls()
        for i, row in enumerate(pq.read_table(path).to_pylist()):
            if validate:
                t = validate_track(row, file=str(path), row=i, check_audio=False)
            else:
                row["extra"] = json.loads(row["extra"] or "{}")
                t = Track(**row)
            if t.id in cat.index:
                raise InputError(f"duplicate track id {t.id!r}", file=str(path), row=i, field="id")
            cat.add_track(t)
        pl_path = run_dir / PLAYLISTS_FILE
        if pl_path.exists():
            cat.playlists = [Playlist(**r) for r in pq.read_table(pl_path).to_pylist()]
        cv_path = run_dir / CONVERSATIONS_FILE
        if cv_path.exists():
            cat.conversations = [Conversation.from_dict(json.loads(r["json"]))
                                 for r in pq.read_table(cv_path).to_pylist()]
        return cat
