"""TalkPlayData 2 importer: raw ``chat.json`` sessions and the flat published schema.

``get_importer("talkplaydata2").load(path, Issues())`` where ``path`` is

- a ``*.chat.json`` file, or a folder of them (the raw generation records: listener
  profile, conversation goal, ``session_context`` with listener and pool tracks, and
  8 ``conversation_turns``); or
- a JSONL / JSON / Parquet file of the flat schema (one session per row: ``session_id``,
  ``user_profile``, ``conversation_goal``, ``conversations`` as a list of
  ``{turn_number, role: user|music|assistant, content, thought}``). Track metadata for
  the flat schema comes from the ``tracks`` option (a JSONL/Parquet table with
  ``track_id`` and the same track fields), or a file beside it whose name contains
  ``track`` and ``metadata``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from talkplay.catalog import Catalog, Conversation, Playlist, Turn
from talkplay.errors import InputError
from talkplay.log import get_logger
from talkplay.sources.base import (
    Importer,
    Issues,
    add_unique,
    existing_path,
    iter_json_array,
    iter_jsonl,
    iter_parquet,
    read_json,
    register,
    rollback,
    snapshot,
)
from talkplay.sources.fields import build_track, want_dict, want_id, want_list, want_text

log = get_logger(__name__)
NUMBER_EXTRA = ("tempo", "popularity")  # numbers, often written as text ("140.60")
TEXT_EXTRA = ("key", "chord", "caption")
PLACEHOLDERS = ("", "Unknown")  # what the dataset writes for "not known"


def _first_key(t: dict[str, Any], *keys: str) -> str:
    """The key the record uses for a field that has two spellings (raw and flat schema)."""
    return next((k for k in keys if k in t), keys[0])


def track_dict(t: dict[str, Any], where: dict[str, Any],
               path: str = "") -> tuple[dict[str, Any], dict[str, str]]:
    """Map one TalkPlayData 2 track record to ``validate_track`` fields.

    Returns the fields and, for error messages, the record's key for each; bad release
    dates and bad tempo/popularity numbers raise ``InputError``.
    """
    keys = {"id": "track_id", "title": _first_key(t, "title", "track_name"),
            "artists": _first_key(t, "artist", "artist_name"), "album": _first_key(t, "album", "album_name"),
            "tags": _first_key(t, "tags", "tag_list"), "lyrics": "lyrics", "duration": "duration",
            "year": _first_key(t, "spotify_track_release_date", "release_date")}
    tid = t.get("track_id")
    where = {**where, "track": tid if isinstance(tid, str) and tid else None}
    artist = t.get(keys["artists"])
    artists = artist if isinstance(artist, list) else ([] if artist in (None, "") else [artist])
    date = t.get(keys["year"]) or None
    if date is not None and (isinstance(date, bool) or not isinstance(date, (str, int))):
        raise InputError(f"expected a date (text), got {type(date).__name__}", field=path + keys["year"],
                         **where)
    extra: dict[str, Any] = {}
    for k in NUMBER_EXTRA + TEXT_EXTRA:
        v = t.get(k)
        if v is None or v in PLACEHOLDERS:
            continue
        if k in NUMBER_EXTRA:
            num = None if isinstance(v, bool) else _num(v)
            if num is None:
                raise InputError(f"expected a number, got {v!r:.60}", field=path + k, **where)
            v = num
        elif not isinstance(v, str):
            raise InputError(f"expected text, got {type(v).__name__}", field=path + k, **where)
        extra[k] = v
    if date is not None:
        extra["release_date"] = str(date)
    return {
        "id": tid,
        "title": t.get(keys["title"]),
        "artists": artists,
        "album": t.get(keys["album"]),
        "year": str(date)[:4] if date is not None and str(date)[:4].isdigit() else None,
        "tags": t.get(keys["tags"]),
        "lyrics": t.get("lyrics"),
        "duration": t.get("duration"),
        "source": "talkplaydata2",
        "extra": extra,
    }, keys


def _num(value: Any) -> float | None:
    """A finite number from a number or numeric text, else None."""
    try:
        f = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return f if math.isfinite(f) else None


def read_track(t: Any, where: dict[str, Any], path: str = "") -> Any:
    """Validate one track record; errors name ``path`` (``session_context.listener_tracks[2]``)."""
    if not isinstance(t, dict):
        raise InputError(f"expected a track object, got {type(t).__name__}", field=path or None, **where)
    prefix = f"{path}." if path else ""
    d, keys = track_dict(t, where, prefix)
    tid = t.get("track_id")
    return build_track(d, {**where, "track": tid if isinstance(tid, str) and tid else None}, path, keys)


def _add_track(cat: Catalog, t: Any, where: dict[str, Any], path: str) -> str:
    """Add a session's track (first copy wins: tracks recur across sessions); returns its id."""
    tid = t.get("track_id") if isinstance(t, dict) else None
    if isinstance(tid, str) and tid in cat.index:
        return tid
    tr = read_track(t, where, path)
    cat.add_track(tr)
    return tr.id


