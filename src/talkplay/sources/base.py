"""One interface for every importer, a registry, and the shared reading helpers.

An importer turns files into a ``Catalog``: ``get_importer("cpcd").load(path, issues)``.
``import_into_run(Run(out), ImportConfig(source="cpcd", path=...))`` merges the result
into a run directory (idempotent by id) and writes it atomically, after every row has
been validated, so a failed import leaves the run as it was.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from talkplay.catalog import Catalog, Track
from talkplay.errors import InputError
from talkplay.log import get_logger

log = get_logger(__name__)

MAX_EXAMPLES = 10  # skipped rows listed by name in the summary; the rest are only counted


class Issues:
    """Collects bad rows: raises the first one, or records it when ``skip_invalid``.

    Use as ``issues.report(InputError(...))`` inside an importer's loop, then ``continue``.
    """

    def __init__(self, skip_invalid: bool = False) -> None:
        self.skip_invalid = skip_invalid
        self.skipped: list[InputError] = []

    def report(self, err: InputError) -> None:
        if not self.skip_invalid:
            raise err
        log.debug("skipped: %s", err)
        self.skipped.append(err)

    def summary(self) -> dict[str, Any]:
        """``{"count": n, "by_reason": {...}, "examples": [...]}`` for the CLI and run.json."""
        reasons = Counter(f"{e.field or 'record'}: {e.reason}" if len(e.reason) < 60
                          else f"{e.field or 'record'}: {e.reason[:57]}..." for e in self.skipped)
        return {
            "count": len(self.skipped),
            "by_reason": dict(reasons.most_common()),
            "examples": [str(e) for e in self.skipped[:MAX_EXAMPLES]],
        }


class Importer:
    """Base class: subclasses set ``name`` and implement ``load``.

    ``load(path, issues, **options) -> Catalog`` reads ``path`` (a file, a folder, or
    ``"-"`` where the source has a built-in default) and reports bad rows to ``issues``.
    Unknown options raise ``InputError`` naming the option.
    """

    name: str = ""
    description: str = ""
    options: tuple[str, ...] = ()

    def load(self, path: str, issues: Issues, **options: Any) -> Catalog:
        raise NotImplementedError

    def check_options(self, options: dict[str, Any]) -> None:
        unknown = sorted(k for k, v in options.items() if v is not None and k not in self.options)
        if unknown:
            allowed = ", ".join(self.options) or "none"
            raise InputError(f"source '{self.name}' does not take option(s) {', '.join(unknown)} "
                             f"(allowed: {allowed})", field=f"--{unknown[0]}")


REGISTRY: dict[str, Callable[[], Importer]] = {}


def register(cls: type[Importer]) -> type[Importer]:
    """Class decorator adding an importer to ``REGISTRY`` under ``cls.name``."""
    REGISTRY[cls.name] = cls
    return cls


def _load_builtin() -> None:
    # importing the modules runs their @register decorators
    from talkplay.sources import cpcd, mpd, music21, table, talkplaydata2  # noqa: F401


def get_importer(name: str) -> Importer:
    """The importer registered as ``name``; ``InputError`` listing the known ones otherwise."""
    _load_builtin()
    if name not in REGISTRY:
        raise InputError(f"unknown source '{name}' (known: {', '.join(sorted(REGISTRY))})", field="SOURCE")
    return REGISTRY[name]()


def source_names() -> list[str]:
    _load_builtin()
    return sorted(REGISTRY)


# --- importing into a run ------------------------------------------------------------


@dataclass
class ImportConfig:
    """What to import: ``ImportConfig(source="table", path="songs.csv", options={"map": {...}})``.

    ``tracks_only``: merge the source's tracks, not its playlists and conversations.
    """

    source: str
    path: str
    skip_invalid: bool = False
    options: dict[str, Any] = field(default_factory=dict)
    tracks_only: bool = False


def import_into_run(run: Any, cfg: ImportConfig) -> dict[str, Any]:
    """Import ``cfg.path`` with ``cfg.source`` and merge it into ``run`` (a ``Run``).

    Returns counts (read, new and total), the skip summary and timings. Nothing is
    written unless the whole input was read and validated.
    """
    info, _ = import_tracks_into_run(run, cfg)
    return info


def import_tracks_into_run(run: Any, cfg: ImportConfig) -> tuple[dict[str, Any], list[Track]]:
    """Like ``import_into_run`` but also returns the tracks that were new to the run."""
    importer = get_importer(cfg.source)
    opts = {k: v for k, v in cfg.options.items() if v is not None}
    importer.check_options(opts)
    t0 = time.perf_counter()
    issues = Issues(cfg.skip_invalid)
    new = importer.load(cfg.path, issues, **opts)
    if cfg.tracks_only:
        new = Catalog(new.tracks)
    t_read = time.perf_counter() - t0
    # load before merging so a broken existing catalog fails loudly instead of being replaced
    cat = Catalog.load(run.path) if Catalog.exists(run.path) else Catalog()
    sources = dict(run.stage("import").get("sources", {}))  # a broken run.json fails before any write
    before = set(cat.index)
    added = cat.merge(new)
    new_tracks = [t for t in new.tracks if t.id not in before]
    cat.save(run.path)
    info = {
        "source": cfg.source,
        "path": str(cfg.path),
        "options": opts,
        "read": {"tracks": len(new.tracks), "playlists": len(new.playlists),
                 "conversations": len(new.conversations)},
        "added": added,
        "total": {"tracks": len(cat.tracks), "playlists": len(cat.playlists),
                  "conversations": len(cat.conversations)},
        "skipped": issues.summary(),
        "seconds": round(time.perf_counter() - t0, 2),
        "read_seconds": round(t_read, 2),
        "run": str(run.path),
    }
    keep = ("options", "read", "added", "skipped", "seconds")
    sources[f"{cfg.source}:{cfg.path}"] = {k: info[k] for k in keep}
    run.record("import", {"sources": sources, "total": info["total"]})
    if issues.skipped:
        log.warning("skipped %d invalid record(s) of %s, e.g. %s", len(issues.skipped), cfg.path,
                    issues.skipped[0])
    log.info("imported %s: %d tracks, %d playlists, %d conversations new (%d skipped)",
             cfg.source, added["tracks"], added["playlists"], added["conversations"], len(issues.skipped))
    return info, new_tracks


# --- reading helpers shared by the importers -----------------------------------------


def add_unique(cat: Catalog, track: Track, issues: Issues, *, file: str, line: int | None = None,
               row: int | None = None) -> bool:
    """Add ``track``; a second track with the same id in one input is reported as bad input."""
    if track.id in cat.index:
        issues.report(InputError(f"duplicate track id {track.id!r}", file=file, line=line, row=row,
                                 field="id", track=track.id))
        return False
    return cat.add_track(track)


def read_text(path: Path, issues: Issues | None = None) -> str:
    """Read a UTF-8 text file; invalid bytes raise ``InputError`` naming the line."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise InputError(f"invalid UTF-8 (byte 0x{data[e.start]:02x})", file=str(path), line=line) from None


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _utf8(s: str) -> bool:
    try:
        s.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def _printable(s: str) -> str:
    return s.encode("utf-8", "backslashreplace").decode("utf-8")


