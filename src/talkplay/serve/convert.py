"""Between API messages and the engine: conversations in, track cards and text out.

``to_conversation(messages, session)`` pairs user and assistant messages into
``catalog.Conversation`` turns (the last turn is the current request) and attaches the
session's likes and rejections; ``track_out(track, rec, rank)`` and ``tracks_text(...)``
shape the engine's answer for JSON and for readers.
"""

from __future__ import annotations

from talkplay.catalog import Catalog, Conversation, Track, Turn
from talkplay.serve.api import ChatMessage, TrackOut
from talkplay.serve.sessions import ApiSession


class RequestProblem(ValueError):
    """A request that is well-formed JSON but cannot be served; ``param`` names the field."""

    def __init__(self, message: str, param: str | None = None, status: int = 400) -> None:
        super().__init__(message)
        self.param = param
        self.status = status


def check_messages(messages: list[ChatMessage], max_chars: int, max_messages: int) -> None:
    """Raise ``RequestProblem`` for empty, oversized or user-less conversations."""
    if not messages:
        raise RequestProblem("messages must contain at least one user message", "messages")
    if len(messages) > max_messages:
        raise RequestProblem(f"too many messages: {len(messages)} (limit {max_messages})", "messages")
    for i, m in enumerate(messages):
        n = len(m.text())
        if n > max_chars:
            raise RequestProblem(
                f"message {i} is {n} characters long (limit {max_chars})", f"messages[{i}].content")
    last = messages[-1]
    if last.role != "user":
        raise RequestProblem("the last message must be from the user", f"messages[{len(messages) - 1}].role")
    if not last.text().strip():
        raise RequestProblem("the last user message is empty", f"messages[{len(messages) - 1}].content")


def to_conversation(messages: list[ChatMessage], session: ApiSession | None = None,
                    conversation_id: str = "api") -> Conversation:
    """Pair messages into turns; system/tool messages are kept in ``extra``, not as turns.

    Tracks the session liked or rejected are attached to the turn that recommended them
    (or the latest finished turn), so the engine sees feedback the way training data has it.
    """
    turns: list[Turn] = []
    system: list[str] = []
    for m in messages:
        if m.role == "user":
            turns.append(Turn(user=m.text().strip()))
        elif m.role == "assistant":
            if not turns:  # an assistant opener: keep it on an empty-user turn
                turns.append(Turn(user=""))
            t = turns[-1]
            t.assistant = (t.assistant + "\n" + m.text()).strip()
            t.recommended.extend(r.id for r in (m.tracks or []))
        elif m.role in ("system", "developer"):
            system.append(m.text())
    conv = Conversation(id=conversation_id, turns=turns, source="api")
    if system:
        conv.extra["system"] = "\n".join(system)
    if session is not None and turns:
        for kind, ids in (("liked", session.liked), ("disliked", session.rejected)):
            for tid in ids:
                home = next((t for t in reversed(turns[:-1]) if tid in t.recommended), None)
                if home is None:
                    home = turns[-2] if len(turns) > 1 else turns[-1]
                getattr(home, kind).append(tid)
    return conv


def audio_available(track: Track) -> bool:
    """Whether ``/v1/tracks/{id}/audio`` can serve this track (local file or a score)."""
    from pathlib import Path

    if not track.audio:
        return False
    if track.audio.startswith("score:"):
        return True
    if "://" in track.audio:
        return False
    return Path(track.audio).expanduser().is_file()


def track_out(track: Track, score: float | None = None, why: str | None = None,
              rank: int | None = None) -> TrackOut:
    from urllib.parse import quote

    return TrackOut(
        id=track.id, title=track.title, artists=list(track.artists), album=track.album,
        year=track.year, tags=list(track.tags), score=None if score is None else float(score),
        why=why, rank=rank,
        audio_url=f"/v1/tracks/{quote(track.id, safe='')}/audio" if audio_available(track) else None,
    )


def find_track(catalog: Catalog, track_id: str) -> Track | None:
    row = catalog.index.get(track_id)
    return None if row is None else catalog.tracks[row]


def recs_out(catalog: Catalog, recs: list) -> list[TrackOut]:
    """Engine recommendations -> ``TrackOut`` list, skipping ids the catalog lacks."""
    out = []
    for r in recs:
        track = find_track(catalog, r.track_id)
        if track is not None:
            out.append(track_out(track, r.score, r.why, rank=len(out) + 1))
    return out


def tracks_text(tracks: list[TrackOut]) -> str:
    """A numbered, readable list of the tracks for the message content."""
    if not tracks:
        return "I could not find a track for that in this catalog."
    lines = []
    for t in tracks:
        line = f"{t.rank}. {t.title}"
        if t.artists:
            line += " by " + ", ".join(t.artists)
        if t.album:
            line += f" ({t.album})"
        if t.why:
            line += f": {t.why}"
        lines.append(line)
    return "\n".join(lines)


def compose(reply: str, tracks: list[TrackOut]) -> str:
    """Message content: the model's reply, then the list of tracks."""
    reply = (reply or "").strip()
    listing = tracks_text(tracks)
    return f"{reply}\n\n{listing}" if reply else listing