def parse_chat(obj: dict[str, Any], cat: Catalog, *, file: str, sid: str) -> None:
    """Add one raw ``chat.json`` session (tracks and conversation) to ``cat``; bad values raise."""
    where: dict[str, Any] = {"file": file}
    ctx = want_dict(obj, "session_context", where, required=True)
    turns_raw = want_list(obj, "conversation_turns", where, required=True)
    listened = [_add_track(cat, t, where, f"session_context.listener_tracks[{j}]")
                for j, t in enumerate(want_list(ctx, "listener_tracks", where, "session_context."))]
    pool = [_add_track(cat, t, where, f"session_context.recommendation_pool_tracks[{j}]")
            for j, t in enumerate(want_list(ctx, "recommendation_pool_tracks", where, "session_context."))]
    turns = []
    for i, tr in enumerate(turns_raw):
        f = f"conversation_turns[{i}]"
        if not isinstance(tr, dict):
            raise InputError(f"expected an object, got {type(tr).__name__}", field=f, **where)
        lt = want_dict(tr, "listener_turn", where, f + ".")
        rt = want_dict(tr, "recsys_turn", where, f + ".")
        if rt.get("track") is not None:
            tid = _add_track(cat, rt["track"], where, f + ".recsys_turn.track")
        else:
            tid = want_id(rt, "track_id", where, f + ".recsys_turn.", required=False)
        turns.append(Turn(user=want_text(lt, "message", where, f + ".listener_turn.") or "",
                          assistant=want_text(rt, "message", where, f + ".recsys_turn.") or "",
                          recommended=[tid] if tid else [],
                          extra={"thought": want_text(rt, "thought", where, f + ".recsys_turn.") or "",
                                 "goal_progress": lt.get("goal_progress_assessment")}))
    profile = {k: v for k, v in want_dict(obj, "listener_profile", where).items()
               if k not in ("success", "code")}
    goal = want_dict(obj, "conversation_goal", where)
    profile["conversation_goal"] = {k: v for k, v in goal.items() if k != "queries"}
    cat.conversations.append(Conversation(
        id=sid, turns=turns, profile=profile, source="talkplaydata2",
        extra={"pool": pool, "listener_tracks": listened}))
    if len(listened) >= 2:  # what one listener played in one session: a real co-listening group
        cat.playlists.append(Playlist(id=f"talkplaydata2:listener:{sid}", name=f"Listening session {sid}",
                                      track_ids=listened, source="talkplaydata2:listener"))


def _turn_number(m: dict[str, Any], where: dict[str, Any], fld: str) -> int:
    n = m.get("turn_number")
    if isinstance(n, float) and n.is_integer():  # Parquet and pandas write whole numbers as floats
        n = int(n)
    elif isinstance(n, str):
        try:
            n = int(n)
        except ValueError:
            pass
    if isinstance(n, int) and not isinstance(n, bool):
        return n
    raise InputError(f"expected a whole number, got {m.get('turn_number')!r:.60}", field=fld, **where)


def parse_flat(row: dict[str, Any], cat: Catalog, *, file: str, line: int | None, rown: int | None,
               known: set[str]) -> int:
    """Add one flat-schema session; returns how many referenced tracks have no metadata."""
    where = {"file": file, "line": line, "row": rown}
    sid = want_id(row, "session_id", where)
    by_turn: dict[int, Turn] = {}
    missing = 0
    for j, m in enumerate(want_list(row, "conversations", where, required=True)):
        f = f"conversations[{j}]"
        if not isinstance(m, dict):
            raise InputError("expected {turn_number, role: user|music|assistant, content}", field=f, **where)
        if m.get("role") not in ("user", "music", "assistant"):
            raise InputError(f"expected user, music or assistant, got {m.get('role')!r:.60}",
                             field=f + ".role", **where)
        turn = by_turn.setdefault(_turn_number(m, where, f + ".turn_number"), Turn(user=""))
        thought = want_text(m, "thought", where, f + ".")
        if m["role"] == "music":
            tid = want_id(m, "content", where, f + ".")
            turn.recommended.append(tid)
            missing += tid not in known
            if thought:
                turn.extra["thought"] = thought
            continue
        content = want_text(m, "content", where, f + ".") or ""
        if m["role"] == "user":
            turn.user = content
        else:
            turn.assistant = content
            if thought and "thought" not in turn.extra:
                turn.extra["thought"] = thought
    profile = dict(want_dict(row, "user_profile", where))
    profile["conversation_goal"] = dict(want_dict(row, "conversation_goal", where))
    extra = {}
    for k in ("user_id", "session_date"):
        v = row.get(k)
        if isinstance(v, (list, dict)):
            raise InputError(f"expected text, got {type(v).__name__}", field=k, **where)
        if v is not None:
            extra[k] = v
    cat.conversations.append(Conversation(id=sid, turns=[by_turn[k] for k in sorted(by_turn)],
                                          profile=profile, source="talkplaydata2", extra=extra))
    return missing


