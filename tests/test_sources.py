"""Importing tables into a run: mapping, bad input, --skip-invalid, idempotency, atomicity."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from talkplay.catalog import Catalog
from talkplay.cli import app
from talkplay.errors import InputError
from talkplay.run import Run
from talkplay.sources import ImportConfig, Issues, get_importer, import_into_run, source_names

runner = CliRunner()

ROWS = [
    {"id": "s1", "title": "Blue in Green", "artists": ["Miles Davis"], "album": "Kind of Blue",
     "year": 1959, "tags": ["jazz", "modal"]},
    {"id": "s2", "title": "So What", "artists": ["Miles Davis"], "tags": ["jazz"]},
    {"id": "s3", "title": "Naima", "artists": ["John Coltrane"], "lyrics": None},
    {"id": "s4", "title": "Take Five", "artists": ["Dave Brubeck Quartet"], "duration": 324},
]


def write_jsonl(path: Path, rows: list, broken: dict[int, bytes] | None = None) -> Path:
    """Rows as JSONL; ``broken`` replaces line N (1-based) by raw bytes."""
    lines = [json.dumps(r).encode() for r in rows]
    for n, raw in (broken or {}).items():
        lines[n - 1] = raw
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def cli(*args: str):
    return runner.invoke(app, list(args))


def snapshot(run: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(run.glob("*.parquet"))}


def test_registry_lists_every_source():
    assert source_names() == ["cpcd", "mpd", "music21", "table", "talkplaydata2"]
    with pytest.raises(InputError, match="unknown source 'nope'"):
        get_importer("nope")


def test_jsonl_import_and_stats_json(tmp_path):
    src = write_jsonl(tmp_path / "songs.jsonl", ROWS)
    r = cli("import", "table", str(src), "--out", str(tmp_path / "run"), "--json")
    assert r.exit_code == 0, r.output
    info = json.loads(r.stdout)
    assert info["added"]["tracks"] == 4 and info["skipped"]["count"] == 0
    cat = Catalog.load(tmp_path / "run")
    t = cat.get("s1")
    assert (t.title, t.artists, t.album, t.year, t.tags) == ("Blue in Green", ["Miles Davis"], "Kind of Blue",
                                                             1959, ["jazz", "modal"])
    assert cat.get("s4").duration == 324.0
    assert Run(tmp_path / "run").stage("import")["total"]["tracks"] == 4


def test_broken_line_3_fails_with_file_and_line(tmp_path):
    """The user-facing path: a real process, exit code != 0, one clear line naming file and line."""
    src = write_jsonl(tmp_path / "broken.jsonl", ROWS, broken={3: b'{"id": "s3", "title": '})
    out = subprocess.run([sys.executable, "-m", "talkplay.cli", "import", "table", str(src),
                          "--out", str(tmp_path / "run")], capture_output=True, text=True)
    assert out.returncode != 0
    assert "broken.jsonl" in out.stderr and "line 3" in out.stderr
    assert "Traceback" not in out.stderr
    assert not Catalog.exists(tmp_path / "run")  # nothing half-written

    out = subprocess.run([sys.executable, "-m", "talkplay.cli", "import", "table", str(src),
                          "--out", str(tmp_path / "run"), "--skip-invalid"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "skipped 1 invalid record" in out.stdout and "line 3" in out.stdout
    assert Catalog.load(tmp_path / "run").ids() == ["s1", "s2", "s4"]


@pytest.mark.parametrize("row, field, words", [
    ({"title": "No id"}, "id", "missing"),
    ({"id": "x1"}, "title", "missing"),
    ({"id": "x1", "title": "   "}, "title", "empty"),
    ({"id": "x1", "title": "T", "artists": 5}, "artists", "expected a list"),
    ({"id": "x1", "title": ["a", "b"]}, "title", "expected text"),
    ({"id": "x1", "title": "T", "year": "soon"}, "year", "expected a year"),
    ({"id": "x1", "title": "T", "audio": "/no/such/file.wav"}, "audio", "does not exist"),
    ({"id": "x1", "title": "T", "lyrics": "la " * 400_000}, "lyrics", "characters long"),
    ({"id": "s1", "title": "Duplicate of the first row"}, "id", "duplicate track id"),
])
def test_bad_rows_name_file_line_and_field(tmp_path, row, field, words):
    src = write_jsonl(tmp_path / "bad.jsonl", [ROWS[0], ROWS[1], row])
    r = cli("import", "table", str(src), "--out", str(tmp_path / "run"))
    assert r.exit_code != 0
    msg = str(r.exception)
    assert isinstance(r.exception, InputError), r.output
    assert "bad.jsonl" in msg and "line 3" in msg and f"field '{field}'" in msg and words in msg

    r = cli("import", "table", str(src), "--out", str(tmp_path / "run"), "--skip-invalid", "--json")
    info = json.loads(r.stdout)
    assert info["added"]["tracks"] == 2 and info["skipped"]["count"] == 1
    assert "line 3" in info["skipped"]["examples"][0]


def test_invalid_utf8_line_is_reported(tmp_path):
    latin1 = '{"id": "s2", "title": "Caf\xe9"}'.encode("latin-1")
    src = write_jsonl(tmp_path / "latin1.jsonl", ROWS, broken={2: latin1})
    r = cli("import", "table", str(src), "--out", str(tmp_path / "run"))
    assert "latin1.jsonl" in str(r.exception) and "line 2" in str(r.exception) and "UTF-8" in str(r.exception)


def test_failed_import_leaves_run_untouched(tmp_path):
    run = tmp_path / "run"
    good = write_jsonl(tmp_path / "good.jsonl", ROWS)
    assert cli("import", "table", str(good), "--out", str(run)).exit_code == 0
    before = snapshot(run)
    meta_before = (run / "run.json").read_bytes()
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"id": "n1", "title": "New"}, {"id": "n2", "title": ""}])
    assert cli("import", "table", str(bad), "--out", str(run)).exit_code != 0
    assert snapshot(run) == before and (run / "run.json").read_bytes() == meta_before
    assert not [p for p in run.iterdir() if p.name.startswith(".")]  # no temp files left


def test_reimport_is_idempotent(tmp_path):
    run = tmp_path / "run"
    src = write_jsonl(tmp_path / "songs.jsonl", ROWS)
    assert cli("import", "table", str(src), "--out", str(run)).exit_code == 0
    first = Catalog.load(run)
    r = cli("import", "table", str(src), "--out", str(run), "--json")
    info = json.loads(r.stdout)
    assert info["added"] == {"tracks": 0, "playlists": 0, "conversations": 0}
    again = Catalog.load(run)
    assert [vars(t) for t in again.tracks] == [vars(t) for t in first.tracks]


def test_csv_with_map_flags_and_relative_audio(tmp_path):
    (tmp_path / "clips").mkdir()
    (tmp_path / "clips" / "a.wav").write_bytes(b"RIFF")
    src = tmp_path / "songs.csv"
    src.write_text("song_id,song_name,singer,genre,bpm,file\n"
                   'k1,Hallelujah,Leonard Cohen;Jeff Buckley,"folk, ballad",56,clips/a.wav\n'
                   "k2,Jolene,Dolly Parton,country,110,\n", encoding="utf-8")
    r = cli("import", "table", str(src), "--out", str(tmp_path / "run"), "--map", "id=song_id",
            "--map", "title=song_name", "--map", "artists=singer", "--map", "tags=genre",
            "--map", "audio=file", "--json")
    assert r.exit_code == 0, r.output
    cat = Catalog.load(tmp_path / "run")
    t = cat.get("k1")
    assert t.artists == ["Leonard Cohen", "Jeff Buckley"] and t.tags == ["folk", "ballad"]
    assert t.extra["bpm"] == "56" and Path(t.audio) == (tmp_path / "clips" / "a.wav").resolve()
    assert cat.get("k2").audio is None


def test_csv_bad_row_reports_its_line(tmp_path):
    src = tmp_path / "songs.csv"
    src.write_bytes(b"id,title\nk1,One\nk2,\nk3,Three\n")
    r = cli("import", "table", str(src), "--out", str(tmp_path / "run"))
    assert "songs.csv" in str(r.exception) and "line 3" in str(r.exception) and "'title'" in str(r.exception)
    src.write_bytes(b"id,title\nk1,One\nk2,Caf\xe9\nk3,Three\n")
    r = cli("import", "table", str(src), "--out", str(tmp_path / "run"), "--skip-invalid", "--json")
    info = json.loads(r.stdout)
    assert info["added"]["tracks"] == 2 and "line 3" in info["skipped"]["examples"][0]


def test_parquet_with_yaml_config(tmp_path):
    src = tmp_path / "t.parquet"
    pq.write_table(pa.table({"uid": ["p1", "p2"], "name": ["Clair de Lune", "Gymnopedie No. 1"],
                             "by": ["Debussy|Satie", "Satie"], "mood": ["calm", "calm"]}), src)
    cfg = tmp_path / "map.yaml"
    cfg.write_text("map:\n  id: uid\n  title: name\n  artists: by\n  extra.mood: mood\n"
                   "split:\n  artists: '|'\nsource: piano-set\n", encoding="utf-8")
    r = cli("import", "table", str(src), "--out", str(tmp_path / "run"), "--config", str(cfg))
    assert r.exit_code == 0, r.output
    t = Catalog.load(tmp_path / "run").get("p1")
    assert t.artists == ["Debussy", "Satie"] and t.extra == {"mood": "calm"} and t.source == "piano-set"
    # a mapped column that does not exist is bad input naming the row and the column
    r = cli("import", "table", str(src), "--out", str(tmp_path / "run"), "--map", "album=nope")
    assert "row 1" in str(r.exception) and "'nope'" in str(r.exception)


def test_unknown_option_for_source_is_rejected(tmp_path):
    src = write_jsonl(tmp_path / "songs.jsonl", ROWS)
    r = cli("import", "table", str(src), "--out", str(tmp_path / "run"), "--tracks", "x.parquet")
    assert isinstance(r.exception, InputError) and "tracks" in str(r.exception)


def test_library_api_matches_cli(tmp_path):
    src = write_jsonl(tmp_path / "songs.jsonl", ROWS)
    info = import_into_run(Run(tmp_path / "run"), ImportConfig(source="table", path=str(src)))
    assert info["total"]["tracks"] == 4
    issues = Issues(skip_invalid=True)
    cat = get_importer("table").load(str(src), issues, limit=2)
    assert cat.ids() == ["s1", "s2"] and not issues.skipped


def test_json_array_rows_are_numbered(tmp_path):
    src = tmp_path / "songs.json"
    src.write_text(json.dumps([ROWS[0], {"id": "z", "title": 7.5, "artists": {"a": 1}}]), encoding="utf-8")
    r = cli("import", "table", str(src), "--out", str(tmp_path / "run"))
    msg = str(r.exception)
    assert "songs.json" in msg and "row 2" in msg and "'artists'" in msg


# --- regressions: bad values that used to escape as Python exceptions -------------------

def test_broken_json_in_extra_column(tmp_path):
    """`{bad json` in a CSV's extra column: one clear error naming file, line, track and field, not a
    JSONDecodeError traceback; --skip-invalid skips that row and imports the others."""
    src = tmp_path / "songs.csv"
    src.write_text('id,title,extra\nk1,One,"{""bpm"": 90}"\nk2,Two,{bad json\nk3,Three,\n', encoding="utf-8")
    run = tmp_path / "run"
    out = subprocess.run([sys.executable, "-m", "talkplay.cli", "import", "table", str(src),
                          "--out", str(run)], capture_output=True, text=True)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    msg = " ".join(out.stderr.split())  # rich may wrap a long line
    assert "songs.csv, line 3, track 'k2', field 'extra': broken JSON" in msg
    assert not run.exists()

    r = cli("import", "table", str(src), "--out", str(run), "--skip-invalid", "--json")
    assert r.exit_code == 0, r.output
    info = json.loads(r.stdout)
    assert info["skipped"]["count"] == 1 and "line 3" in info["skipped"]["examples"][0]
    cat = Catalog.load(run)
    assert cat.ids() == ["k1", "k3"] and cat.get("k1").extra == {"bpm": 90}


@pytest.mark.parametrize("cell, words", [
    ("[1, 2]", "expected a JSON object, got list"),
    ('"{\\ud800}"', "lone surrogate"),
    ("[" * 5000, "broken JSON"),
])
def test_extra_column_that_is_not_an_object(tmp_path, cell, words):
    src = tmp_path / "songs.jsonl"
    write_jsonl(src, [ROWS[0], {"id": "x1", "title": "T", "extra": cell}])
    r = cli("import", "table", str(src), "--out", str(tmp_path / "run"))
    assert isinstance(r.exception, InputError), r.output
    msg = str(r.exception)
    assert "line 2" in msg and "track 'x1'" in msg and "'extra" in msg and words in msg


@pytest.mark.parametrize("row, field, words", [
    ({"id": "x1", "title": "T", "year": 1e300}, "year", "out of range"),
    ({"id": "x1", "title": "T", "year": float("inf")}, "year", "expected a year"),
    ({"id": "x1", "title": "T", "duration": float("inf")}, "duration", "expected seconds"),
    ({"id": "x1", "title": "T", "duration": True}, "duration", "expected seconds"),
    ({"id": "x1", "title": "T\ud800"}, "title", "lone surrogate"),
    ({"id": "x1", "title": "T", "audio": "x" * 300}, "audio", "does not exist"),
])
def test_bad_numbers_and_text_name_the_track(tmp_path, row, field, words):
    src = write_jsonl(tmp_path / "bad.jsonl", [ROWS[0], row])
    r = cli("import", "table", str(src), "--out", str(tmp_path / "run"))
    assert isinstance(r.exception, InputError), r.output
    msg = str(r.exception)
    assert "line 2" in msg and "track 'x1'" in msg and f"field '{field}'" in msg and words in msg


def test_csv_unclosed_quote_fails_whole_file(tmp_path):
    """A quote left open would swallow every later row into one cell; the file is refused."""
    src = tmp_path / "songs.csv"
    src.write_bytes(b'id,title\nk1,One\nk2,"Two\nk3,Three\nk4,Four\n')
    for flags in ((), ("--skip-invalid",)):
        r = cli("import", "table", str(src), "--out", str(tmp_path / "run"), *flags)
        assert isinstance(r.exception, InputError), r.output
        assert "line 3" in str(r.exception) and "never closed" in str(r.exception)
    assert not (tmp_path / "run").exists()


def test_csv_mapped_column_is_named_in_errors(tmp_path):
    src = tmp_path / "songs.csv"
    src.write_text("song_id,song_name,released\nk1,One,1999\nk2,Two,someday\n", encoding="utf-8")
    r = cli("import", "table", str(src), "--out", str(tmp_path / "run"), "--map", "id=song_id",
            "--map", "title=song_name", "--map", "year=released")
    msg = str(r.exception)
    assert "line 3" in msg and "track 'k2'" in msg and "field 'released'" in msg and "expected a year" in msg


def test_catalog_save_is_all_or_nothing(tmp_path):
    """A table that cannot be stored fails before any file is replaced."""
    run = tmp_path / "run"
    src = write_jsonl(tmp_path / "songs.jsonl", ROWS)
    assert cli("import", "table", str(src), "--out", str(run)).exit_code == 0
    before = snapshot(run)
    cat = Catalog.load(run)
    cat.tracks[0].year = 10**12  # past validation: the int32 column cannot hold it
    cat.tracks[1].title = "changed"
    with pytest.raises(InputError, match="cannot store track 's1'"):
        cat.save(run)
    assert snapshot(run) == before
    assert not [p for p in run.iterdir() if p.name.startswith(".")]  # no temp files left
