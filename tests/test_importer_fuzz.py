"""Every importer against mangled input (property-based, with hypothesis).

Each test writes valid records in the importer's real format, then mangles one of them:
a value replaced by garbage (wrong type, empty, huge or non-finite number, lone surrogate,
JSON nested too deep), a field deleted, a value wrapped in a list or turned into text, an
id copied from another record, or the raw line broken (cut short, invalid UTF-8, random
bytes). The import goes through ``import_into_run``, the function behind ``talkplay
import``, into a copy of a run that already holds a catalog. The properties:

- strict: a clean import or an ``InputError`` naming the file; on error the run directory
  is byte-identical to before;
- ``--skip-invalid``: the same first error is skipped (not raised) unless it concerns the
  whole file; every untouched record still imports; what was written loads back.

music21 is not fuzzed: it reads the corpus that ships with music21, not user files.
"""

from __future__ import annotations

import copy
import csv
import datetime
import decimal
import io
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from talkplay.catalog import Catalog
from talkplay.errors import InputError
from talkplay.run import Run
from talkplay.sources import ImportConfig, import_into_run

# TALKPLAY_FUZZ_EXAMPLES=2000 for a longer hunt; the default keeps the file to seconds
FUZZ = settings(max_examples=int(os.environ.get("TALKPLAY_FUZZ_EXAMPLES", "40")), deadline=None,
                database=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# --- the run every example imports into -------------------------------------------------

BASE_TRACKS = [{"id": "base1", "title": "Already here", "artists": ["Someone"]},
               {"id": "base2", "title": "Also here", "year": 1999}]
BASE_CPCD = {"id": "base-conv", "turns": [{"user_query": "hi", "liked_results": ["base1"]}],
             "tracks": {"base1": {"track_titles": "Already here"}}, "goal_playlist": ["base1", "base2"]}


@pytest.fixture(scope="module")
def base_run(tmp_path_factory) -> Path:
    """A run holding two tracks, one goal playlist and one conversation."""
    d = tmp_path_factory.mktemp("base")
    (d / "t.jsonl").write_text("".join(json.dumps(r) + "\n" for r in BASE_TRACKS), encoding="utf-8")
    (d / "c.jsonl").write_text(json.dumps(BASE_CPCD) + "\n", encoding="utf-8")
    run = d / "run"
    import_into_run(Run(run), ImportConfig(source="table", path=str(d / "t.jsonl")))
    import_into_run(Run(run), ImportConfig(source="cpcd", path=str(d / "c.jsonl")))
    return run


def files_of(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


def ids_of(cat: Catalog) -> dict[str, set[str]]:
    return {"tracks": set(cat.index), "playlists": {p.id for p in cat.playlists},
            "conversations": {c.id for c in cat.conversations}}


def check_import(base: Path, source: str, path: Path, expect: dict[str, set[str]],
                 options: dict[str, Any] | None = None) -> None:
    """Import ``path`` strictly and with skip-invalid into copies of ``base``; check the properties.

    ``expect`` holds the ids of the untouched records: they must be in the run after the
    skip-invalid import unless that import failed on the whole file.
    """
    base_ids = ids_of(Catalog.load(base))
    with tempfile.TemporaryDirectory() as tmp:
        strict, loose = Path(tmp) / "strict", Path(tmp) / "loose"
        shutil.copytree(base, strict)
        shutil.copytree(base, loose)
        before = files_of(base)

        strict_err = None
        try:
            import_into_run(Run(strict), ImportConfig(source, str(path), options=options or {}))
        except InputError as e:
            strict_err = e
            event("strict import: InputError")
            assert files_of(strict) == before, "a failed import changed the run"
            assert e.file and Path(e.file).resolve().is_relative_to(path.parent.resolve()), e
            str(e).encode("utf-8")  # printable on any terminal

        try:
            info = import_into_run(Run(loose), ImportConfig(source, str(path), skip_invalid=True,
                                                            options=options or {}))
        except InputError as e:
            # only an error about the whole file stops a skip-invalid import, and then strict failed too
            event("skip-invalid import: InputError about the whole file")
            assert not any(expect.values()), f"a record's error was not skipped: {e}"
            assert strict_err is not None and str(e) == str(strict_err)
            assert files_of(loose) == before, "a failed import changed the run"
            return
        skipped = info["skipped"]
        event(f"skip-invalid import: {min(skipped['count'], 2)} skipped")
        if strict_err is None:
            assert skipped["count"] == 0, skipped
        else:
            assert skipped["count"] >= 1 and skipped["examples"][0] == str(strict_err)
        got = ids_of(Catalog.load(loose))  # what was written reads back and validates
        for kind, ids in expect.items():
            assert ids <= got[kind], f"valid {kind} lost: {sorted(ids - got[kind])[:5]}"
        for kind, ids in base_ids.items():
            assert ids <= got[kind], f"{kind} already in the run were lost"
        if strict_err is None:
            strict_ids = ids_of(Catalog.load(strict))
            assert strict_ids == got


# --- values and mangling ----------------------------------------------------------------

TEXT = st.text(st.characters(codec="utf-8"), min_size=1, max_size=8).filter(str.strip)
WORD = st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=5)
DEEP = "__nested_too_deep__"  # written as 20,000 nested lists, more than any JSON parser recurses

GARBAGE = st.one_of(
    st.sampled_from([None, "", "   ", True, False, 0, -1, 10**30, 2**63, 1e308, -0.5, "x" * 1500,
                     "\ud800", "Unknown", "{bad json", [], {}, [None], [""], ["\udfff"], [[1]], {"": None},
                     {"\ud800": 1}, DEEP]),
    st.floats(),
    st.integers(),
    st.text(max_size=4),
    st.lists(st.one_of(st.integers(), st.text(max_size=3), st.none()), max_size=3),
    st.dictionaries(st.text(max_size=3), st.one_of(st.integers(), st.text(max_size=3)), max_size=2),
)


def dumps(obj: Any) -> str:
    """JSON as Python writes it by default (NaN, Infinity, \\ud800 escapes), DEEP expanded."""
    return json.dumps(obj).replace(json.dumps(DEEP), "[" * 20_000 + "]" * 20_000)


def paths(obj: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path to a value inside ``obj`` (dict keys and list indexes)."""
    out = []
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    for k, v in items:
        out.append(prefix + (k,))
        out += paths(v, prefix + (k,))
    return out


@st.composite
def mangled(draw, rec: dict[str, Any], protect: tuple = ()) -> tuple[Any, tuple]:
    """``rec`` with one value mangled; returns ``(record, path)`` (path ``()``: the whole record).

    Paths that start with an entry of ``protect`` are left alone.
    """
    choices = [p for p in paths(rec) if not any(p[:len(q)] == q for q in protect)]
    if not choices or draw(st.integers(0, 9)) == 0:
        return draw(st.one_of(GARBAGE, st.just([rec]))), ()
    path = draw(st.sampled_from(choices))
    rec = copy.deepcopy(rec)
    parent = rec
    for k in path[:-1]:
        parent = parent[k]
    key, old = path[-1], parent[path[-1]]
    op = draw(st.sampled_from(["delete", "replace", "replace", "replace", "wrap", "text", "unwrap"]))
    if op == "delete":
        del parent[key]
    elif op == "replace":
        parent[key] = draw(GARBAGE)
    elif op == "wrap":  # a list where one value is expected
        parent[key] = [old]
    elif op == "text":  # a number, list or object written as text
        parent[key] = json.dumps(old)
    elif isinstance(old, dict) and old:
        parent[key] = list(old.values())
    elif isinstance(old, list) and old:
        parent[key] = old[0]
    else:
        parent[key] = draw(GARBAGE)
    return rec, path


@st.composite
def broken_line(draw, line: bytes) -> bytes:
    """One line of a file broken: cut short, invalid UTF-8 inserted, or random bytes."""
    kind = draw(st.sampled_from(["cut", "utf8", "bytes"]))
    if kind == "cut":
        return line[:draw(st.integers(0, max(len(line) - 1, 0)))]
    if kind == "utf8":
        i = draw(st.integers(0, len(line)))
        return line[:i] + draw(st.sampled_from([b"\xff", b"\xc3(", b"\xed\xa0\x80", b"\x80"])) + line[i:]
    return draw(st.binary(max_size=30)).translate(None, b'\n\r"')


# --- table: JSONL / JSON array ----------------------------------------------------------

@st.composite
def table_rows(draw, n_min: int = 2, n_max: int = 5) -> list[dict[str, Any]]:
    rows = []
    for i in range(draw(st.integers(n_min, n_max))):
        rows.append({"id": f"t{i}-{draw(WORD)}", "title": draw(TEXT),
                     "artists": draw(st.lists(TEXT, max_size=2)), "album": draw(TEXT),
                     "year": draw(st.integers(1900, 2030)), "tags": draw(st.lists(TEXT, max_size=2)),
                     "lyrics": draw(TEXT),
                     "duration": draw(st.floats(0, 1000)), "extra": {"bpm": draw(st.integers(40, 200))}})
    return rows


@FUZZ
@given(data=st.data(), fmt=st.sampled_from(["jsonl", "json"]))
def test_table_json_fuzz(base_run, data, fmt):
    rows = data.draw(table_rows())
    k = data.draw(st.integers(0, len(rows) - 1))
    how = data.draw(st.sampled_from(["value", "value", "line", "duplicate"]))
    bad: Any = rows[k]
    if how == "value":
        bad, _ = data.draw(mangled(rows[k]))
    elif how == "duplicate":  # the id of an earlier row: this row is the duplicate
        k = max(k, 1)
        bad = {**rows[k], "id": rows[k - 1]["id"]}
    touched = {k}
    lines = [dumps(r).encode() for r in rows]
    lines[k] = dumps(bad).encode()
    if how == "line":
        lines[k] = data.draw(broken_line(lines[k]))
    with tempfile.TemporaryDirectory() as d:
        f = Path(d) / f"songs.{fmt}"
        if fmt == "jsonl":
            f.write_bytes(b"\n".join(lines) + b"\n")
        else:  # one JSON array: a broken line, or nesting no parser follows, breaks the whole file
            f.write_bytes(b"[" + b",\n".join(lines) + b"]")
            if how == "line" or DEEP in json.dumps(bad):
                touched = set(range(len(rows)))
        expect = {"tracks": {r["id"] for i, r in enumerate(rows) if i not in touched}}
        check_import(base_run, "table", f, expect)


# --- table: CSV -------------------------------------------------------------------------

CSV_COLUMNS = ["id", "title", "artists", "album", "year", "tags", "lyrics", "duration", "extra"]
CSV_GARBAGE = st.one_of(
    st.sampled_from(["", " ", "abc", "-5", "1e999", "nan", "inf", "99999999999", "{bad json", "[1, 2]",
                     "5", '"text"', '{"a": "\\ud800"}', '{"a": 1}', "[" * 5000, "x" * 1500, "2020-01-01",
                     "Unknown"]),
    st.text(max_size=6),
)


def csv_cells(r: dict[str, Any]) -> list[str]:
    return [r["id"], r["title"], ";".join(r.get("artists", [])), r.get("album", ""), str(r.get("year", "")),
            ",".join(r.get("tags", [])), r.get("lyrics", ""), str(r.get("duration", "")),
            json.dumps(r["extra"]) if "extra" in r else ""]


def csv_line(cells: list[str]) -> bytes:
    buf = io.StringIO()
    csv.writer(buf).writerow(cells)  # the default line end makes it quote cells holding \r or \n
    return buf.getvalue().removesuffix("\r\n").encode("utf-8")


@FUZZ
@given(data=st.data())
def test_table_csv_fuzz(base_run, data):
    rows = data.draw(table_rows())
    k = data.draw(st.integers(0, len(rows) - 1))
    header, cells = list(CSV_COLUMNS), [csv_cells(r) for r in rows]
    how = data.draw(st.sampled_from(["cell", "cell", "cell", "fewer", "more", "line", "duplicate", "header"]))
    # the columns read as numbers or JSON are drawn more often
    c = data.draw(st.sampled_from([0, 1, 2, 3, 4, 4, 5, 6, 7, 7, 8, 8, 8]))
    if how == "cell":
        cells[k][c] = data.draw(CSV_GARBAGE)
    elif how == "fewer":
        cells[k] = cells[k][:c]
    elif how == "more":
        cells[k] += data.draw(st.lists(CSV_GARBAGE, min_size=1, max_size=2))
    elif how == "duplicate":  # the id of an earlier row: this row is the duplicate
        k = max(k, 1)
        cells[k][0] = rows[k - 1]["id"]
    elif how == "header":  # every row reads differently
        header[c] = data.draw(st.sampled_from(["", "nonsense", "id", "title", "extra"]))
    touched = set(range(len(rows))) if how == "header" else {k}
    lines = [csv_line(header)] + [csv_line(x) for x in cells]
    if how == "line":
        line = data.draw(broken_line(lines[k + 1]))
        # a quote left open swallows the rest of the file, which fails whole (test_csv_unclosed_quote)
        lines[k + 1] = line + b'"' if line.count(b'"') % 2 else line
    with tempfile.TemporaryDirectory() as d:
        f = Path(d) / "songs.csv"
        f.write_bytes(b"\n".join(lines) + b"\n")
        expect = {"tracks": {r["id"] for i, r in enumerate(rows) if i not in touched}}
        check_import(base_run, "table", f, expect)


# --- table: Parquet ---------------------------------------------------------------------

PARQUET_CELL = {  # per column: values of the column's own type that are still bad (or fine)
    "id": [None, "", "  ", "x" * 1500],
    "title": [None, "", "  ", "x" * 1500],
    "artists": [None, [], [""], ["x" * 1500]],
    "year": [None, 10**12, -(10**12), 0],
    "duration": [None, float("nan"), float("inf"), -1.0],
    "extra": [None, "", "{bad json", "[1]", "5", '{"a": "\\ud800"}'],
}
PARQUET_COLUMN = [  # a whole column of the wrong type
    lambda n: pa.array(list(range(n))),
    lambda n: pa.array([[i] for i in range(n)]),
    lambda n: pa.array([{"a": i} for i in range(n)]),
    lambda n: pa.array([b"\xff\xfe"] * n, pa.binary()),
    lambda n: pa.array([b"\xff\xfe"] * n, pa.binary()).view(pa.string()),  # text that is not UTF-8
    lambda n: pa.array([True] * n),
    lambda n: pa.array([[["a"]]] * n),
    lambda n: pa.array([None] * n, pa.null()),
    lambda n: pa.array([datetime.date(2020, 1, 2)] * n),
    lambda n: pa.array([decimal.Decimal("1.5")] * n),
    lambda n: pa.array([[("k", "v")]] * n, pa.map_(pa.string(), pa.string())),
]


@FUZZ
@given(data=st.data())
def test_table_parquet_fuzz(base_run, data):
    rows = data.draw(table_rows())
    for r in rows:  # one shape for every row, as Parquet needs
        r.setdefault("artists", [])
        r.setdefault("year", None)
        r.setdefault("duration", None)
        r["extra"] = json.dumps(r.get("extra", {}))
    k = data.draw(st.integers(0, len(rows) - 1))
    touched = {k}
    col = data.draw(st.sampled_from(sorted(PARQUET_CELL)))
    how = data.draw(st.sampled_from(["cell", "cell", "cell", "utf8", "column", "column", "more", "drop",
                                     "file"]))
    if how == "cell":
        rows[k][col] = data.draw(st.sampled_from(PARQUET_CELL[col]))
    keep = ["id", "title", "artists", "year", "duration", "extra"]
    table = pa.Table.from_pylist([{c: r[c] for c in keep} for r in rows],
                                 schema=pa.schema([("id", pa.string()), ("title", pa.string()),
                                                   ("artists", pa.list_(pa.string())), ("year", pa.int64()),
                                                   ("duration", pa.float64()), ("extra", pa.string())]))
    if how == "utf8":
        titles = [r["title"].encode() for r in rows]
        titles[k] = b"\xff" + titles[k]
        table = table.set_column(1, "title", pa.array(titles, pa.binary()).view(pa.string()))
    elif how == "column":
        make = data.draw(st.sampled_from(PARQUET_COLUMN))
        table = table.set_column(keep.index(col), col, make(len(rows)))
        touched = set(range(len(rows)))
    elif how == "more":  # a column the catalog does not know, of any type
        table = table.append_column(data.draw(st.sampled_from(["mood", "extra.x", "artist", "genre"])),
                                    data.draw(st.sampled_from(PARQUET_COLUMN))(len(rows)))
        touched = set(range(len(rows)))  # an alias column (artist, genre) of a wrong type breaks every row
    elif how == "drop":
        table = table.drop_columns([col])
        touched = set(range(len(rows))) if col in ("id", "title") else set()
    with tempfile.TemporaryDirectory() as d:
        f = Path(d) / "songs.parquet"
        pq.write_table(table, f)
        if how == "file":
            raw = f.read_bytes()
            f.write_bytes(raw[:data.draw(st.integers(0, len(raw) - 1))])
            touched = set(range(len(rows)))
        expect = {"tracks": {r["id"] for i, r in enumerate(rows) if i not in touched}}
        check_import(base_run, "table", f, expect)


# --- CPCD -------------------------------------------------------------------------------

TRACK_POOL = [f"yt{i:02d}" for i in range(8)]  # shared between records, as in the real data


@st.composite
def cpcd_records(draw) -> list[dict[str, Any]]:
    recs = []
    for i in range(draw(st.integers(2, 4))):
        tids = draw(st.lists(st.sampled_from(TRACK_POOL), min_size=1, max_size=3, unique=True))
        recs.append({
            "id": f"c{i}-{draw(WORD)}",
            "turns": [{"user_query": draw(TEXT), "system_response": draw(TEXT),
                       "search_queries": [draw(TEXT)], "search_results": [tids], "liked_results": tids[:1],
                       "disliked_results": tids[1:]}
                      for _ in range(draw(st.integers(1, 2)))],
            "tracks": {t: {"track_titles": f"Song {t}", "track_artists": [draw(TEXT)],
                           "track_release_titles": draw(TEXT), "track_ids": t} for t in tids},
            "goal_playlist": tids,
        })
    return recs


@FUZZ
@given(data=st.data())
def test_cpcd_fuzz(base_run, data):
    recs = data.draw(cpcd_records())
    k = data.draw(st.integers(0, len(recs) - 1))
    how = data.draw(st.sampled_from(["value", "value", "value", "line", "duplicate"]))
    bad: Any = recs[k]
    if how == "value":
        bad, _ = data.draw(mangled(recs[k]))
    elif how == "duplicate":  # the id of an earlier record: this record is the duplicate
        k = max(k, 1)
        bad = {**recs[k], "id": recs[k - 1]["id"]}
    lines = [dumps(r).encode() for r in recs]
    lines[k] = dumps(bad).encode()
    if how == "line":
        lines[k] = data.draw(broken_line(lines[k]))
    untouched = [r for i, r in enumerate(recs) if i != k]
    expect = {"conversations": {r["id"] for r in untouched},
              "playlists": {f"cpcd:goal:{r['id']}" for r in untouched},
              "tracks": {t for r in untouched for t in r["tracks"]}}
    with tempfile.TemporaryDirectory() as d:
        f = Path(d) / "cpcd.jsonl"
        f.write_bytes(b"\n".join(lines) + b"\n")
        check_import(base_run, "cpcd", f, expect)


# --- TalkPlayData 2: raw chat.json sessions ---------------------------------------------

@st.composite
def tpd2_track(draw, tid: str) -> dict[str, Any]:
    return {"track_id": tid, "title": draw(TEXT), "artist": draw(TEXT), "album": draw(TEXT),
            "lyrics": draw(TEXT), "tags": draw(st.lists(TEXT, max_size=2)), "album_art_path": None,
            "duration": draw(st.none() | st.floats(1, 600)),
            "spotify_track_release_date": f"{draw(st.integers(1950, 2024))}-01-02",
            "tempo": f"{draw(st.floats(40, 200)):.2f}", "key": "D# minor", "chord": "D#:min, G#:min",
            "popularity": str(draw(st.integers(0, 100)))}


@st.composite
def tpd2_session(draw) -> dict[str, Any]:
    tids = draw(st.lists(st.sampled_from(TRACK_POOL), min_size=2, max_size=4, unique=True))
    tracks = {t: draw(tpd2_track(t)) for t in tids}
    return {
        "metadata": {"num_turns": 2},
        "conversation_goal": {"category": "D", "listener_goal": draw(TEXT), "queries": {"initial": {}}},
        "listener_profile": {"age_group": "20s", "country": draw(TEXT), "success": True, "code": "200"},
        "session_context": {"listener_tracks": [tracks[t] for t in tids[:2]],
                            "recommendation_pool_tracks": [tracks[t] for t in tids]},
        "conversation_turns": [{
            "turn_number": n + 1,
            "listener_turn": {"message": draw(TEXT), "thought": "", "goal_progress_assessment": None},
            "recsys_turn": {"message": draw(TEXT), "thought": draw(TEXT), "track": tracks[tids[n]]},
        } for n in range(2)],
    }


@FUZZ
@given(data=st.data())
def test_talkplaydata2_chat_fuzz(base_run, data):
    sessions = data.draw(st.lists(tpd2_session(), min_size=2, max_size=3))
    k = data.draw(st.integers(0, len(sessions) - 1))
    how = data.draw(st.sampled_from(["value", "value", "value", "value", "file"]))
    raw = [dumps(s).encode() for s in sessions]
    if how == "value":
        bad, _ = data.draw(mangled(sessions[k], protect=(("metadata",),)))
        raw[k] = dumps(bad).encode()
    else:
        raw[k] = data.draw(broken_line(raw[k]))
    sids = [f"{100 + i}_2019-02-15" for i in range(len(sessions))]
    untouched = [(sid, s) for i, (sid, s) in enumerate(zip(sids, sessions, strict=True)) if i != k]
    expect = {"conversations": {sid for sid, _ in untouched},
              "playlists": {f"talkplaydata2:listener:{sid}" for sid, _ in untouched},
              "tracks": {t["track_id"] for _, s in untouched
                         for t in s["session_context"]["recommendation_pool_tracks"]}}
    with tempfile.TemporaryDirectory() as d:
        folder = Path(d) / "tpd2"
        folder.mkdir()
        for sid, text in zip(sids, raw, strict=True):
            (folder / f"{sid}.chat.json").write_bytes(text)
        check_import(base_run, "talkplaydata2", folder, expect)


# --- TalkPlayData 2: flat schema with a track table -------------------------------------

@st.composite
def tpd2_flat(draw) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    tracks = [draw(tpd2_track(t)) for t in TRACK_POOL[:4]]
    for t in tracks:  # the published table's spelling
        t["track_name"], t["artist_name"], t["release_date"] = (t.pop("title"), t.pop("artist"),
                                                                 t.pop("spotify_track_release_date"))
    sessions = []
    for i in range(draw(st.integers(2, 3))):
        msgs = []
        for n in (1, 2):
            msgs += [{"turn_number": n, "role": "user", "content": draw(TEXT), "thought": ""},
                     {"turn_number": n, "role": "music", "content": draw(st.sampled_from(TRACK_POOL[:5])),
                      "thought": draw(TEXT)},
                     {"turn_number": n, "role": "assistant", "content": draw(TEXT), "thought": ""}]
        sessions.append({"session_id": f"{i}__2011-12-26", "user_id": str(i), "session_date": "2011-12-26",
                         "user_profile": {"age_group": "20s"}, "conversation_goal": {"category": "H"},
                         "conversations": msgs})
    return sessions, tracks


@FUZZ
@given(data=st.data())
def test_talkplaydata2_flat_fuzz(base_run, data):
    sessions, tracks = data.draw(tpd2_flat())
    which = data.draw(st.sampled_from(["sessions", "tracks"]))
    recs = sessions if which == "sessions" else tracks
    k = data.draw(st.integers(0, len(recs) - 1))
    how = data.draw(st.sampled_from(["value", "value", "value", "line", "duplicate"]))
    id_key = "session_id" if which == "sessions" else "track_id"
    lines = [dumps(r).encode() for r in recs]
    if how == "value":
        lines[k] = dumps(data.draw(mangled(recs[k]))[0]).encode()
    elif how == "duplicate":  # the id of an earlier record: this record is the duplicate
        k = max(k, 1)
        lines[k] = dumps({**recs[k], id_key: recs[k - 1][id_key]}).encode()
    else:
        lines[k] = data.draw(broken_line(lines[k]))
    expect = {"conversations": {s["session_id"] for i, s in enumerate(sessions)
                                if which == "tracks" or i != k},
              "tracks": {t["track_id"] for i, t in enumerate(tracks) if which == "sessions" or i != k}}
    with tempfile.TemporaryDirectory() as d:
        s_file, t_file = Path(d) / "sessions.jsonl", Path(d) / "track_metadata.jsonl"
        good_sessions = [dumps(x).encode() for x in sessions]
        good_tracks = [dumps(x).encode() for x in tracks]
        s_file.write_bytes(b"\n".join(good_sessions if which == "tracks" else lines) + b"\n")
        t_file.write_bytes(b"\n".join(lines if which == "tracks" else good_tracks) + b"\n")
        check_import(base_run, "talkplaydata2", s_file, expect, options={"tracks": str(t_file)})


# --- MPD --------------------------------------------------------------------------------

URIS = [f"spotify:track:{i:022d}" for i in range(10)]


@st.composite
def mpd_playlists(draw, pids: range) -> list[dict[str, Any]]:
    pls = []
    for pid in pids:
        uris = draw(st.lists(st.sampled_from(URIS), min_size=1, max_size=4, unique=True))
        tr = [{"pos": pos, "artist_name": draw(TEXT), "track_uri": u, "artist_uri": "spotify:artist:1",
               "track_name": f"Track {u[-2:]}", "album_uri": "spotify:album:1", "album_name": draw(TEXT),
               "duration_ms": draw(st.integers(1000, 600_000))} for pos, u in enumerate(uris)]
        pls.append({"name": draw(TEXT), "collaborative": "false", "pid": pid, "modified_at": 1493424000,
                    "num_tracks": len(tr), "tracks": draw(st.permutations(tr))})
    return pls


@FUZZ
@given(data=st.data())
def test_mpd_fuzz(base_run, data):
    a, b = data.draw(mpd_playlists(range(0, 3))), data.draw(mpd_playlists(range(3, 5)))
    slice_a: Any = {"info": {"slice": "0-2", "version": "v1"}, "playlists": a}
    how = data.draw(st.sampled_from(["value", "value", "value", "file", "duplicate"]))
    k = data.draw(st.integers(0, len(a) - 1))
    touched = {k}
    if how == "value":
        slice_a, path = data.draw(mangled(slice_a, protect=(("info",),)))
        if len(path) < 2 or DEEP in json.dumps(slice_a):  # the slice itself, or nesting no parser follows
            touched = set(range(len(a)))
        else:
            touched = {path[1]}
    elif how == "duplicate":  # the pid of an earlier playlist: this playlist is the duplicate
        k = max(k, 1)
        touched = {k}
        a[k] = {**a[k], "pid": a[k - 1]["pid"]}
    text_a = dumps(slice_a).encode()
    if how == "file":
        text_a = data.draw(broken_line(text_a))
        touched = set(range(len(a)))
    untouched = [p for i, p in enumerate(a) if i not in touched] + b
    expect = {"playlists": {f"mpd:{p['pid']}" for p in untouched},
              "tracks": {t["track_uri"] for p in untouched for t in p["tracks"]}}
    with tempfile.TemporaryDirectory() as d:
        folder = Path(d) / "mpd"
        folder.mkdir()
        (folder / "mpd.slice.0-2.json").write_bytes(text_a)
        (folder / "mpd.slice.3-4.json").write_text(dumps({"info": {}, "playlists": b}), encoding="utf-8")
        check_import(base_run, "mpd", folder, expect)
