"""Million Playlist Dataset importer: ``mpd.slice.*.json`` files.

``get_importer("mpd").load("data/", Issues(), limit=10)`` reads every slice in a folder
(or one slice file). Each slice is ``{"info": {...}, "playlists": [{"pid", "name",
"tracks": [{"pos", "track_uri", "track_name", "artist_name", "album_name",
"duration_ms", ...}], ...}]}``. Tracks are keyed by ``track_uri``; playlists keep the
``pos`` order and become the co-occurrence source.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from talkplay.catalog import Catalog, Playlist
from talkplay.errors import InputError
from talkplay.log import progress
from talkplay.sources.base import (
    Importer,
    Issues,
    check_unicode,
    existing_path,
    read_json,
    register,
    rollback,
    snapshot,
)
from talkplay.sources.fields import build_track, want_list, want_text

_SLICE = re.compile(r"mpd\.slice\.(\d+)-\d+\.json$")
# catalog field -> MPD key, for error messages
TRACK_KEYS: dict[str, str | None] = {"id": "track_uri", "title": "track_name", "artists": "artist_name",
                                     "album": "album_name", "duration": "duration_ms"}


def _slice_key(p: Path) -> tuple[int, str]:
    m = _SLICE.search(p.name)
    return (int(m.group(1)) if m else 0, p.name)


def _seconds(ms: Any) -> Any:
    if isinstance(ms, (int, float)) and not isinstance(ms, bool):
        try:
            return ms / 1000
        except OverflowError:  # an int too large for a float; validation reports it
            return ms
    return ms


def parse_playlist(pl: Any, cat: Catalog, seen: set[str], *, file: str, i: int) -> None:
    """Add playlist ``i`` of a slice, and its new tracks, to ``cat``; bad values raise ``InputError``.

    A track already in ``cat`` is not read again: MPD repeats each track in many playlists.
    """
    where: dict[str, Any] = {"file": file, "row": i}
    fld = f"playlists[{i}]"
    if not isinstance(pl, dict):
        raise InputError(f"expected a playlist object, got {type(pl).__name__}", field=fld, **where)
    check_unicode(pl, where, fld)
    pid = pl.get("pid")
    if pid is None:
        raise InputError("playlist without a pid", field=fld + ".pid", **where)
    if isinstance(pid, bool) or not isinstance(pid, (int, str)) or not str(pid).strip():
        raise InputError(f"expected a playlist id (a number), got {pid!r}", field=fld + ".pid", **where)
    plid = f"mpd:{pid}"
    if plid in seen:
        raise InputError(f"duplicate playlist id {pid!r}", field=fld + ".pid", **where)
    name = want_text(pl, "name", where, fld + ".") or f"playlist {pid}"
    entries = []
    for j, t in enumerate(want_list(pl, "tracks", where, fld + ".", required=True)):
        tf = f"{fld}.tracks[{j}]"
        if not isinstance(t, dict):
            raise InputError(f"expected a track object, got {type(t).__name__}", field=tf, **where)
        pos = t.get("pos", j)
        if isinstance(pos, bool) or not isinstance(pos, int):
            raise InputError(f"expected a position (a whole number), got {pos!r}", field=tf + ".pos", **where)
        entries.append((pos, j, t))
    ids = []
    for _, j, t in sorted(entries, key=lambda e: e[:2]):  # playlist order is "pos"
        uri = t.get("track_uri")
        if isinstance(uri, str) and uri in cat.index:
            ids.append(uri)
            continue
        tf = f"{fld}.tracks[{j}]"
        artist = t.get("artist_name")
        track_where = {**where, "track": uri if isinstance(uri, str) else None}
        extra = {k: v for k in ("artist_uri", "album_uri") if (v := want_text(t, k, track_where, tf + "."))}
        tr = build_track({
            "id": uri, "title": t.get("track_name"), "artists": [] if artist is None else [artist],
            "album": t.get("album_name"), "duration": _seconds(t.get("duration_ms")), "source": "mpd",
            "extra": extra,
        }, track_where, tf, TRACK_KEYS)
        cat.add_track(tr)
        ids.append(tr.id)
    cat.playlists.append(Playlist(id=plid, name=name, track_ids=ids, source="mpd"))
    seen.add(plid)


@register
class MPDImporter(Importer):
    name = "mpd"
    description = "Million Playlist Dataset slices (mpd.slice.*.json)"
    options = ("limit",)

    def load(self, path: str, issues: Issues, limit: int | None = None, **_: Any) -> Catalog:
        """Read MPD slice file(s); ``limit`` caps the number of slice files read.

        Under ``--skip-invalid`` a bad playlist is skipped whole, and so is a slice that is
        not a readable slice.
        """
        p = existing_path(path)
        files = sorted(p.glob("mpd.slice.*.json"), key=_slice_key) if p.is_dir() else [p]
        if not files:
            raise InputError("no mpd.slice.*.json files in this folder", file=str(p))
        files = files[:limit] if limit else files
        cat = Catalog()
        seen: set[str] = set()
        for fp in progress(files, desc="mpd slices"):
            try:
                data = read_json(fp, records=True)  # one bad playlist must not reject the slice
                pls = data.get("playlists") if isinstance(data, dict) else None
                if not isinstance(pls, list):
                    raise InputError("expected an object with a 'playlists' list", file=str(fp),
                                     field="playlists")
            except InputError as e:
                issues.report(e)
                continue
            for i, pl in enumerate(pls):
                snap = snapshot(cat)
                try:
                    parse_playlist(pl, cat, seen, file=str(fp), i=i)
                except InputError as e:
                    rollback(cat, snap)
                    issues.report(e)
        return cat
