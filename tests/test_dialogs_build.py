"""Synthesis, splits, files and the `talkplay dialogs` command (talkplay.dialogs)."""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from typer.testing import CliRunner

from talkplay.catalog import Catalog
from talkplay.cli import app
from talkplay.conversations import read_conversations
from talkplay.dialogs import DialogsConfig, Synthesizer, build_dialogs, load_dialogs
from talkplay.errors import InputError
from talkplay.run import Run
from talkplay.splits import SPLITS, content_key
from test_dialogs_common import embed_and_tokenize, make_catalog, make_run


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("dialogs_run"))


def test_synthesis_is_seeded_and_deterministic():
    cat = make_catalog()
    a = [Synthesizer(cat, seed=1).conversation(i).to_dict() for i in range(30)]
    b = [Synthesizer(cat, seed=1).conversation(i).to_dict() for i in range(30)]
    c = [Synthesizer(cat, seed=2).conversation(i).to_dict() for i in range(30)]
    assert a == b and a != c
    assert Synthesizer(cat, seed=1).conversation(17).to_dict() == a[17]  # index alone fixes it


def _satisfies(cat, tr, kind, value) -> bool:
    tags = [t.lower() for t in tr.tags]
    return {"artist": value in tr.artists, "tag": value in tags, "mood": value in tags,
            "lyric": value in (tr.lyrics or "").lower(), "year": value == str(tr.year),
            "decade": value == f"{tr.year // 10 * 10}s", "album": value == tr.album,
            "playlist": any(p.name == value and tr.id in p.track_ids for p in cat.playlists)}[kind]


def test_synthetic_turns_satisfy_their_requests_and_state_true_facts():
    cat = make_catalog()
    syn = Synthesizer(cat, seed=0)
    kinds = set()
    for i in range(200):
        conv = syn.conversation(i)
        assert 2 <= len(conv.turns) <= 5 or len(conv.turns) == 1
        seen = set()
        for j, turn in enumerate(conv.turns):
            (tid,) = turn.recommended
            assert tid not in seen  # never the same track twice in a conversation
            seen.add(tid)
            tr = cat.get(tid)
            kind, value = turn.extra["kind"], turn.extra.get("value")
            kinds.add(kind)
            if value is not None:
                assert _satisfies(cat, tr, kind, value), (kind, value, tr)
            prev = cat.get(conv.turns[j - 1].recommended[0]) if j else None
            if kind == "slower":
                assert tr.extra["tempo"] < prev.extra["tempo"]
            if kind == "faster":
                assert tr.extra["tempo"] > prev.extra["tempo"]
            if kind == "same_artist":
                assert set(tr.artists) & set(prev.artists)
                assert conv.turns[j - 1].liked == [prev.id]
            if kind == "reject":
                assert conv.turns[j - 1].disliked == [prev.id]
            # facts in the reply are the track's own
            assert f'"{tr.title}"' in turn.assistant and tr.artists[0] in turn.assistant
            assert re.findall(r'"([^"]+)"', turn.assistant) == [tr.title]
            for year in re.findall(r"\b(?:19|20)\d\d\b", turn.assistant):
                assert int(year) == tr.year
            for bpm in re.findall(r"(\d+) BPM", turn.assistant):
                assert int(bpm) == round(tr.extra["tempo"])
            m = re.search(r"(?:album|appears on) ([^.]+)\.", turn.assistant)
            if m:
                assert m.group(1) == tr.album
    assert {"artist", "tag", "mood", "lyric", "more_like", "reject", "slower", "faster",
            "same_artist"} <= kinds


def test_build_writes_leak_free_splits_and_records_counts(run):
    info = build_dialogs(run, DialogsConfig(synthesize=120, seed=0))
    splits = {s: load_dialogs(run, s) for s in SPLITS}
    assert all(splits[s] for s in SPLITS)
    assert {s: len(splits[s]) for s in SPLITS} == {s: info[s] for s in SPLITS}
    assert run.stage("dialogs")["train"] == info["train"]
    ids = {s: {c.id for c in splits[s]} for s in SPLITS}
    keys = {s: {content_key(c) for c in splits[s]} - {None} for s in SPLITS}
    seeds = {s: {c.extra.get("seed") for c in splits[s]} - {None} for s in SPLITS}
    for a, b in (("train", "valid"), ("train", "test"), ("valid", "test")):
        assert not ids[a] & ids[b] and not keys[a] & keys[b] and not seeds[a] & seeds[b]
    # alignment only in train, and it covers every track both ways
    for s in ("valid", "test"):
        assert not any(c.source == "alignment" for c in splits[s])
    align = [t for c in splits["train"] if c.source == "alignment" for t in c.turns]
    cat = run.load_catalog()
    assert {t.recommended[0] for t in align if t.extra["kind"] == "align_play"} == set(cat.ids())
    assert {t.extra["user_tracks"][0] for t in align if t.extra["kind"] == "align_describe"} == set(cat.ids())
    for t in align:
        tr = cat.get((t.recommended or t.extra.get("user_tracks"))[0])
        assert f'"{tr.title}"' in t.assistant
        if t.extra["kind"] == "align_play":
            assert tr.title in t.user
    # no temp files left behind; a rebuild with the same seed gives the same files
    assert sorted(p.name for p in run.dialogs_dir.iterdir()) == ["test.jsonl", "train.jsonl", "valid.jsonl"]
    before = (run.dialogs_dir / "test.jsonl").read_text()
    build_dialogs(run, DialogsConfig(synthesize=120, seed=0))
    assert (run.dialogs_dir / "test.jsonl").read_text() == before


