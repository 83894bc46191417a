"""The dataset importers: CPCD, TalkPlayData 2 (raw and flat), MPD slices.

Real-data tests use the shared files and skip when they are absent; the other tests write
small files in each dataset's real format.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from talkplay.catalog import Catalog
from talkplay.cli import app
from talkplay.errors import InputError
from talkplay.sources import Issues, get_importer

runner = CliRunner()


def cli(*args: str):
    return runner.invoke(app, list(args))


# --- CPCD -------------------------------------------------------------------------------

def test_cpcd_real_file_gives_400_conversations(cpcd_file, tmp_path):
    run = tmp_path / "run"
    r = cli("import", "cpcd", str(cpcd_file), "--out", str(run), "--json")
    assert r.exit_code == 0, r.output
    r = cli("catalog", "stats", str(run), "--json", "--no-plot")
    stats = json.loads(r.stdout)
    assert stats["conversations"] == 400 and stats["tracks"] >= 7500
    assert stats["playlist_sources"] == {"cpcd:goal": stats["playlists"]}
    cat = Catalog.load(run)
    # liked order and turn order exactly as in the file
    first = json.loads(cpcd_file.open(encoding="utf-8").readline())
    conv = next(c for c in cat.conversations if c.id == first["id"])
    assert [t.user for t in conv.turns] == [t["user_query"] for t in first["turns"]]
    assert [t.liked for t in conv.turns] == [t["liked_results"] for t in first["turns"]]
    assert conv.goal == first["goal_playlist"]
    # every recommended id has metadata in the catalog
    assert all(tid in cat.index for c in cat.conversations for t in c.turns for tid in t.recommended)


def cpcd_record(cid: str, liked: list[str], disliked: list[str], meta: list[str]) -> dict:
    return {
        "id": cid,
        "turns": [
            {"user_query": "party songs please", "system_response": "Sure, any genre?", "search_queries": [],
             "search_results": [], "liked_results": [], "disliked_results": []},
            {"user_query": "upbeat pop", "system_response": "Here you go", "search_queries": ["pop hits"],
             "search_results": [liked + disliked + ["nometa1"]], "liked_results": liked,
             "disliked_results": disliked},
        ],
        "tracks": {t: {"track_titles": f"Song {t}", "track_artists": [f"Artist {t}"],
                       "track_release_titles": f"Album {t}", "track_ids": t} for t in meta},
        "goal_playlist": liked + ["g9"],
    }


def test_cpcd_mapping(tmp_path):
    f = tmp_path / "mini.jsonl"
    rec = cpcd_record("c1", liked=["b", "a"], disliked=["d"], meta=["a", "b", "d"])
    f.write_text(json.dumps(rec) + "\n", encoding="utf-8")
    cat = get_importer("cpcd").load(str(f), Issues())
    conv = cat.conversations[0]
    t = conv.turns[1]
    assert (t.user, t.assistant, t.liked, t.disliked) == ("upbeat pop", "Here you go", ["b", "a"], ["d"])
    assert t.recommended == ["b", "a", "d"]
    assert t.extra == {"search_queries": ["pop hits"], "search_results": [["b", "a", "d", "nometa1"]]}
    assert conv.goal == ["b", "a", "g9"] and conv.source == "cpcd"
    assert cat.playlists[0].source == "cpcd:goal" and cat.playlists[0].track_ids == conv.goal
    assert cat.get("a").title == "Song a" and cat.get("a").artists == ["Artist a"]


def test_cpcd_bad_record_names_line_and_field(tmp_path):
    f = tmp_path / "mini.jsonl"
    good = cpcd_record("c1", ["a"], [], ["a"])
    bad = cpcd_record("c2", ["x"], [], ["x"])
    bad["turns"][1]["liked_results"] = "x"
    dup = cpcd_record("c1", ["a"], [], ["a"])
    f.write_text("\n".join(json.dumps(r) for r in (good, bad, dup)) + "\n", encoding="utf-8")
    try:
        get_importer("cpcd").load(str(f), Issues())
        raise AssertionError("expected InputError")
    except InputError as e:
        assert "mini.jsonl" in str(e) and "line 2" in str(e) and "turns[1].liked_results" in str(e)
    issues = Issues(skip_invalid=True)
    cat = get_importer("cpcd").load(str(f), issues)
    assert [c.id for c in cat.conversations] == ["c1"]
    assert "x" not in cat.index  # the skipped record's tracks are rolled back
    assert [e.line for e in issues.skipped] == [2, 3] and "duplicate conversation" in issues.skipped[1].reason


# --- TalkPlayData 2 -----------------------------------------------------------------------

def test_tpd2_raw_sessions(tpd2_dir, tmp_path):
    r = cli("import", "talkplaydata2", str(tpd2_dir), "--out", str(tmp_path / "run"), "--json")
    assert r.exit_code == 0, r.output
    cat = Catalog.load(tmp_path / "run")
    assert len(cat.conversations) == 3
    raw = json.loads(next(tpd2_dir.glob("*.chat.json")).read_text(encoding="utf-8"))
    sid = next(tpd2_dir.glob("*.chat.json")).name[: -len(".chat.json")]
    conv = next(c for c in cat.conversations if c.id == sid)
    turns = raw["conversation_turns"]
    assert [t.user for t in conv.turns] == [t["listener_turn"]["message"] for t in turns]
    assert [t.recommended for t in conv.turns] == [[t["recsys_turn"]["track"]["track_id"]] for t in turns]
    assert conv.turns[0].extra["thought"] == turns[0]["recsys_turn"]["thought"]
    ctx = raw["session_context"]
    assert conv.extra["pool"] == [t["track_id"] for t in ctx["recommendation_pool_tracks"]]
    assert conv.extra["listener_tracks"] == [t["track_id"] for t in ctx["listener_tracks"]]
    session = next(p for p in cat.playlists if p.id == f"talkplaydata2:listener:{sid}")
    assert session.track_ids == conv.extra["listener_tracks"] and session.source == "talkplaydata2:listener"
    assert conv.profile["top_1_genre"] == raw["listener_profile"]["top_1_genre"]
    assert conv.profile["conversation_goal"]["listener_goal"] == raw["conversation_goal"]["listener_goal"]
    src = ctx["recommendation_pool_tracks"][0]
    t = cat.get(src["track_id"])
    assert t.title == src["title"] and t.artists == [src["artist"]] and t.tags == src["tags"]
    assert t.lyrics and t.year == int(src["spotify_track_release_date"][:4])
    assert t.extra["tempo"] == float(src["tempo"]) and t.extra["key"] == src["key"]
    assert t.extra["popularity"] == float(src["popularity"])


def test_tpd2_flat_schema_with_track_table(tmp_path):
    tracks = [{"track_id": f"sp{i}", "title": f"Song {i}", "artist": "Band", "album": "LP",
               "tags": ["indie", "chill"], "lyrics": "la la", "release_date": "2015-01-01",
               "tempo": "120.5", "key": "C major", "popularity": "40"} for i in range(4)]
    pq.write_table(pa.Table.from_pylist(tracks), tmp_path / "track_metadata.parquet")
    msgs = []
    for n in (1, 2):
        msgs += [{"turn_number": n, "role": "user", "content": f"request {n}", "thought": ""},
                 {"turn_number": n, "role": "music", "content": f"sp{n}", "thought": f"why {n}"},
                 {"turn_number": n, "role": "assistant", "content": f"reply {n}", "thought": ""}]
    session = {"session_id": "42__2011-12-26", "user_id": "42", "session_date": "2011-12-26",
               "user_profile": {"age_group": "20s", "country_name": "Brazil"},
               "conversation_goal": {"category": "H", "listener_goal": "discover artists",
                                     "specificity": "LL"},
               "conversations": msgs,
               "goal_progress_assessments": [{"goal_progress_assessment": None, "turn_number": 1}]}
    sessions = tmp_path / "train.jsonl"
    sessions.write_text(json.dumps(session) + "\n" + '{"session_id": "bad", "conversations": 5}\n',
                        encoding="utf-8")
    issues = Issues(skip_invalid=True)
    cat = get_importer("talkplaydata2").load(str(sessions), issues)
    assert len(cat.tracks) == 4 and cat.get("sp1").extra["tempo"] == 120.5 and cat.get("sp1").year == 2015
    conv = cat.conversations[0]
    assert [(t.user, t.recommended, t.assistant) for t in conv.turns] == [
        ("request 1", ["sp1"], "reply 1"), ("request 2", ["sp2"], "reply 2")]
    assert conv.turns[0].extra["thought"] == "why 1"
    assert conv.profile["country_name"] == "Brazil" and conv.profile["conversation_goal"]["category"] == "H"
    assert len(issues.skipped) == 1
    assert issues.skipped[0].line == 2 and issues.skipped[0].field == "conversations"


# --- MPD ---------------------------------------------------------------------------------

def mpd_slice(path: Path, pids: range) -> Path:
    """A slice file in the Million Playlist Dataset's format."""
    def track(pos: int, n: int) -> dict:
        return {"pos": pos, "artist_name": f"Artist {n % 3}", "track_uri": f"spotify:track:{n:022d}",
                "artist_uri": f"spotify:artist:{n % 3:022d}", "track_name": f"Track {n}",
                "album_uri": f"spotify:album:{n % 5:022d}", "duration_ms": 200000 + n,
                "album_name": f"Album {n % 5}"}
    playlists = []
    for pid in pids:
        tr = [track(pos, pid + pos) for pos in range(4)]
        playlists.append({"name": f"mix {pid}", "collaborative": "false", "pid": pid,
                          "modified_at": 1493424000,
                          "num_tracks": len(tr), "num_albums": 3, "num_followers": 1, "tracks": tr[::-1],
                          "num_edits": 2, "duration_ms": 800000, "num_artists": 3})
    lo, hi = pids.start, pids.stop - 1
    f = path / f"mpd.slice.{lo}-{hi}.json"
    f.write_text(json.dumps({"info": {"generated_on": "2017-12-03 08:41:42.057563", "slice": f"{lo}-{hi}",
                                      "version": "v1"}, "playlists": playlists}), encoding="utf-8")
    return f


