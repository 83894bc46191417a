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
from talkplay.sources.base import Importer, Issues, existing_path, make_track, read_json, register

_SLICE = re.compile(r"mpd\.slice\.(\d+)-\d+\.json$")


def _slice_key(p: Path) -> tuple[int, str]:
    m = _SLICE.search(p.name)
    return (int(m.group(1)) if m else 0, p.name)


@register
class MPDImporter(Importer):
    name = "mpd"
    description = "Million Playlist Dataset slices (mpd.slice.*.json)"
    options = ("limit",)

    def load(self, path: str, issues: Issues, limit: int | None = None, **_: Any) -> Catalog:
        """Read MPD slice file(s); ``limit`` caps the number of slice files read."""
        p = existing_path(path)
        files = sorted(p.glob("mpd.slice.*.json"), key=_slice_key) if p.is_dir() else [p]
        if not files:
            raise InputError("no mpd.slice.*.json files in this folder", file=str(p))
        files = files[:limit] if limit else files
        cat = Catalog()
        for fp in progress(files, desc="mpd slices"):
            self._load_slice(fp, cat, issues)
        return cat

    def _load_slice(self, fp: Path, cat: Catalog, issues: Issues) -> None:
        data = read_json(fp)
        pls = data.get("playlists") if isinstance(data, dict) else None
        if not isinstance(pls, list):
            raise InputError("expected an object with a 'playlists' list", file=str(fp), field="playlists")
        have_pl = {pl.id for pl in cat.playlists}
        for i, pl in enumerate(pls):
            fld = f"playlists[{i}]"
            if not isinstance(pl, dict) or "pid" not in pl:
                issues.report(InputError("playlist without a pid", file=str(fp), row=i, field=fld + ".pid"))
                continue
            pid = f"mpd:{pl['pid']}"
            if pid in have_pl:
                issues.report(InputError(f"duplicate playlist id {pl['pid']!r}", file=str(fp), row=i,
                                         field=fld + ".pid"))
                continue
            tracks = pl.get("tracks")
            if not isinstance(tracks, list):
                issues.report(InputError("expected a list", file=str(fp), row=i, field=fld + ".tracks"))
                continue
            ids = []
            for t in sorted((t for t in tracks if isinstance(t, dict)), key=lambda t: t.get("pos", 0)):
                uri = t.get("track_uri")
                if isinstance(uri, str) and uri in cat.index:
                    ids.append(uri)
                    continue
                dur = t.get("duration_ms")
                tr = make_track({
                    "id": uri, "title": t.get("track_name"), "artists": [t.get("artist_name")],
                    "album": t.get("album_name"),
                    "duration": dur / 1000 if isinstance(dur, (int, float)) else dur,
                    "source": "mpd",
                    "extra": {k: t[k] for k in ("artist_uri", "album_uri") if t.get(k)},
                }, issues, file=str(fp), row=i)
                if tr is None:
                    continue
                cat.add_track(tr)
                ids.append(tr.id)
            name = pl.get("name") or f"playlist {pl['pid']}"
            cat.playlists.append(Playlist(id=pid, name=str(name), track_ids=ids, source="mpd"))
            have_pl.add(pid)