def test_imported_conversations_are_included(tmp_path, cpcd_file):
    from talkplay.sources import Issues, get_importer

    cat = get_importer("cpcd").load(str(cpcd_file), Issues(), limit=20)
    cat.save(tmp_path)
    info = build_dialogs(Run(tmp_path), DialogsConfig(align=False))
    assert info["imported"] == 20 and info["synthesized"] == 0
    got = [c for s in SPLITS for c in load_dialogs(Run(tmp_path), s) if c.source == "cpcd"]
    assert {c.id for c in got} == {c.id for c in cat.conversations}
    assert all(t.liked or t.disliked or not t.recommended for c in got for t in c.turns)


def test_curator_searches_come_from_training_conversations_only(tmp_path, cpcd_file):
    from talkplay.sources import Issues, get_importer

    cat = get_importer("cpcd").load(str(cpcd_file), Issues(), limit=40)
    cat.save(tmp_path)
    run = Run(tmp_path)
    info = build_dialogs(run, DialogsConfig(align=False))
    searched = [c for c in load_dialogs(run, "train") if c.source == "search"]
    assert info["search"] == len(searched) > 0
    assert not [c for s in ("valid", "test") for c in load_dialogs(run, s) if c.source == "search"]
    by_query: dict[str, set[str]] = {}
    for c in load_dialogs(run, "train"):
        for t in c.turns:
            for q, res in zip(t.extra.get("search_queries") or [], t.extra.get("search_results") or [],
                              strict=False):
                by_query.setdefault(q.strip(), set()).update(set(res) & set(t.liked))
    for c in searched:  # every search turn is a training turn's search, answered by what was liked
        for t in c.turns:
            assert t.user in by_query and set(t.recommended) <= by_query[t.user]
    assert build_dialogs(run, DialogsConfig(align=False, search=False))["search"] == 0


def test_talkplaydata2_sessions_render_with_their_profiles(tmp_path, tpd2_dir):
    from talkplay.dialogs import render
    from talkplay.model import add_music_tokens, load_tokenizer
    from talkplay.sources import Issues, get_importer
    from talkplay.tokenizer import MusicTokenizer

    get_importer("talkplaydata2").load(str(tpd2_dir), Issues()).save(tmp_path)
    run = embed_and_tokenize(Run(tmp_path))
    info = build_dialogs(run, DialogsConfig(align=False, follow_ups=False, valid_frac=0, test_frac=0))
    assert info["imported"] == 3 == info["train"]
    music = MusicTokenizer.load(run.tokenizer_dir)
    tok = load_tokenizer("tiny")
    add_music_tokens(tok, music)
    for conv in load_dialogs(run, "train"):
        assert len(conv.turns) == 8 and conv.profile
        r = render(conv, tok, music)
        text = tok.decode(r.input_ids)
        assert "Listener profile: age_group:" in text and "listener_goal" not in text
        block = 2 + len(music.track_tokens(music.track_ids[0]))
        assert [r.loss_mask[p] for p in r.music_positions] == [1] * 8 * block  # one track per turn


def test_bad_dialog_lines_name_file_line_and_field(tmp_path):
    p = tmp_path / "train.jsonl"
    p.write_text(json.dumps({"id": "a", "turns": [{"user": "hi"}]}) + "\n"
                 + json.dumps({"id": "b", "turns": [{"user": "hi", "recommended": "t1"}]}) + "\n")
    with pytest.raises(InputError) as e:
        read_conversations(p)
    assert e.value.line == 2 and e.value.field == "turns[0].recommended" and str(p) in str(e.value)
    with pytest.raises(InputError, match="--test-frac"):
        build_dialogs(Run(tmp_path), DialogsConfig(valid_frac=0.5, test_frac=0.5))