def _lone_surrogate(obj: Any) -> str | None:
    """Field path of the first key or text holding a lone surrogate, else None."""
    try:  # the common case, in C: everything encodes (default=str: Parquet rows hold dates and bytes)
        json.dumps(obj, ensure_ascii=False, default=str).encode("utf-8")
        return None
    except UnicodeEncodeError:
        pass
    stack: list[tuple[Any, str]] = [(obj, "")]  # a walk without recursion finds the field
    while stack:
        o, path = stack.pop()
        if isinstance(o, str):
            if not _utf8(o):
                return path
        elif isinstance(o, dict):
            for k, v in o.items():
                p = f"{path}.{_printable(str(k))}" if path else _printable(str(k))
                if isinstance(k, str) and not _utf8(k):
                    return p
                stack.append((v, p))
        elif isinstance(o, (list, tuple)):
            stack.extend((v, f"{path}[{i}]") for i, v in enumerate(o))
    return None


def check_unicode(obj: Any, where: dict[str, Any], path: str | None = None) -> None:
    """``InputError`` if text in ``obj`` is not valid Unicode (a ``\\ud800`` escape of a lone surrogate).

    ``check_unicode(playlist, {"file": f, "row": i}, "playlists[3]")``; no output format can
    store such text, so it is caught while the record can still be skipped.
    """
    bad = _lone_surrogate(obj)
    if bad is not None:
        fld = ".".join(x for x in (path, bad) if x) or None
        raise InputError("\\u escape of a lone surrogate: not valid Unicode", field=fld, **where)