def test_mpd_slices(tmp_path):
    data = tmp_path / "mpd"
    data.mkdir()
    mpd_slice(data, range(0, 3))
    mpd_slice(data, range(3, 6))
    r = cli("import", "mpd", str(data), "--out", str(tmp_path / "run"), "--json")
    assert r.exit_code == 0, r.output
    cat = Catalog.load(tmp_path / "run")
    assert len(cat.playlists) == 6 and all(p.source == "mpd" for p in cat.playlists)
    p1 = next(p for p in cat.playlists if p.id == "mpd:1")
    assert p1.name == "mix 1"
    assert p1.track_ids == [f"spotify:track:{n:022d}" for n in (1, 2, 3, 4)]  # in "pos" order
    assert len(cat.tracks) == 9  # tracks shared between playlists are stored once
    t = cat.get(f"spotify:track:{2:022d}")
    assert (t.title, t.artists, t.album, t.duration) == ("Track 2", ["Artist 2"], "Album 2", 200.002)
    # a slice with a broken playlist: named by file, row and field
    bad = json.loads((data / "mpd.slice.3-5.json").read_text())
    bad["playlists"][1]["tracks"][0]["track_name"] = ""
    (data / "mpd.slice.3-5.json").write_text(json.dumps(bad))
    r = cli("import", "mpd", str(data), "--out", str(tmp_path / "run2"))
    assert "mpd.slice.3-5.json" in str(r.exception) and "row 1" in str(r.exception)


