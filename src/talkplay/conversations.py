"""Conversation files: one ``Conversation.to_dict()`` JSON object per line.

``convs = read_conversations(path)`` validates every line and raises ``InputError`` naming
the file, line and field; ``write_conversations(path, convs)`` writes atomically. A run's
own dialog files are read with ``talkplay.splits.load_dialogs(run, "train")``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from talkplay.atomic import write_jsonl_atomic
from talkplay.catalog import Conversation, Turn
from talkplay.errors import InputError

_TURN_LISTS = ("recommended", "liked", "disliked")


def _id_list(value: Any, fld: str, where: dict[str, Any]) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise InputError(f"expected a list of track ids, got {type(value).__name__}", field=fld, **where)
    return [str(v) for v in value]


def conversation_from_dict(d: Any, *, file: str | None = None, line: int | None = None) -> Conversation:
    """Validate one raw record into a ``Conversation``; errors name the file, line and field."""
    where: dict[str, Any] = {"file": file, "line": line}
    if not isinstance(d, dict):
        raise InputError(f"expected an object, got {type(d).__name__}", **where)
    if d.get("id") in (None, ""):
        raise InputError("required field is missing", field="id", **where)
    raw_turns = d.get("turns")
    if not isinstance(raw_turns, list) or not raw_turns:
        raise InputError("expected a non-empty list of turns", field="turns", **where)
    turns = []
    for j, t in enumerate(raw_turns):
        if not isinstance(t, dict):
            raise InputError("expected an object", field=f"turns[{j}]", **where)
        user = t.get("user")
        if not isinstance(user, str):
            raise InputError("expected the user's message as text", field=f"turns[{j}].user", **where)
        assistant = t.get("assistant") or ""
        if not isinstance(assistant, str):
            raise InputError("expected text", field=f"turns[{j}].assistant", **where)
        lists = {k: _id_list(t.get(k), f"turns[{j}].{k}", where) for k in _TURN_LISTS}
        extra = t.get("extra") or {}
        if not isinstance(extra, dict):
            raise InputError("expected an object", field=f"turns[{j}].extra", **where)
        turns.append(Turn(user=user, assistant=assistant, extra=extra, **lists))
    for fld in ("profile", "extra"):
        if d.get(fld) is not None and not isinstance(d.get(fld), dict):
            raise InputError("expected an object", field=fld, **where)
    return Conversation(
        id=str(d["id"]), turns=turns, goal=_id_list(d.get("goal"), "goal", where),
        profile=dict(d.get("profile") or {}), source=str(d.get("source") or ""),
        extra=dict(d.get("extra") or {}),
    )


def read_conversations(path: str | Path) -> list[Conversation]:
    """Read a ``.jsonl`` of conversations: ``convs = read_conversations("dialogs/train.jsonl")``."""
    path = Path(path)
    if not path.exists():
        raise InputError("file does not exist", file=str(path))
    out = []
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                d = json.loads(line)
            except json.JSONDecodeError as e:
                raise InputError(f"invalid JSON: {e.msg}", file=str(path), line=n) from None
            out.append(conversation_from_dict(d, file=str(path), line=n))
    return out


def write_conversations(path: str | Path, convs: list[Conversation]) -> Path:
    """Write conversations as JSON lines, atomically."""
    return write_jsonl_atomic(path, [c.to_dict() for c in convs])