def parse_json(text: str, *, file: str, line: int | None = None, row: int | None = None,
               field: str | None = None, track: str | None = None, records: bool = False) -> Any:
    """``json.loads(text)``; broken JSON and text that is not valid Unicode raise ``InputError``.

    ``parse_json(cell, file="a.csv", line=4, field="extra")``. With ``line`` None the error
    names the line inside ``text`` (a whole file). With ``records`` the text holds many
    records and the caller runs ``check_unicode`` on each, so one bad record does not
    reject the rest.
    """
    where = {"file": file, "row": row, "track": track}
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"broken JSON: {e.msg} (column {e.colno})", line=line or e.lineno, field=field,
                         **where) from None
    except ValueError as e:  # a number of more than 4300 digits
        raise InputError(f"broken JSON: {e}", line=line, field=field, **where) from None
    except RecursionError:
        raise InputError("broken JSON: nested too deeply", line=line, field=field, **where) from None
    if not records and _SURROGATE_ESCAPE.search(text):
        check_unicode(obj, {**where, "line": line}, field)
    return obj


def read_json(path: Path, records: bool = False) -> Any:
    """Parse one JSON document; errors name the file and line. ``records``: see ``parse_json``."""
    return parse_json(read_text(path), file=str(path), records=records)


def iter_json_array(path: Path, issues: Issues,
                    check_text: bool = True) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(row_number, object)`` (1-based) from a JSON file holding an array of objects.

    A file holding one object is one row. Bad rows go to ``issues``; a file that is not
    JSON raises ``InputError``. ``check_text=False``: the caller runs ``check_unicode`` on
    each row itself (to name the track).
    """
    data = read_json(path, records=True)
    rows = data if isinstance(data, list) else [data]
    for n, r in enumerate(rows, start=1):
        try:
            if not isinstance(r, dict):
                raise InputError(f"expected a JSON object, got {type(r).__name__}", file=str(path), row=n)
            if check_text:
                check_unicode(r, {"file": str(path), "row": n})
        except InputError as e:
            issues.report(e)
            continue
        yield n, r


def iter_jsonl(path: Path, issues: Issues, check_text: bool = True) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, object)`` for each non-blank line; bad lines go to ``issues``.

    A ``.gz`` file is read through gzip. ``check_text=False``: the caller runs ``check_unicode``
    on each object itself (to name the track).
    """
    opener = gzip.open if Path(path).suffix == ".gz" else open
    with opener(path, "rb") as f:
        for n, raw in enumerate(f, start=1):
            try:
                text = raw.decode("utf-8-sig" if n == 1 else "utf-8")
            except UnicodeDecodeError as e:
                issues.report(InputError(f"invalid UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1})",
                                         file=str(path), line=n))
                continue
            if not text.strip():
                continue
            try:
                obj = parse_json(text, file=str(path), line=n, records=not check_text)
            except InputError as e:
                issues.report(e)
                continue
            if not isinstance(obj, dict):
                issues.report(InputError(f"expected a JSON object, got {type(obj).__name__}",
                                         file=str(path), line=n))
                continue
            yield n, obj