# --- regressions: wrong shapes in TalkPlayData 2 and MPD records ---------------------------

def tpd2_track(tid: str) -> dict:
    return {"track_id": tid, "title": f"Song {tid}", "artist": "Band", "album": "LP", "lyrics": "la",
            "tags": ["indie"], "duration": None, "spotify_track_release_date": "2012-11-13",
            "tempo": "140.60", "key": "D# minor", "popularity": "56"}


def tpd2_chat(prefix: str) -> dict:
    tracks = [tpd2_track(f"{prefix}{i}") for i in range(3)]
    chat = {"conversation_goal": {"category": "D", "listener_goal": "relax"},
            "listener_profile": {"age_group": "20s", "success": True},
            "session_context": {"listener_tracks": tracks[:2], "recommendation_pool_tracks": tracks},
            "conversation_turns": [{"turn_number": 1, "listener_turn": {"message": "something calm"},
                                    "recsys_turn": {"message": "try this", "thought": "calm",
                                                    "track": tracks[2]}}]}
    return json.loads(json.dumps(chat))  # no shared objects: a change lands in one place


def _set(obj: dict, path: tuple, value) -> None:
    for k in path[:-1]:
        obj = obj[k]
    obj[path[-1]] = value


TURN = "conversation_turns[0]"


@pytest.mark.parametrize("path, value, field, track", [
    (("listener_profile",), ["not", "an", "object"], "listener_profile", None),
    (("conversation_goal",), "relax", "conversation_goal", None),
    (("conversation_turns", 0, "recsys_turn"), "try this", f"{TURN}.recsys_turn", None),
    (("conversation_turns", 0, "listener_turn", "message"), ["a"], f"{TURN}.listener_turn.message", None),
    (("session_context", "listener_tracks"), 5, "session_context.listener_tracks", None),
    (("session_context", "listener_tracks", 1, "title"), ["A", "B"],
     "session_context.listener_tracks[1].title", "bx1"),
    (("session_context", "recommendation_pool_tracks", 2, "tempo"), "fast",
     "session_context.recommendation_pool_tracks[2].tempo", "bx2"),
    (("session_context", "listener_tracks", 0, "spotify_track_release_date"), {"y": 2012},
     "session_context.listener_tracks[0].spotify_track_release_date", "bx0"),
    (("conversation_turns", 0, "recsys_turn", "track"), {**tpd2_track("bx9"), "duration": "long"},
     f"{TURN}.recsys_turn.track.duration", "bx9"),
])
def test_tpd2_chat_wrong_shape_names_file_field_and_track(tmp_path, path, value, field, track):
    """Used to escape as AttributeError/TypeError/ValueError; now one InputError, and
    --skip-invalid skips that session only."""
    good, bad = tpd2_chat("sp"), tpd2_chat("bx")
    _set(bad, path, value)
    (tmp_path / "1_2019-01-01.chat.json").write_text(json.dumps(good), encoding="utf-8")
    (tmp_path / "2_2019-01-01.chat.json").write_text(json.dumps(bad), encoding="utf-8")
    with pytest.raises(InputError) as e:
        get_importer("talkplaydata2").load(str(tmp_path), Issues())
    assert e.value.file.endswith("2_2019-01-01.chat.json") and e.value.field == field
    assert e.value.track == track and (track is None or f"track '{track}'" in str(e.value))
    issues = Issues(skip_invalid=True)
    cat = get_importer("talkplaydata2").load(str(tmp_path), issues)
    assert [c.id for c in cat.conversations] == ["1_2019-01-01"] and len(issues.skipped) == 1
    assert not [t for t in cat.ids() if t.startswith("bx")]  # the skipped session's tracks are rolled back


