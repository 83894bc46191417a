"""CPCD (Conversational Playlist Curation Dataset) JSONL importer.

``get_importer("cpcd").load("cpcd_v1.dialogs.dev.train.jsonl", Issues())``; a ``.jsonl.gz`` file
is read as well, and path ``"-"`` is the copy shipped in ``talkplay/data/cpcd`` (``SHIPPED``;
CC BY 4.0, see the README there). One line per conversation: turns of user query / wizard
response with liked and disliked track ids, a ``tracks`` table with metadata for the
liked/disliked tracks, and a goal playlist. Track ids are the dataset's own (YouTube video
ids); turn order and liked order are kept exactly, since the dataset's protocol takes "the
first 3 liked of each earlier turn".
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
    register,
    rollback,
    snapshot,
)
from talkplay.sources.fields import build_track, want_dict, want_id, want_ids, want_list, want_text

# CPCD's dev+train conversations (Chaganty et al., SIGIR 2023), gzipped unchanged
SHIPPED = Path(__file__).resolve().parents[1] / "data" / "cpcd" / "cpcd_v1.dialogs.dev.train.jsonl.gz"
# catalog field -> CPCD key, for error messages; the id is the key of the ``tracks`` object
TRACK_KEYS: dict[str, str | None] = {"id": None, "title": "track_titles", "artists": "track_artists",
                                     "album": "track_release_titles"}


def parse_conversation(obj: dict[str, Any], cat: Catalog, *, file: str, line: int) -> None:
    """Add one CPCD record's tracks, goal playlist and conversation to ``cat``.

    Any bad value raises ``InputError``; the caller rolls the record back.
    """
    where: dict[str, Any] = {"file": file, "line": line}
    cid = want_id(obj, "id", where)
    tracks = want_dict(obj, "tracks", where)
    for tid, meta in tracks.items():
        if not tid.strip():
            raise InputError("empty track id", field="tracks", **where)
        meta = want_dict(tracks, tid, where, path="tracks.", required=True)
        if tid in cat.index:  # the same track appears in many conversations; the first copy is kept
            continue
        titles = meta.get("track_titles")
        if isinstance(titles, list):
            titles = titles[0] if titles else None
        t = build_track({"id": tid, "title": titles, "artists": meta.get("track_artists"),
                         "album": meta.get("track_release_titles"), "source": "cpcd", "audio": None},
                        {**where, "track": tid}, f"tracks.{tid}", TRACK_KEYS)
        t.extra["url"] = f"https://www.youtube.com/watch?v={t.id}"
        cat.add_track(t)
    turns = []
    for i, tr in enumerate(want_list(obj, "turns", where, required=True)):
        f = f"turns[{i}]."
        if not isinstance(tr, dict):
            raise InputError(f"expected an object, got {type(tr).__name__}", field=f"turns[{i}]", **where)
        liked = want_ids(tr.get("liked_results"), f + "liked_results", where)
        disliked = want_ids(tr.get("disliked_results"), f + "disliked_results", where)
        turns.append(Turn(
            user=want_text(tr, "user_query", where, f) or "",
            assistant=want_text(tr, "system_response", where, f) or "",
            recommended=[t for t in liked + disliked if t in tracks],
            liked=liked,
            disliked=disliked,
            extra={"search_queries": want_list(tr, "search_queries", where, f),
                   "search_results": want_list(tr, "search_results", where, f)},
        ))
    goal = want_ids(obj.get("goal_playlist"), "goal_playlist", where)
    cat.conversations.append(Conversation(id=cid, turns=turns, goal=goal, source="cpcd"))
    if goal:
        first = turns[0].user if turns else cid
        cat.playlists.append(Playlist(id=f"cpcd:goal:{cid}", name=first[:120], track_ids=goal,
                                      source="cpcd:goal"))


@register
class CPCDImporter(Importer):
    name = "cpcd"
    description = "CPCD conversations (JSONL or .jsonl.gz, one per line; PATH '-': the shipped copy)"
    options = ("limit",)

    def load(self, path: str, issues: Issues, limit: int | None = None, **_: Any) -> Catalog:
        """Read a CPCD JSONL file (or a folder of them, or ``"-"``: ``SHIPPED``) into tracks, goal
        playlists and conversations.

        A record with any bad value (a bad track included) is skipped whole under ``--skip-invalid``.
        """
        p = SHIPPED if path in ("-", "") else existing_path(path)
        files = sorted([*p.glob("*.jsonl"), *p.glob("*.jsonl.gz")]) if p.is_dir() else [p]
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
                    parse_conversation(obj, cat, file=str(fp), line=n)
                except InputError as e:
                    rollback(cat, snap)
                    issues.report(e)
                    continue
                seen[str(cid)] = f"{Path(fp).name} line {n}"
        return cat
