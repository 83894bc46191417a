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

from pathlib import Path
from typing import Any

from talkplay.catalog import Catalog, Conversation, Playlist, Turn
from talkplay.errors import InputError
from talkplay.log import get_logger
from talkplay.sources.base import (
    Importer,
    Issues,
    existing_path,
    iter_jsonl,
    iter_parquet,
    make_track,
    read_json,
    register,
    rollback,
    snapshot,
)

log = get_logger(__name__)
TRACK_EXTRA = ("tempo", "key", "popularity", "chord", "caption")


def _num(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def track_dict(t: dict[str, Any]) -> dict[str, Any]:
    """Map one TalkPlayData 2 track record to ``validate_track`` fields."""
    artist = t.get("artist") if "artist" in t else t.get("artist_name")
    artists = artist if isinstance(artist, list) else ([artist] if artist else [])
    date = t.get("spotify_track_release_date") or t.get("release_date")
    extra: dict[str, Any] = {}
    for k in TRACK_EXTRA:
        v = t.get(k)
        if v in (None, "", "Unknown"):
            continue
        extra[k] = _num(v) if k in ("tempo", "popularity") and _num(v) is not None else v
    if date:
        extra["release_date"] = str(date)
    duration = _num(t.get("duration"))
    return {
        "id": t.get("track_id"),
        "title": t.get("title") if "title" in t else t.get("track_name"),
        "artists": artists,
        "album": t.get("album") if "album" in t else t.get("album_name"),
        "year": str(date)[:4] if date and str(date)[:4].isdigit() else None,
        "tags": t.get("tags") if "tags" in t else t.get("tag_list"),
        "lyrics": t.get("lyrics"),
        "duration": duration,
        "source": "talkplaydata2",
        "extra": extra,
    }


def _add_track(cat: Catalog, t: Any, issues: Issues, *, file: str, fld: str) -> str | None:
    if not isinstance(t, dict):
        raise InputError("expected a track object", file=file, field=fld)
    tid = t.get("track_id")
    if isinstance(tid, str) and tid in cat.index:
        return tid
    tr = make_track(track_dict(t), issues, file=file)
    if tr is None:
        return None
    cat.add_track(tr)
    return tr.id


def parse_chat(obj: dict[str, Any], cat: Catalog, issues: Issues, *, file: str, sid: str) -> None:
    """Add one raw ``chat.json`` session (tracks and conversation) to ``cat``."""
    ctx = obj.get("session_context")
    turns_raw = obj.get("conversation_turns")
    if not isinstance(ctx, dict):
        raise InputError("required field is missing", file=file, field="session_context")
    if not isinstance(turns_raw, list):
        raise InputError("required field is missing", file=file, field="conversation_turns")
    listener = [_add_track(cat, t, issues, file=file, fld="session_context.listener_tracks")
                for t in ctx.get("listener_tracks") or []]
    pool = [_add_track(cat, t, issues, file=file, fld="session_context.recommendation_pool_tracks")
            for t in ctx.get("recommendation_pool_tracks") or []]
    turns = []
    for i, tr in enumerate(turns_raw):
        if not isinstance(tr, dict):
            raise InputError("expected an object", file=file, field=f"conversation_turns[{i}]")
        lt = tr.get("listener_turn") or {}
        rt = tr.get("recsys_turn") or {}
        rec = rt.get("track")
        tid = rt.get("track_id")
        if isinstance(rec, dict):
            tid = _add_track(cat, rec, issues, file=file, fld=f"conversation_turns[{i}].recsys_turn.track")
        turns.append(Turn(user=str(lt.get("message") or ""), assistant=str(rt.get("message") or ""),
                          recommended=[tid] if tid else [],
                          extra={"thought": rt.get("thought") or "",
                                 "goal_progress": lt.get("goal_progress_assessment")}))
    profile = {k: v for k, v in (obj.get("listener_profile") or {}).items() if k not in ("success", "code")}
    goal = obj.get("conversation_goal") or {}
    profile["conversation_goal"] = {k: v for k, v in goal.items() if k != "queries"}
    listened = [t for t in listener if t]
    cat.conversations.append(Conversation(
        id=sid, turns=turns, profile=profile, source="talkplaydata2",
        extra={"pool": [t for t in pool if t], "listener_tracks": listened}))
    if len(listened) >= 2:  # what one listener played in one session: a real co-listening group
        cat.playlists.append(Playlist(id=f"talkplaydata2:listener:{sid}", name=f"Listening session {sid}",
                                      track_ids=listened, source="talkplaydata2:listener"))


def parse_flat(row: dict[str, Any], cat: Catalog, *, file: str, line: int | None, rown: int | None,
               known: set[str]) -> int:
    """Add one flat-schema session; returns how many referenced tracks have no metadata."""
    where = {"file": file, "line": line, "row": rown}
    sid = row.get("session_id")
    if not isinstance(sid, str) or not sid:
        raise InputError("required field is missing", field="session_id", **where)
    msgs = row.get("conversations")
    if not isinstance(msgs, list):
        raise InputError("expected a list of messages", field="conversations", **where)
    by_turn: dict[int, Turn] = {}
    missing = 0
    for j, m in enumerate(msgs):
        if not isinstance(m, dict) or m.get("role") not in ("user", "music", "assistant"):
            raise InputError("expected {turn_number, role: user|music|assistant, content}",
                             field=f"conversations[{j}]", **where)
        try:
            n = int(m.get("turn_number"))
        except (TypeError, ValueError):
            raise InputError("turn_number is not a number", field=f"conversations[{j}].turn_number",
                             **where) from None
        turn = by_turn.setdefault(n, Turn(user=""))
        content = m.get("content") or ""
        if m["role"] == "user":
            turn.user = content
        elif m["role"] == "music":
            turn.recommended.append(content)
            missing += content not in known
            if m.get("thought"):
                turn.extra["thought"] = m["thought"]
        else:
            turn.assistant = content
            if m.get("thought") and "thought" not in turn.extra:
                turn.extra["thought"] = m["thought"]
    profile = dict(row.get("user_profile") or {})
    profile["conversation_goal"] = dict(row.get("conversation_goal") or {})
    extra = {k: row[k] for k in ("user_id", "session_date") if row.get(k) is not None}
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
        data = read_json(fp)
        rows = data if isinstance(data, list) else [data]
        for n, r in enumerate(rows, start=1):
            yield None, n, r


@register
class TalkPlayData2Importer(Importer):
    name = "talkplaydata2"
    description = "TalkPlayData 2 sessions (raw chat.json files, or the flat published schema)"
    options = ("tracks", "limit")

    def load(self, path: str, issues: Issues, tracks: str | None = None, limit: int | None = None,
             **_: Any) -> Catalog:
        """Read chat.json sessions or a flat-schema table into tracks and conversations."""
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
            for n_line, n_row, r in _rows(existing_path(str(track_file), "track table"), issues):
                t = make_track(track_dict(r), issues, file=str(track_file), line=n_line, row=n_row)
                if t is not None and t.id not in cat.index:
                    cat.add_track(t)
        known = set(cat.index)
        missing = 0
        for fp in flat:
            for n_line, n_row, r in _rows(fp, issues):
                if limit is not None and len(cat.conversations) >= limit:
                    break
                snap = snapshot(cat)
                try:
                    missing += parse_flat(r, cat, file=str(fp), line=n_line, rown=n_row, known=known)
                except InputError as e:
                    rollback(cat, snap)
                    issues.report(e)
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
                obj = read_json(fp)
                if not isinstance(obj, dict):
                    raise InputError("expected a JSON object", file=str(fp))
                parse_chat(obj, cat, issues, file=str(fp), sid=sid)
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
