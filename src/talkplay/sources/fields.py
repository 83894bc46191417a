"""Typed reads from parsed records: every wrong shape is an ``InputError`` naming the field.

The dataset importers read nested JSON (or Parquet) records. Each helper takes the
container, the key, ``where`` (``file``/``line``/``row``/``track`` for ``InputError``)
and ``path``, the field path of the container inside the record:

    turns = want_list(obj, "turns", where, required=True)
    user = want_text(turn, "user_query", where, path=f"turns[{i}].")

``build_track`` is ``validate_track`` for a track nested in such a record: its errors name
the field as the input spells it (``track_name``, not ``title``) under its path.
"""

from __future__ import annotations

from typing import Any

from talkplay.catalog import Track, validate_track
from talkplay.errors import InputError


def _missing(key: str, where: dict[str, Any], path: str) -> InputError:
    return InputError("required field is missing", field=path + key, **where)


def _wrong(expected: str, value: Any, key: str, where: dict[str, Any], path: str) -> InputError:
    return InputError(f"expected {expected}, got {type(value).__name__}", field=path + key, **where)


def want_dict(obj: dict[str, Any], key: str, where: dict[str, Any], path: str = "",
              required: bool = False) -> dict[str, Any]:
    """``obj[key]`` as an object; absent or null is ``{}`` unless ``required``."""
    v = obj.get(key)
    if v is None:
        if required:
            raise _missing(key, where, path)
        return {}
    if not isinstance(v, dict):
        raise _wrong("an object", v, key, where, path)
    return v


def want_list(obj: dict[str, Any], key: str, where: dict[str, Any], path: str = "",
              required: bool = False) -> list[Any]:
    """``obj[key]`` as a list; absent or null is ``[]`` unless ``required``."""
    v = obj.get(key)
    if v is None:
        if required:
            raise _missing(key, where, path)
        return []
    if not isinstance(v, list):
        raise _wrong("a list", v, key, where, path)
    return v


def want_text(obj: dict[str, Any], key: str, where: dict[str, Any], path: str = "") -> str | None:
    """``obj[key]`` as text, or None when absent or null."""
    v = obj.get(key)
    if v is not None and not isinstance(v, str):
        raise _wrong("text", v, key, where, path)
    return v


def want_id(obj: dict[str, Any], key: str, where: dict[str, Any], path: str = "",
            required: bool = True) -> str | None:
    """``obj[key]`` as a non-empty id (text); None when absent and not ``required``."""
    v = obj.get(key)
    if v is None and not required:
        return None
    if v is None:
        raise _missing(key, where, path)
    if not isinstance(v, str):
        raise _wrong("an id (text)", v, key, where, path)
    if not v.strip():
        raise InputError("must not be empty", field=path + key, **where)
    return v


def want_ids(value: Any, fld: str, where: dict[str, Any]) -> list[str]:
    """A list of non-empty ids (null is ``[]``); ``fld`` is the full field path."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise InputError(f"expected a list of track ids, got {type(value).__name__}", field=fld, **where)
    for j, x in enumerate(value):
        if not isinstance(x, str):
            raise InputError(f"expected a track id (text), got {type(x).__name__}", field=f"{fld}[{j}]",
                             **where)
        if not x.strip():
            raise InputError("empty track id", field=f"{fld}[{j}]", **where)
    return list(value)


def build_track(d: dict[str, Any], where: dict[str, Any], path: str = "",
                names: dict[str, str | None] | None = None, check_audio: bool = True) -> Track:
    """``validate_track(d)``, its errors renamed to the input's field under ``path``.

    ``build_track(d, where, "playlists[3].tracks[0]", {"title": "track_name"})``;

    ``names`` maps a catalog field to the input's key for it (``{"title": "track_name"}``);
    a key mapped to None is named by ``path`` alone (an id that is the record's key).
    """
    try:
        return validate_track(d, file=where.get("file"), line=where.get("line"), row=where.get("row"),
                              check_audio=check_audio)
    except InputError as e:
        name = (names or {}).get(e.field, e.field) if e.field else None
        fld = ".".join(x for x in (path, name) if x) or None
        raise InputError(e.reason, file=e.file, line=e.line, row=e.row, field=fld,
                         track=e.track or where.get("track")) from None