def test_cli_builds_and_shows_the_mask(run):
    runner = CliRunner()
    res = runner.invoke(app, ["dialogs", str(run.path), "--synthesize", "30", "--seed", "3", "--json"])
    assert res.exit_code == 0, res.output
    info = json.loads(res.stdout)
    assert info["synthesized"] == 30 and info["train"] > 0
    # as the model that ships trains on it: a slot per track, cards, the opens the head learns
    res = runner.invoke(app, ["dialogs", str(run.path), "--show-mask", "--base-model", "tiny", "--json"])
    assert res.exit_code == 0, res.output
    ex = json.loads(res.stdout)["example"]
    assert ex["track_repr"] == "content" and ex["supervised"] > 0
    assert ex["slots"] > 0 and ex["ranked_opens"] > 0
    assert any(s["kind"] == "slot" and s["text"].startswith("<|track|>[") for s in ex["spans"])
    assert not any(s["supervised"] and "<|im_start|>user" in s["text"] for s in ex["spans"])
    # and as a codes model would, from the run's music tokenizer
    res = runner.invoke(app, ["dialogs", str(run.path), "--show-mask", "--base-model", "tiny",
                              "--track-repr", "codes", "--json"])
    assert res.exit_code == 0, res.output
    ex = json.loads(res.stdout)["example"]
    assert ex["supervised"] > 0 and ex["music_tokens"] > 0
    assert any(s["supervised"] and "<|music|>" in s["text"] for s in ex["spans"])
    res = runner.invoke(app, ["dialogs", str(run.path), "--show-mask", "--base-model", "tiny"])
    assert res.exit_code == 0 and "supervised" in res.stdout and "<|track|>" in res.stdout


class _Teacher(BaseHTTPRequestHandler):
    """A tiny OpenAI-compatible server: rewrites every other turn; the rest drop the title."""

    calls = 0

    def log_message(self, *args):  # keep test output clean
        pass

    def _send(self, obj):
        body = json.dumps(obj).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        model = {"id": "teach-1", "object": "model", "created": 0, "owned_by": "test"}
        self._send({"object": "list", "data": [model]})

    def do_POST(self):
        req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        turn = json.loads(req["messages"][-1]["content"])
        type(self).calls += 1
        if type(self).calls % 2:
            out = {"user": "Hey! " + turn["user"], "assistant": "Oh, nice pick. " + turn["assistant"]}
        else:
            out = {"user": "hi", "assistant": "I made something up."}
        content = "```json\n" + json.dumps(out) + "\n```"  # fenced, as chat models often answer
        self._send({"id": "c", "object": "chat.completion", "created": 0, "model": req["model"],
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": content}}],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})


def test_teacher_rewrites_through_a_real_local_endpoint(tmp_path):
    make_run(tmp_path, n=24, tokenize=False)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Teacher)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/v1"
        info = build_dialogs(Run(tmp_path), DialogsConfig(synthesize=4, teacher=url, align=False))
    finally:
        server.shutdown()
    t = info["teacher"]
    assert t["model"] == "teach-1" and t["rewritten"] > 0 and t["rejected"] > 0
    assert t["rewritten"] + t["rejected"] == t["turns"]
    turns = [t for s in SPLITS for c in load_dialogs(Run(tmp_path), s) for t in c.turns]
    cat = Catalog.load(tmp_path)
    rewritten = [t for t in turns if "template" in t.extra]
    assert len(rewritten) == info["teacher"]["rewritten"]
    for turn in rewritten:
        assert turn.user.startswith("Hey! ") and turn.assistant.startswith("Oh, nice pick. ")
        assert cat.get(turn.recommended[0]).title in turn.assistant
    assert not any("made something up" in t.assistant for t in turns)


def test_split_rules_duplicates_fixed_splits_and_alignment():
    from talkplay.catalog import Conversation, Turn
    from talkplay.splits import split_conversations

    def conv(i, user, **extra):
        return Conversation(id=f"c{i}", turns=[Turn(user=user, recommended=[f"t{i}"])], extra=extra)

    convs = [conv(i, f"request {i}") for i in range(40)]
    convs += [Conversation(id="dup", turns=[Turn(user="Request 3 ", recommended=["t3"])])]  # same as c3
    convs += [conv(100, "held out", split="test"), conv(101, "aligned", alignment=True)]
    out = split_conversations(convs, valid_frac=0.1, test_frac=0.2, seed=5)
    ids = {s: [c.id for c in out[s]] for s in SPLITS}
    assert sum(map(len, ids.values())) == 42 and "dup" not in sum(ids.values(), [])
    assert "c100" in ids["test"] and "c101" in ids["train"]
    assert len(ids["test"]) == 1 + 8 and len(ids["valid"]) == 4
    assert out == split_conversations(convs, valid_frac=0.1, test_frac=0.2, seed=5)
    assert ids != {s: [c.id for c in v] for s, v in split_conversations(convs, 0.1, 0.2, seed=6).items()}


def test_cli_reports_a_missing_catalog_in_one_line(tmp_path):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "talkplay.cli", "dialogs", str(tmp_path / "nope")],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "no catalog" in out.stderr and "Traceback" not in out.stderr


