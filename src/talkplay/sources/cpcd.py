"""CPCD (Conversational Playlist Curation Dataset) JSONL importer.

``get_importer("cpcd").load("cpcd_v1.dialogs.dev.train.jsonl", Issues())``. One line per
conversation: turns of user query / wizard response with liked and disliked track ids,
a ``tracks`` table with metadata for the liked/disliked tracks, and a goal playlist.
Track ids are the dataset's own (YouTube video ids); turn order and liked order are kept
exactly, since the dataset's protocol takes "the first 3 liked of each earlier turn".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from talkplay.catalog import Catalog, Conversation, Playlist, Turn
from talkplay.errors import InputError
from talkplay.sources.base import (
    Importer,
    Issues,
    existing_path,
    iter_jsonl,
    make_track,
    register,
    rollback,
    snapshot,
)


def _id_list(value: Any, fld: str, where: dict[str, Any]) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
        raise InputError("expected a list of track ids", field=fld, **where)
    return list(value)


def _text(value: Any, fld: str, where: dict[str, Any]) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InputError(f"expected text, got {type(value).__name__}", field=fld, **where)
    return value


def parse_conversation(obj: dict[str, Any], cat: Catalog, issues: Issues, *, file: str, line: int) -> None:
    """Add one CPCD record's tracks, goal playlist and conversation to ``cat``."""
    where = {"file": file, "line": line}
    cid = obj.get("id")
    if not isinstance(cid, str) or not cid.strip():
        raise InputError("required field is missing or not text", field="id", **where)
    tracks = obj.get("tracks") or {}
    if not isinstance(tracks, dict):
        raise InputError("expected an object of track id -> metadata", field="tracks", **where)
    for tid, meta in tracks.items():
        if not isinstance(meta, dict):
            raise InputError("expected an object", field=f"tracks.{tid}", **where)
        if tid in cat.index:  # the same track appears in many conversations
            continue
        titles = meta.get("track_titles")
        if isinstance(titles, list):
            titles = titles[0] if titles else None
        t = make_track({"id": tid, "title": titles, "artists": meta.get("track_artists"),
                        "album": meta.get("track_release_titles"), "source": "cpcd",
                        "audio": None}, issues, file=file, line=line)
        if t is not None:
            t.extra["url"] = f"https://www.youtube.com/watch?v={tid}"
            cat.add_track(t)
    turns_raw = obj.get("turns")
    if not isinstance(turns_raw, list):
        raise InputError("expected a list of turns", field="turns", **where)
    turns = []
    for i, tr in enumerate(turns_raw):
        if not isinstance(tr, dict):
            raise InputError("expected an object", field=f"turns[{i}]", **where)
        f = f"turns[{i}]."
        liked = _id_list(tr.get("liked_results"), f + "liked_results", where)
        disliked = _id_list(tr.get("disliked_results"), f + "disliked_results", where)
        queries = tr.get("search_queries") or []
        results = tr.get("search_results") or []
        if not isinstance(queries, list) or not isinstance(results, list):
            raise InputError("expected lists", field=f + "search_results", **where)
        turns.append(Turn(
            user=_text(tr.get("user_query"), f + "user_query", where),
            assistant=_text(tr.get("system_response"), f + "system_response", where),
            recommended=[t for t in liked + disliked if t in tracks],
            liked=liked,
            disliked=disliked,
            extra={"search_queries": queries, "search_results": results},
        ))
    goal = _id_list(obj.get("goal_playlist"), "goal_playlist", where)
    cat.conversations.append(Conversation(id=cid, turns=turns, goal=goal, source="cpcd"))
    if goal:
        first = turns[0].user if turns else cid
        cat.playlists.append(Playlist(id=f"cpcd:goal:{cid}", name=first[:120], track_ids=goal,
                                      source="cpcd:goal"))


@register
class CPCDImporter(Importer):
    name = "cpcd"
    description = "CPCD conversations (JSONL, one conversation per line)"
    options = ("limit",)

    def load(self, path: str, issues: Issues, limit: int | None = None, **_: Any) -> Catalog:
        """Read a CPCD JSONL file (or a folder of them) into tracks, goal playlists and conversations."""
        p = existing_path(path)
        files = sorted(p.glob("*.jsonl")) if p.is_dir() else [p]
        cat = Catalog()
        seen: dict[str, str] = {}
        for fp in files:
            for n, obj in iter_jsonl(fp, issues):
                if limit is not None and len(cat.conversations) >= limit:
                    return cat
                cid = obj.get("id")
                if isinstance(cid, str) and cid in seen:
                    issues.report(InputError(f"duplicate conversation id {cid!r} (first at {seen[cid]})",
                                             file=str(fp), line=n, field="id"))
                    continue
                snap = snapshot(cat)
                try:
                    parse_conversation(obj, cat, issues, file=str(fp), line=n)
                except InputError as e:
                    rollback(cat, snap)
                    issues.report(e)
                    continue
                seen[str(cid)] = f"{Path(fp).name} line {n}"
        return cat