def iter_csv(path: Path, issues: Issues) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, row)`` for a CSV/TSV file with a header line.

    Rows holding invalid UTF-8 or broken quoting go to ``issues`` (the others still import).
    """
    # invalid bytes survive decoding as lone surrogates, found per row once csv has split the rows
    text = path.read_bytes().decode("utf-8-sig", errors="surrogateescape")
    header = text.split("\n", 1)[0]
    if not _utf8(header):
        raise InputError("invalid UTF-8 in the header line", file=str(path), line=1)
    # the delimiter comes from the header alone, so a data row full of tabs cannot change it
    delimiter = "\t" if path.suffix.lower() == ".tsv" or header.count("\t") > header.count(",") else ","
    # strict: a quote left open would otherwise swallow every later row into one cell, silently
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    try:
        reader.fieldnames  # noqa: B018 -- reads the header line now, so its errors are not a row's
    except csv.Error as e:
        raise InputError(f"broken CSV header: {e}", file=str(path), line=1) from None
    start: int | None = 2  # the line the next row starts on (None: unknown after a csv error)
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            if "unexpected end of data" in str(e):
                raise InputError(f"a quoted cell opened on line {start} or after is never closed",
                                 file=str(path), line=start) from None
            issues.report(InputError(f"broken CSV: {e}", file=str(path), line=start))
            start = None
            continue
        first, start = start or reader.line_num, reader.line_num + 1
        if not all(_utf8(v) for v in row.values() if isinstance(v, str)):
            issues.report(InputError("invalid UTF-8", file=str(path), line=first))
            continue
        if None in row:  # more cells than header columns
            issues.report(InputError(f"{len(row[None])} more cell(s) than header columns",
                                     file=str(path), line=first))
            continue
        yield first, {k: (v if v != "" else None) for k, v in row.items()}


def iter_parquet(path: Path, issues: Issues) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(row_number, row)`` (1-based) from a Parquet file; unreadable rows go to ``issues``."""
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises several types for a file that is not Parquet
        raise InputError(f"not a readable Parquet file: {e}", file=str(path)) from None
    n = 0
    batches = pf.iter_batches(batch_size=4096)
    while True:
        try:
            batch = next(batches, None)
        except Exception as e:  # a damaged page
            raise InputError(f"unreadable Parquet data after row {n}: {e}", file=str(path)) from None
        if batch is None:
            return
        try:
            rows = batch.to_pylist()
        except Exception:  # text that is not UTF-8: find the rows and columns, keep the rest
            rows = [_parquet_row(batch, i, n + i + 1, path, issues) for i in range(batch.num_rows)]
        for row in rows:
            n += 1
            if row is not None:
                yield n, row


def _parquet_row(batch: Any, i: int, n: int, path: Path, issues: Issues) -> dict[str, Any] | None:
    row = {}
    for name, col in zip(batch.schema.names, batch.columns, strict=True):
        try:
            row[name] = col[i].as_py()
        except Exception as e:
            issues.report(InputError(f"unreadable value: {e}", file=str(path), row=n, field=name))
            return None
    return row


def existing_path(path: str, what: str = "input") -> Path:
    """``Path(path)`` if it exists, else ``InputError`` naming it."""
    p = Path(path).expanduser()
    if not p.exists():
        raise InputError(f"{what} not found", file=str(p))
    return p


def snapshot(cat: Catalog) -> tuple[int, int, int]:
    """Sizes of the three tables, for ``rollback`` after a record fails half-way."""
    return len(cat.tracks), len(cat.playlists), len(cat.conversations)


def rollback(cat: Catalog, snap: tuple[int, int, int]) -> None:
    """Drop what a half-parsed record added, so a skipped record leaves no trace."""
    nt, npl, ncv = snap
    for t in cat.tracks[nt:]:
        del cat.index[t.id]
    del cat.tracks[nt:]
    del cat.playlists[npl:]
    del cat.conversations[ncv:]