def test_held_out_goal_playlists_do_not_seed_synthetic_training(tmp_path):
    """CPCD-style goal playlists of held-out conversations must not shape synthetic train
    conversations: each track here is linked to its goal-mates only through that playlist."""
    from talkplay.catalog import Conversation, Playlist, Track, Turn

    tracks, playlists, convs = [], [], []
    for c in range(16):
        ids = [f"c{c}t{i}" for i in range(4)]
        tracks += [Track(id=t, title=f"Song {t}", artists=[f"Artist {t}"], tags=[f"style{t}"]) for t in ids]
        playlists.append(Playlist(id=f"src:goal:conv{c}", name=f"goal {c}", track_ids=ids, source="src:goal"))
        convs.append(Conversation(id=f"conv{c}", turns=[Turn(user=f"songs like {ids[0]}", recommended=ids[:1],
                                                             liked=ids[:1])], goal=ids, source="src"))
    run = Run(tmp_path / "run")
    Catalog(tracks, playlists, convs).save(run.path)
    build_dialogs(run, DialogsConfig(synthesize=300, seed=0, align=False, test_frac=0.25, valid_frac=0.1))
    held = {t: c.id for split in ("valid", "test") for c in load_dialogs(run, split) for t in c.goal}
    kept = {t: c.id for c in load_dialogs(run, "train") for t in c.goal}
    assert held and kept

    def follow_rate(goal_of: dict[str, str]) -> float:
        """How often a synthetic turn after a goal track picks another track of that goal."""
        pairs = []
        for c in load_dialogs(run, "train"):
            recs = [t.recommended[0] for t in c.turns if t.recommended] if not c.goal else []
            pairs += [(a, b) for a, b in zip(recs, recs[1:], strict=False) if a in goal_of]
        assert pairs
        return sum(goal_of.get(b) == goal_of[a] for a, b in pairs) / len(pairs)

    # training goal playlists link their tracks; held-out ones must look like no link at all
    assert follow_rate(kept) > 0.3
    assert follow_rate(held) < 0.15


def test_turns_record_how_many_tracks_fit_and_eval_reports_that_ceiling(run):
    from talkplay.evaluate import EvalConfig, evaluate_run

    build_dialogs(run, DialogsConfig(synthesize=120, seed=0))
    cat = run.load_catalog()
    test = load_dialogs(run, "test")
    turns = [t for c in test for t in c.turns]
    assert turns
    assert all(isinstance(t.extra.get("candidates"), int) and t.extra["candidates"] >= 1 for t in turns)
    # a request's candidates are exactly the catalog tracks that satisfy it
    firsts = [c.turns[0] for c in test if c.turns[0].extra.get("value") is not None]
    assert firsts
    for t in firsts:
        n = sum(_satisfies(cat, tr, t.extra["kind"], t.extra["value"]) for tr in cat.tracks)
        assert t.extra["candidates"] == n, t.extra

    result = evaluate_run(run, EvalConfig(protocol="next-track", systems=["random", "bm25"], n_boot=0,
                                          plots=False))
    ceiling = result["systems"]["ceiling"]
    assert ceiling["is_system"] is False
    expected = sum(min(1.0, 10 / t.extra["candidates"]) for t in turns) / len(turns)
    assert ceiling["all"]["n_turns"] == len(turns)
    assert ceiling["all"]["micro"]["hit@10"] == pytest.approx(expected)
    assert 0 < expected < 1 and result["systems"]["bm25"]["all"]["micro"]["hit@10"] <= 1
    assert "ceiling (not a system)" in (run.eval_dir / "next-track.md").read_text()


