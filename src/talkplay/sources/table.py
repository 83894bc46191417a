"""Generic table importer: JSONL, CSV/TSV or Parquet rows -> tracks.

``get_importer("table").load("songs.csv", Issues(), map={"title": "song_name"})``.
Column mapping: ``map`` takes catalog field -> column name (``--map title=song_name``
on the command line); ``config`` names a YAML/JSON file holding
``{map: {...}, split: {artists: ";", tags: ","}, source: "..."}``. Columns named like a
catalog field (id, title, artists, album, year, tags, lyrics, audio, duration) are used
as they are; other columns go into ``extra``. ``id`` and ``title`` are required.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from talkplay.catalog import Catalog
from talkplay.errors import InputError
from talkplay.sources.base import (
    Importer,
    Issues,
    add_unique,
    check_unicode,
    existing_path,
    iter_csv,
    iter_json_array,
    iter_jsonl,
    iter_parquet,
    parse_json,
    read_text,
    register,
)
from talkplay.sources.fields import build_track

FIELDS = ("id", "title", "artists", "album", "year", "tags", "lyrics", "audio", "duration")
ALIASES = {"artist": "artists", "tag": "tags", "genre": "tags", "genres": "tags", "name": "title",
           "track_id": "id"}
DEFAULT_SPLIT = {"artists": ";", "tags": ","}


def parse_map(items: list[str] | dict[str, str] | None) -> dict[str, str]:
    """``["title=song_name", ...]`` -> ``{"title": "song_name"}``; bad items raise ``InputError``."""
    if not items:
        return {}
    if isinstance(items, dict):
        pairs = list(items.items())
    else:
        pairs = []
        for it in items:
            if not isinstance(it, str) or "=" not in it:
                raise InputError(f"expected FIELD=COLUMN, got {it!r}", field="--map")
            k, v = it.split("=", 1)
            pairs.append((k.strip(), v.strip()))
    out = {}
    for k, v in pairs:
        if not isinstance(k, str) or (k not in FIELDS and not k.startswith("extra.")):
            raise InputError(f"unknown catalog field {k!r} (fields: {', '.join(FIELDS)}, extra.NAME)",
                             field="--map")
        if not isinstance(v, str) or not v:
            raise InputError(f"expected a column name for {k!r}, got {v!r}", field="--map")
        out[k] = v
    return out


def load_config(path: str | Path) -> dict[str, Any]:
    """Read a mapping config (YAML or JSON)."""
    p = existing_path(str(path), "mapping config")
    text = read_text(p)
    try:
        if p.suffix.lower() in (".yaml", ".yml"):
            import yaml

            cfg = yaml.safe_load(text) or {}
        else:
            cfg = json.loads(text)
    except Exception as e:  # yaml and json raise different types
        raise InputError(f"cannot parse mapping config: {e}", file=str(p)) from None
    if not isinstance(cfg, dict):
        raise InputError("expected a mapping with 'map' (and optionally 'split', 'source')", file=str(p))
    unknown = set(cfg) - {"map", "split", "source"}
    if unknown:
        raise InputError(f"unknown key(s) {sorted(unknown, key=str)}", file=str(p),
                         field=str(sorted(unknown, key=str)[0]))
    if not isinstance(cfg.get("map") or {}, dict):
        raise InputError("expected a mapping of catalog field: column", file=str(p), field="map")
    try:
        parse_map(cfg.get("map"))
    except InputError as e:
        raise InputError(e.reason, file=str(p), field="map") from None
    split = cfg.get("split") or {}
    if not isinstance(split, dict) or not all(k in DEFAULT_SPLIT and isinstance(v, str)
                                              for k, v in split.items()):
        raise InputError("expected a mapping of artists/tags: separator", file=str(p), field="split")
    if cfg.get("source") is not None and not isinstance(cfg["source"], str):
        raise InputError(f"expected text, got {type(cfg['source']).__name__}", file=str(p), field="source")
    return cfg


def _split(value: Any, sep: str) -> Any:
    if isinstance(value, str) and sep:
        return [x.strip() for x in value.split(sep) if x.strip()]
    return value


def _extra_column(value: Any, where: dict[str, Any]) -> dict[str, Any]:
    """The ``extra`` column: an object, or JSON text of one (a CSV cell)."""
    if isinstance(value, str):
        if not value.strip():
            return {}
        value = parse_json(value, field="extra", **where)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InputError(f"expected a JSON object, got {type(value).__name__}", field="extra", **where)
    return value


def map_row(row: dict[str, Any], mapping: dict[str, str], split: dict[str, str],
            where: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """Turn one input row into ``validate_track`` fields using the column mapping.

    Returns the fields and, for error messages, the column each field came from.
    """
    used: set[str] = set()
    out: dict[str, Any] = {}
    cols: dict[str, str] = {}
    extra: dict[str, Any] = {}
    for fld, col in mapping.items():
        if col not in row:
            raise InputError(f"mapped column {col!r} is not in the input", field=col, **where)
        used.add(col)
        if fld.startswith("extra."):
            extra[fld[6:]] = row[col]
        else:
            out[fld], cols[fld] = row[col], col
    extra_cell = None
    for col, v in row.items():
        if col in used:
            continue
        fld = col if col in FIELDS else ALIASES.get(col)
        if fld and fld not in out:
            out[fld], cols[fld] = v, col
        elif col == "extra":
            extra_cell = v
        elif v is not None and isinstance(v, (str, int, float, bool)):
            extra[col] = v
    tid = out.get("id")
    where = {**where, "track": tid if isinstance(tid, str) and tid.strip() else None}
    check_unicode(row, where)  # JSON rows; CSV and Parquet text is always valid
    extra.update(_extra_column(extra_cell, where))
    for fld in ("artists", "tags"):
        if fld in out:
            out[fld] = _split(out[fld], split.get(fld, DEFAULT_SPLIT[fld]))
    out["extra"] = extra
    return out, cols


def _resolve_audio(audio: Any, table: Path) -> Any:
    """Relative audio paths are relative to the table, not to where the command runs."""
    if not isinstance(audio, str) or not audio or audio.startswith("score:") or "://" in audio:
        return audio
    try:
        a = Path(audio).expanduser()
        return str(a if a.is_absolute() else (table.parent / a).resolve())
    except (OSError, ValueError, RuntimeError):  # NUL byte, unknown ~user: validation names it
        return audio


def iter_rows(path: Path, issues: Issues):
    """Yield ``(line, row, dict)`` for a JSONL, CSV/TSV or Parquet file (one of line/row is None)."""
    suffix = path.suffix.lower()
    if suffix == ".json" and path.read_bytes()[:4096].lstrip().startswith(b"["):
        for n, r in iter_json_array(path, issues, check_text=False):
            yield None, n, r
    elif suffix in (".jsonl", ".ndjson", ".json"):
        for n, r in iter_jsonl(path, issues, check_text=False):
            yield n, None, r
    elif suffix in (".csv", ".tsv", ".txt"):
        for n, r in iter_csv(path, issues):
            yield n, None, r
    elif suffix in (".parquet", ".pq"):
        for n, r in iter_parquet(path, issues):
            yield None, n, r
    else:
        raise InputError(f"unsupported table format {suffix!r} (use .jsonl, .csv, .tsv or .parquet)",
                         file=str(path))


@register
class TableImporter(Importer):
    name = "table"
    description = "any JSONL, CSV/TSV or Parquet table of tracks, with a column mapping"
    options = ("map", "config", "source_label", "limit", "check_audio")

    def load(self, path: str, issues: Issues, map: Any = None, config: str | None = None,
             source_label: str | None = None, limit: int | None = None, check_audio: bool = True,
             **_: Any) -> Catalog:
        """Read the table's rows into tracks (duplicates, bad types and empty titles are bad input)."""
        cfg = load_config(config) if config else {}
        mapping = parse_map(cfg.get("map"))
        mapping.update(parse_map(map))
        split = {**DEFAULT_SPLIT, **(cfg.get("split") or {})}
        label = source_label or cfg.get("source") or f"table:{Path(path).name}"
        p = existing_path(path)
        cat = Catalog()
        for line, row, rec in iter_rows(p, issues):
            if limit is not None and len(cat) >= limit:
                break
            where = {"file": str(p), "line": line, "row": row}
            try:
                d, cols = map_row(rec, mapping, split, where)
                d["source"] = label
                d["audio"] = _resolve_audio(d.get("audio"), p)
                # errors name the column as the table spells it
                t = build_track(d, where, names=cols, check_audio=check_audio)
            except InputError as e:
                issues.report(e)
                continue
            add_unique(cat, t, issues, file=str(p), line=line, row=row)
        return cat