@pytest.mark.parametrize("key, value, field", [
    ("user_profile", "abc", "user_profile"),
    ("conversation_goal", [1, 2], "conversation_goal"),
    ("session_id", "", "session_id"),
    ("conversations", [{"turn_number": float("inf"), "role": "user", "content": "hi"}],
     "conversations[0].turn_number"),
    ("conversations", [{"turn_number": 1, "role": "music", "content": ["sp1"]}], "conversations[0].content"),
    ("conversations", [{"turn_number": 1, "role": "user", "content": {"text": "hi"}}],
     "conversations[0].content"),
])
def test_tpd2_flat_wrong_shape_names_line_and_field(tmp_path, key, value, field):
    good = {"session_id": "s1", "user_profile": {"age_group": "20s"}, "conversation_goal": {"category": "H"},
            "conversations": [{"turn_number": 1, "role": "user", "content": "hi"},
                              {"turn_number": 1, "role": "music", "content": "sp1"}]}
    bad = {**good, "session_id": "s2", key: value}
    f = tmp_path / "sessions.jsonl"
    f.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n", encoding="utf-8")
    with pytest.raises(InputError) as e:
        get_importer("talkplaydata2").load(str(f), Issues())
    assert "sessions.jsonl, line 2" in str(e.value) and e.value.field == field
    cat = get_importer("talkplaydata2").load(str(f), Issues(skip_invalid=True))
    assert [c.id for c in cat.conversations] == ["s1"]