def _rows(fp: Path, issues: Issues):
    suffix = fp.suffix.lower()
    if suffix == ".parquet":
        for n, r in iter_parquet(fp, issues):
            yield None, n, r
    elif suffix == ".jsonl":
        for n, r in iter_jsonl(fp, issues):
            yield n, None, r
    else:
        for n, r in iter_json_array(fp, issues):
            yield None, n, r


@register
class TalkPlayData2Importer(Importer):
    name = "talkplaydata2"
    description = "TalkPlayData 2 sessions (raw chat.json files, or the flat published schema)"
    options = ("tracks", "limit")

    def load(self, path: str, issues: Issues, tracks: str | None = None, limit: int | None = None,
             **_: Any) -> Catalog:
        """Read chat.json sessions or a flat-schema table into tracks and conversations.

        Under ``--skip-invalid`` a session with any bad value (a bad track included) is
        skipped whole, and so is a bad row of the track table.
        """
        p = existing_path(path)
        cat = Catalog()
        if p.is_dir():
            chats = sorted(p.glob("*.chat.json"))
            if chats:
                return self._load_chats(chats, issues, limit)
            flat = sorted(f for f in p.iterdir() if f.suffix in (".jsonl", ".parquet")
                          and not _is_track_table(f))
            if not flat:
                raise InputError("no *.chat.json, *.jsonl or *.parquet sessions in this folder", file=str(p))
        else:
            if p.name.endswith(".chat.json"):
                return self._load_chats([p], issues, limit)
            flat = [p]
        track_file = Path(tracks).expanduser() if tracks else _find_track_table(flat[0].parent)
        if track_file is not None:
            tf = existing_path(str(track_file), "track table")
            for n_line, n_row, r in _rows(tf, issues):
                where = {"file": str(tf), "line": n_line, "row": n_row}
                try:
                    t = read_track(r, where)
                except InputError as e:
                    issues.report(e)
                    continue
                add_unique(cat, t, issues, file=str(tf), line=n_line, row=n_row)
        known = set(cat.index)
        missing = 0
        seen: set[str] = set()
        for fp in flat:
            for n_line, n_row, r in _rows(fp, issues):
                if limit is not None and len(cat.conversations) >= limit:
                    break
                sid = r.get("session_id")
                if isinstance(sid, str) and sid in seen:
                    issues.report(InputError(f"duplicate session id {sid!r}", file=str(fp), line=n_line,
                                             row=n_row, field="session_id"))
                    continue
                snap = snapshot(cat)
                try:
                    missing += parse_flat(r, cat, file=str(fp), line=n_line, rown=n_row, known=known)
                except InputError as e:
                    rollback(cat, snap)
                    issues.report(e)
                    continue
                seen.add(sid)
        if missing:
            log.warning("%d recommended track(s) have no metadata%s; pass the track table with "
                        "--tracks", missing, f" in {track_file}" if track_file else "")
        return cat

    def _load_chats(self, files: list[Path], issues: Issues, limit: int | None) -> Catalog:
        cat = Catalog()
        for fp in files[:limit] if limit else files:
            sid = fp.name[: -len(".chat.json")] if fp.name.endswith(".chat.json") else fp.stem
            snap = snapshot(cat)
            try:
                if not sid.strip():
                    raise InputError("the file name gives an empty session id", file=str(fp))
                obj = read_json(fp)
                if not isinstance(obj, dict):
                    raise InputError(f"expected a JSON object, got {type(obj).__name__}", file=str(fp))
                parse_chat(obj, cat, file=str(fp), sid=sid)
            except InputError as e:
                rollback(cat, snap)
                issues.report(e)
        return cat


def _is_track_table(f: Path) -> bool:
    name = f.name.lower()
    return "track" in name and "metadata" in name


def _find_track_table(folder: Path) -> Path | None:
    found = sorted(f for f in folder.iterdir() if _is_track_table(f) and f.suffix in (".jsonl", ".parquet"))
    return found[0] if found else None
