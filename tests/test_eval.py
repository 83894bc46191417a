"""`talkplay eval` end to end on a synthetic run, and the protocols' turn-by-turn rules."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from synth_run import run_files
from talkplay.catalog import Conversation, Track, Turn
from talkplay.cli import app
from talkplay.evaluate import EvalConfig, evaluate_run, make_cases
from talkplay.run import Run
from talkplay.splits import run_split
from test_baselines import make_synthetic_run

runner = CliRunner()
FAST = "random,popularity,bm25,bm25-all,cooccur,hybrid"


@pytest.fixture
def run(tmp_path) -> Run:
    return make_synthetic_run(tmp_path / "run")


def invoke(*args: str):
    result = runner.invoke(app, list(args), catch_exceptions=False)
    return result


def test_cpcd_cases_follow_the_official_rules():
    conv = Conversation(id="c", goal=["a", "b", "c", "d", "e"], turns=[
        Turn(user="u0", assistant="s0", liked=["a", "b", "c", "d"], disliked=["z"]),
        Turn(user="u1", assistant="s1", liked=["e"]),
        Turn(user="u2", assistant="s2", liked=[]),
        Turn(user="u3", assistant="s3"),
    ])
    cases = make_cases("cpcd", [conv])
    assert [c.turn_index for c in cases] == [0, 1, 2, 3]
    c0, c1, c2, _ = cases
    assert c0.gold == ["a", "b", "c", "d", "e"] and c0.exclude == frozenset()
    assert c1.gold == ["d", "e"] and c1.exclude == {"a", "b", "c"}
    assert c2.gold == ["d"] and c2.exclude == {"a", "b", "c", "e"}
    # what the system sees: user queries 0..i, responses 0..i-1, only the seeds as tracks
    ctx = c2.context
    assert [t.user for t in ctx.turns] == ["u0", "u1", "u2"]
    assert [t.assistant for t in ctx.turns] == ["s0", "s1", ""]
    assert ctx.turns[0].liked == ["a", "b", "c"] and ctx.turns[0].disliked == []
    assert ctx.goal == [] and c2.k == 100
    # once every goal track has been a seed, later turns are skipped
    conv.turns[2].liked = ["d"]
    assert [c.turn_index for c in make_cases("cpcd", [conv])] == [0, 1, 2]


def test_next_track_cases_with_and_without_pool():
    conv = Conversation(id="s", extra={"pool": ["p1", "p2", "p3", "p4"]}, turns=[
        Turn(user="hi", assistant="try this", recommended=["p1"]),
        Turn(user="again", recommended=["p1"]),  # a repeat is not a new recommendation
        Turn(user="more", recommended=["p3"]),
    ])
    ids = ["p1", "p2", "p3", "p4", "x1", "x2"]
    cases = make_cases("next-track", [conv], ids)
    assert [(c.turn_index, c.gold) for c in cases] == [(0, ["p1"]), (2, ["p3"])]
    assert cases[1].context.turns[0].recommended == ["p1"] and cases[1].context.turns[-1].recommended == []
    pooled = make_cases("next-track", [conv], ids, pool=True)
    assert pooled[1].exclude == {"p1", "x1", "x2"} and pooled[1].k == 3


def test_every_protocol_excludes_what_the_session_already_heard():
    from talkplay.exclusion import session_exclude

    conv = Conversation(id="s", goal=["p2", "p3"], turns=[
        # feedback on tracks the session found elsewhere
        Turn(user="hi", recommended=["p1"], liked=["p2"], disliked=["p4"]),
        Turn(user="more", recommended=["p2", "p3", "p4"]),
    ])
    cases = make_cases("next-track", [conv], ["p1", "p2", "p3", "p4"])
    assert [(c.turn_index, c.gold) for c in cases] == [(0, ["p1"]), (1, ["p3"])]
    assert cases[1].exclude == {"p1", "p2", "p4"}  # what the engine excludes by itself too
    for case in cases + make_cases("cpcd", [conv]):
        assert case.exclude == session_exclude(case.context)


def test_eval_cli_prints_table_and_writes_reports(run, tmp_path):
    out = tmp_path / "preds"
    res = invoke("eval", str(run.path), "--systems", FAST, "--predictions-out", str(out), "--n-boot", "50")
    assert res.exit_code == 0, res.output
    for name in ("random", "bm25-all", "hybrid", "hit@10", "mrr@100"):
        assert name in res.output
    files = {p.name for p in run.eval_dir.iterdir()}
    assert {"cpcd.json", "cpcd.md", "cpcd.hit10_per_turn.png", "cpcd.hit_at_k.png"} <= files
    md = (run.eval_dir / "cpcd.md").read_text()
    assert "| system |" in md and "Cold" in md and "per turn" in md
    report = json.loads((run.eval_dir / "cpcd.json").read_text())
    test_ids = {c.id for c in run_split(run).test}
    assert report["conversations"]["n"] == len(test_ids) > 0
    lines = (out / "bm25.cpcd.jsonl").read_text().splitlines()
    assert len(lines) == report["conversations"]["n_turns"]
    for line in lines:
        row = json.loads(line)
        dialog, turn = row["docid"].split(":")
        assert dialog in test_ids and int(turn) >= 0
        assert len({n["docid"] for n in row["neighbor"]}) == len(row["neighbor"]) > 0
    # genre-word conversations: text and co-occurrence baselines beat random
    sysm = report["systems"]
    assert sysm["bm25-all"]["all"]["macro"]["hit@10"] > sysm["random"]["all"]["macro"]["hit@10"]
    assert sysm["cooccur"]["all"]["macro"]["hit@10"] > sysm["random"]["all"]["macro"]["hit@10"]


def test_eval_json_is_one_object(run):
    res = invoke("eval", str(run.path), "--systems", "popularity,bm25", "--json", "--no-plots",
                 "--n-boot", "20")
    assert res.exit_code == 0
    obj = json.loads(res.stdout)
    assert set(obj["systems"]) == {"popularity", "bm25"}
    agg = obj["systems"]["bm25"]["all"]
    assert set(agg["macro"]) >= {"hit@1", "hit@5", "hit@10", "hit@20", "hit@100", "recall@100", "ndcg@10",
                                 "mrr@100"}
    lo, hi = agg["ci"]["macro"]["hit@10"]
    assert lo <= agg["macro"]["hit@10"] <= hi
    assert agg["per_turn"] and agg["per_turn"][0]["turn"] == 0


def test_split_is_deterministic_and_recorded(run, tmp_path):
    a = run_split(run)
    other = make_synthetic_run(tmp_path / "again")
    b = run_split(other)
    assert [c.id for c in a.test] == [c.id for c in b.test]
    assert run.stage("eval_split")["test_ids"] == sorted(c.id for c in a.test)
    assert not {c.id for c in a.train} & {c.id for c in a.test}


def test_eval_refuses_conversations_the_run_trained_on(run, tmp_path):
    train = run_split(run).train
    f = tmp_path / "leak.jsonl"
    renamed = Conversation(id="brand-new-id", turns=train[0].turns, goal=train[0].goal)
    f.write_text(json.dumps(renamed.to_dict()) + "\n")
    res = runner.invoke(app, ["eval", str(run.path), "--conversations", str(f), "--systems", "bm25"])
    assert res.exit_code != 0
    assert "trained" in str(res.exception) and "leak" in str(res.exception)


def test_eval_refuses_tracks_not_in_catalog_and_catalog_add_makes_them_cold(run, tmp_path):
    from talkplay.catalog import Catalog
    from talkplay.errors import InputError

    before = run_files(run.path)
    f = tmp_path / "new.jsonl"
    convs = [Conversation(id=f"new-{i}", goal=["jazz-1", "brand-new-track"], turns=[
        Turn(user="some fresh jazz please", liked=["jazz-1"]), Turn(user="and another")]) for i in range(3)]
    f.write_text("".join(json.dumps(c.to_dict()) + "\n" for c in convs))
    # own format carries no track metadata: the user is told to add the tracks as a table
    with pytest.raises(InputError) as e:
        evaluate_run(run, EvalConfig(conversations=f, systems=["bm25"], n_boot=0, plots=False))
    msg = str(e.value)
    assert "new.jsonl" in msg and "new-0" in msg and "brand-new-track" in msg and "catalog add" in msg
    # a CPCD-format file carries metadata: the command adds its tracks (not its conversations)
    cpcd = tmp_path / "new_cpcd.jsonl"
    cpcd.write_text(json.dumps({
        "id": "fresh-dialog", "goal_playlist": ["jazz-1", "yt-new"],
        "tracks": {"jazz-1": {"track_titles": "Sunny Jazz Song 1", "track_artists": ["x"]},
                   "yt-new": {"track_titles": "Brand New Jazz", "track_artists": ["Newcomer"],
                              "track_release_titles": "Debut"}},
        "turns": [{"user_query": "fresh jazz", "system_response": "ok", "liked_results": ["jazz-1"],
                   "disliked_results": [], "search_queries": [], "search_results": []},
                  {"user_query": "more jazz", "system_response": "", "liked_results": ["yt-new"],
                   "disliked_results": [], "search_queries": [], "search_results": []}]}) + "\n")
    res = runner.invoke(app, ["eval", str(run.path), "--conversations", str(cpcd), "--systems", "bm25"])
    assert res.exit_code != 0 and "yt-new" in str(res.exception)
    assert f"catalog add {run.path} {cpcd} --source cpcd" in str(res.exception)
    assert run_files(run.path) == before  # refusing changed nothing
    n_convs = len(Catalog.load(run.path).conversations)
    res = invoke("catalog", "add", str(run.path), str(cpcd), "--source", "cpcd", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["new_track_ids"] == ["yt-new"]
    cat = Catalog.load(run.path)
    assert "yt-new" in cat and len(cat.conversations) == n_convs  # the test dialog stays out
    added = run_files(run.path)
    result = evaluate_run(run, EvalConfig(conversations=cpcd, systems=["bm25"], n_boot=0, plots=False))
    assert result["systems"]["bm25"]["cold"]["n_turns"] >= 1
    assert result["inputs"]["catalog"]["tracks"] == len(cat)
    after = run_files(run.path)
    assert {k: v for k, v in after.items() if not k.startswith("eval/")} == added


def test_eval_bad_options_are_clear_errors(run):
    for args, needle in ((["--protocol", "nope"], "protocol"), (["--systems", "bm26"], "bm26"),
                         (["--pool"], "pool"), (["--name", "../outside"], "../outside")):
        res = runner.invoke(app, ["eval", str(run.path), *args])
        assert res.exit_code != 0 and needle in str(res.exception)


def test_named_report_leaves_the_default_one_alone(run):
    invoke("eval", str(run.path), "--systems", "random", "--n-boot", "0", "--no-plots")
    before = (run.eval_dir / "cpcd.json").read_text()
    res = invoke("eval", str(run.path), "--systems", "random,bm25", "--n-boot", "0", "--no-plots",
                 "--name", "cpcd-bm25")
    assert res.exit_code == 0, res.output
    named = json.loads((run.eval_dir / "cpcd-bm25.json").read_text())
    assert set(named["systems"]) == {"random", "bm25"} and (run.eval_dir / "cpcd-bm25.md").exists()
    assert (run.eval_dir / "cpcd.json").read_text() == before


def test_eval_next_track_on_synthetic_dialogs(run):
    result = evaluate_run(run, EvalConfig(protocol="next-track", systems=["random", "cooccur"], n_boot=0,
                                          plots=False))
    assert result["protocol"] == "next-track" and result["conversations"]["n_turns"] > 0


def test_leak_probe_is_labelled_not_a_system(run):
    run.load_catalog()
    cat = run.load_catalog()
    cat.add_track(Track(id="orphan", title="Orphan"))
    cat.save(run.path)
    result = evaluate_run(run, EvalConfig(systems=["bm25"], leak_probe=True, n_boot=0, plots=False))
    assert result["systems"]["leak-probe"]["is_system"] is False
    md = (run.eval_dir / "cpcd.md").read_text()
    assert "leak-probe (not a system)" in md
    assert "ceiling" not in result["systems"]  # imported conversations say nothing of candidates


def test_eval_refusal_is_one_clear_line_from_the_real_command(run, tmp_path):
    import subprocess
    import sys

    train = run_split(run).train
    f = tmp_path / "leak.jsonl"
    f.write_text(json.dumps(train[1].to_dict()) + "\n")
    cmd = [sys.executable, "-m", "talkplay.cli", "eval", str(run.path), "--conversations", str(f),
           "--systems", "bm25"]
    out = subprocess.run(cmd, capture_output=True, text=True)
    assert out.returncode == 2
    assert "error:" in out.stderr and train[1].id in out.stderr and "Traceback" not in out.stderr


def test_alignment_conversations_teach_baselines_no_co_occurrence_and_leave_tracks_cold(run):
    """Catalog-alignment dialogs group random tracks and mention every track: co-occurrence
    baselines must not learn from them, and a track in one is still cold."""
    from talkplay.baselines import make_baseline
    from talkplay.conversations import write_conversations
    from talkplay.splits import listening_conversations

    split = run_split(run)
    ids = run.load_catalog(validate=False).ids()
    a, b = ids[0], ids[-1]
    align = Conversation(id="align-0", extra={"alignment": True},
                         turns=[Turn(user="play it", recommended=[a], liked=[a]),
                                Turn(user="and this", recommended=[b], liked=[b])])
    assert listening_conversations([*split.train, align]) == split.train
    train_file = run.dialogs_dir / "train.jsonl"
    before = evaluate_run(run, EvalConfig(systems=["cooccur"], n_boot=0, plots=False, write=False))
    base = make_baseline("cooccur")
    base.fit(run)
    ranked_before = base.recommend(Conversation(id="q", turns=[Turn(user="x", liked=[a])]), k=len(ids) - 1)
    write_conversations(train_file, [*split.train, align])
    base.fit(run)
    ranked_after = base.recommend(Conversation(id="q", turns=[Turn(user="x", liked=[a])]), k=len(ids) - 1)
    assert ranked_after == ranked_before
    after = evaluate_run(run, EvalConfig(systems=["cooccur"], n_boot=0, plots=False, write=False))
    assert after["catalog"]["cold_tracks"] == before["catalog"]["cold_tracks"]