def test_tpd2_flat_track_table_names_track(tmp_path):
    tracks = tmp_path / "track_metadata.jsonl"
    rows = [tpd2_track("sp1"), {**tpd2_track("sp2"), "popularity": [56]}, tpd2_track("sp1")]
    tracks.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    sessions = tmp_path / "s.jsonl"
    sessions.write_text(json.dumps({"session_id": "s1", "conversations": []}) + "\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"line 2, track 'sp2', field 'popularity': expected a number"):
        get_importer("talkplaydata2").load(str(sessions), Issues())
    issues = Issues(skip_invalid=True)
    cat = get_importer("talkplaydata2").load(str(sessions), issues)
    assert cat.ids() == ["sp1"]
    assert [(e.line, e.reason) for e in issues.skipped] == [(2, "expected a number, got [56]"),
                                                            (3, "duplicate track id 'sp1'")]


def test_mpd_track_error_names_track_and_field(tmp_path):
    data = tmp_path / "mpd"
    data.mkdir()
    f = mpd_slice(data, range(0, 3))
    bad = json.loads(f.read_text())
    uri = bad["playlists"][1]["tracks"][0]["track_uri"]
    bad["playlists"][1]["tracks"][0]["track_name"] = ["not", "text"]
    bad["playlists"][2]["tracks"][1]["pos"] = "second"  # used to be a TypeError while sorting
    f.write_text(json.dumps(bad))
    r = cli("import", "mpd", str(data), "--out", str(tmp_path / "run"))
    assert isinstance(r.exception, InputError)
    assert str(r.exception) == (f"{f}, row 1, track '{uri}', field 'playlists[1].tracks[0].track_name': "
                                "expected text, got list")
    r = cli("import", "mpd", str(data), "--out", str(tmp_path / "run"), "--skip-invalid", "--json")
    info = json.loads(r.stdout)
    assert info["skipped"]["count"] == 2 and "playlists[2].tracks[1].pos" in info["skipped"]["examples"][1]
    cat = Catalog.load(tmp_path / "run")
    assert [p.id for p in cat.playlists] == ["mpd:0"]  # a bad track skips its whole playlist


def test_mpd_broken_slice_is_skipped_whole(tmp_path):
    data = tmp_path / "mpd"
    data.mkdir()
    mpd_slice(data, range(0, 2))
    (data / "mpd.slice.2-3.json").write_bytes(b'{"playlists": [{"pid": 2, "name": "caf\xe9"}]}')
    r = cli("import", "mpd", str(data), "--out", str(tmp_path / "run"))
    assert "mpd.slice.2-3.json" in str(r.exception) and "UTF-8" in str(r.exception)
    r = cli("import", "mpd", str(data), "--out", str(tmp_path / "run"), "--skip-invalid", "--json")
    assert json.loads(r.stdout)["skipped"]["count"] == 1
    assert {p.id for p in Catalog.load(tmp_path / "run").playlists} == {"mpd:0", "mpd:1"}
