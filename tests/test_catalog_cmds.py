"""`talkplay catalog stats` and `talkplay catalog add` on real runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from talkplay.catalog import Catalog
from talkplay.cli import app
from talkplay.errors import InputError

runner = CliRunner()


def cli(*args: str):
    return runner.invoke(app, list(args))


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def folk_rows(n: int, start: int = 0) -> list[dict]:
    moods = ["calm", "lively", "sad", "festive"]
    return [{"id": f"f{i}", "title": f"Tune number {i}", "artists": [f"Fiddler {i % 5}"],
             "tags": [moods[i % 4], "folk"], "lyrics": "over the hills" if i % 3 == 0 else None,
             "album": f"Book {i % 2}"} for i in range(start, start + n)]


@pytest.fixture
def mixed_run(tmp_path, cpcd_file) -> Path:
    run = tmp_path / "run"
    assert cli("import", "cpcd", str(cpcd_file), "--out", str(run), "--limit", "20").exit_code == 0
    r = cli("import", "music21", "-", "--out", str(run), "--collections", "bach", "--limit", "80")
    assert r.exit_code == 0, r.output
    return run


def test_stats_json_table_and_plot(mixed_run):
    r = cli("catalog", "stats", str(mixed_run), "--json")
    assert r.exit_code == 0, r.output
    stats = json.loads(r.stdout)  # exactly one JSON object on stdout
    cat = Catalog.load(mixed_run)
    assert stats["tracks"] == len(cat) and stats["conversations"] == 20
    assert stats["playlists"] == len(cat.playlists)
    assert set(stats["coverage"]) == {"title", "artists", "album", "year", "tags", "lyrics", "key", "audio",
                                      "playlist"}
    n_bach = sum(t.source == "music21" for t in cat.tracks)
    assert stats["coverage"]["audio"] == n_bach  # CPCD has no local audio; every score renders on demand
    assert stats["coverage"]["lyrics"] == sum(bool(t.lyrics) for t in cat.tracks) > 50
    assert stats["sources"] == {"cpcd": len(cat) - n_bach, "music21": n_bach}
    png = Path(stats["plot"])
    assert png == mixed_run / "catalog_stats.png" and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the human table goes to the terminal
    r = cli("catalog", "stats", str(mixed_run), "--no-plot")
    assert "coverage" in r.output and "lyrics" in r.output


def test_stats_sample_render(tmp_path):
    run = tmp_path / "run"
    r = cli("import", "music21", "-", "--out", str(run), "--collections", "bach", "--limit", "5")
    assert r.exit_code == 0, r.output
    stats = json.loads(cli("catalog", "stats", str(run), "--json", "--sample-render", "2").stdout)
    assert stats["render_sample"]["tried"] == 2 and stats["render_sample"]["ok"] == 2
    assert len(list((run / "cache" / "audio").glob("*.wav"))) == 2


def test_stats_without_catalog_is_a_clear_error(tmp_path):
    r = cli("catalog", "stats", str(tmp_path / "empty"))
    assert isinstance(r.exception, InputError) and "talkplay import" in str(r.exception)


def test_add_tracks_to_existing_run(tmp_path):
    run = tmp_path / "run"
    first = write_jsonl(tmp_path / "a.jsonl", folk_rows(6))
    assert cli("import", "table", str(first), "--out", str(run)).exit_code == 0
    new = write_jsonl(tmp_path / "b.csv", [])
    new.write_text("song_id,name,by\nn1,Morning Dew,Fiddler 9\nf0,Already there,Fiddler 0\nn2,,Nobody\n",
                   encoding="utf-8")
    r = cli("catalog", "add", str(run), str(new), "--map", "id=song_id", "--map", "artists=by", "--json")
    assert isinstance(r.exception, InputError) and "line 4" in str(r.exception)
    assert len(Catalog.load(run)) == 6  # nothing changed
    r = cli("catalog", "add", str(run), str(new), "--map", "id=song_id", "--map", "artists=by",
            "--skip-invalid", "--json")
    info = json.loads(r.stdout)
    assert info["new_track_ids"] == ["n1"] and info["skipped"]["count"] == 1 and info["tokenizer"] is None
    cat = Catalog.load(run)
    assert cat.get("n1").title == "Morning Dew" and cat.get("f0").title == "Tune number 0"  # first one kept


def test_add_needs_an_existing_catalog(tmp_path):
    r = cli("catalog", "add", str(tmp_path / "nothing"), str(write_jsonl(tmp_path / "a.jsonl", folk_rows(2))))
    assert isinstance(r.exception, InputError) and "talkplay import" in str(r.exception)
    assert not (tmp_path / "nothing" / "catalog.parquet").exists()


@pytest.mark.slow
def test_add_gives_new_tracks_music_tokens(tmp_path):
    """With a tokenizer in the run, added tracks get codes from the existing codebooks."""
    from talkplay.encoders import EncodeConfig, encode_run
    from talkplay.run import Run
    from talkplay.tokenizer import MusicTokenizer, TokenizerConfig, tokenize_run

    run = tmp_path / "run"
    first = write_jsonl(tmp_path / "a.jsonl", folk_rows(40))
    assert cli("import", "table", str(first), "--out", str(run)).exit_code == 0
    encode_run(Run(run), EncodeConfig(modalities=("tags", "metadata")))
    tokenize_run(Run(run), TokenizerConfig(k=4))
    before = MusicTokenizer.load(Run(run).tokenizer_dir)
    vocab = list(before.vocab)
    more = write_jsonl(tmp_path / "b.jsonl", folk_rows(3, start=100))
    r = cli("catalog", "add", str(run), str(more), "--json")
    assert r.exit_code == 0, r.output
    info = json.loads(r.stdout)
    assert info["tokenizer"]["added"] == 3
    after = MusicTokenizer.load(Run(run).tokenizer_dir)
    assert list(after.vocab) == vocab  # no new tokens
    assert after.track_tokens("f0") == before.track_tokens("f0")  # existing codes unchanged
    assert after.decode(after.track_tokens("f100")) == "f100"