def test_follow_ups_replace_a_later_request_by_chit_chat_and_keep_the_curators_answer():
    from talkplay.catalog import Conversation, Turn
    from talkplay.dialogs.build import FOLLOW_UP_TEMPLATES, DialogsConfig, follow_up_conversations

    conv = Conversation(id="c", turns=[Turn(user="reggae from the 90s", recommended=["a"]),
                                       Turn(user="add some Bob Marley", recommended=["b", "c"],
                                            assistant="Sure."),
                                       Turn(user="and Majek Fashek", recommended=["d"])])
    short = Conversation(id="s", turns=[Turn(user="jazz", recommended=["x"])])
    out = follow_up_conversations([conv, short], DialogsConfig())
    assert len(out) == 1  # one turn has no later request to replace
    got = out[0]
    assert got.id == "c-follow-up" and got.source == "follow-up"
    last = got.turns[-1]
    assert last.user in FOLLOW_UP_TEMPLATES and last.extra["kind"] == "follow-up"
    real = conv.turns[len(got.turns) - 1]
    assert (last.recommended, last.assistant) == (real.recommended, real.assistant)
    assert got.turns[:-1] == conv.turns[: len(got.turns) - 1]  # what came before is unchanged
    assert follow_up_conversations([conv], DialogsConfig()) == out  # seeded

    two = follow_up_conversations([conv], DialogsConfig(follow_up_turns=2))
    assert [c.id for c in two] == ["c-follow-up", "c-follow-up-2"]
    assert sorted(len(c.turns) for c in two) == [2, 3]  # cut at both later turns, once each
    assert len(follow_up_conversations([conv], DialogsConfig(follow_up_turns=3))) == 2  # only two later
    with pytest.raises(InputError, match="--follow-up-turns"):
        DialogsConfig(follow_up_turns=4).validate()


def test_a_chit_chat_prefix_goes_in_front_of_an_earlier_request_and_changes_nothing_else():
    from talkplay.catalog import Conversation, Turn
    from talkplay.dialogs.build import FOLLOW_UP_TEMPLATES, DialogsConfig, follow_up_conversations

    conv = Conversation(id="c", turns=[Turn(user="reggae from the 90s", recommended=["a"]),
                                       Turn(user="add some Bob Marley", recommended=["b"]),
                                       Turn(user="and Majek Fashek", recommended=["d"]),
                                       Turn(user="now Lucky Dube", recommended=["e"])])
    plain = follow_up_conversations([conv], DialogsConfig(follow_up_turns=3))
    prefixed = follow_up_conversations([conv], DialogsConfig(follow_up_turns=3, chit_chat_prefix=True))
    assert [(c.id, c.turns[-1]) for c in prefixed] == [(c.id, c.turns[-1]) for c in plain]  # same draws
    for p in prefixed:
        before = p.turns[:-1]
        pairs = zip(before, conv.turns[: len(before)], strict=True)
        changed = [i for i, (a, b) in enumerate(pairs) if a != b]
        if len(p.turns) == 2:  # cut at the second turn: only the opening before it, never prefixed
            assert changed == []
            continue
        (i,) = changed
        assert i >= 1  # never the opening
        chat, real = p.turns[i].user, conv.turns[i].user
        assert chat.endswith(" " + real) and chat[: -len(real) - 1] in FOLLOW_UP_TEMPLATES
        assert p.turns[i].recommended == conv.turns[i].recommended  # answered as before


def test_dialogs_add_follow_ups_of_training_conversations_by_default(tmp_path):
    """The default build adds one chit-chat variant per imported training conversation (never of
    a held-out one); ``follow_ups=False`` (``--no-follow-ups``) adds none."""
    from talkplay.catalog import Conversation, Track, Turn

    tracks = [Track(id=f"t{i}", title=f"Song {i}", artists=[f"Artist {i % 5}"]) for i in range(60)]
    convs = [Conversation(id=f"conv{c}", source="src",
                          turns=[Turn(user=f"songs like Song {3 * c}", recommended=[f"t{3 * c}"]),
                                 Turn(user=f"now Artist {c % 5}", recommended=[f"t{3 * c + 1}"]),
                                 Turn(user="one more", recommended=[f"t{3 * c + 2}"])]) for c in range(20)]
    run = Run(tmp_path / "run")
    Catalog(tracks, [], convs).save(run.path)
    info = build_dialogs(run, DialogsConfig(synthesize=0, align=False, search=False))
    train = load_dialogs(run, "train")
    real = {c.id for c in train if c.source != "follow-up"}
    chatted = [c for c in train if c.source == "follow-up"]
    assert real and {c.id for c in chatted} == {f"{i}-follow-up" for i in real}
    assert info["follow_ups"] == len(real)
    held = [c for split in ("valid", "test") for c in load_dialogs(run, split)]
    assert held and not any(c.source == "follow-up" for c in held)
    build_dialogs(run, DialogsConfig(synthesize=0, align=False, search=False, follow_ups=False), force=True)
    assert {c.id for c in load_dialogs(run, "train")} == real
