"""TalkPlay itself under the shared Recommender contract and inside `talkplay eval`.

Uses the synthetic run of ``synth_run`` with a tiny model trained for a handful of steps:
the contract is about the interface (k distinct catalog ids, exclude, determinism), not
about quality, which the CPCD benchmark measures.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from synth_run import build_synth_run
from talkplay.catalog import Conversation, Turn
from talkplay.cli import app
from talkplay.recommender import Recommender


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from talkplay.train import TrainConfig, train_run

    run = build_synth_run(tmp_path_factory.mktemp("tp") / "run")
    train_run(run, TrainConfig(base_model="tiny", track_repr="codes", lora=False, max_steps=5, batch_size=8,
                               save_every=1000, max_length=256,
                               log_every=10))
    return run


@pytest.fixture(scope="module")
def rec(trained):
    from talkplay.engine import TalkPlayRecommender

    r = TalkPlayRecommender()
    r.fit(trained)
    return r


def _ask(text: str) -> Conversation:
    return Conversation(id="probe", turns=[Turn(user=text)])


def test_talkplay_keeps_the_recommender_contract(trained, rec):
    from talkplay.engine import TalkPlayRecommender

    assert isinstance(rec, Recommender)
    catalog = trained.load_catalog()
    out = rec.recommend(_ask("play some jazz music"), k=8, exclude={"t0", "t1"})
    ids = [t for t, _ in out]
    assert len(ids) == 8 == len(set(ids)) and all(t in catalog for t in ids)
    assert not {"t0", "t1"} & set(ids)
    again = TalkPlayRecommender()
    again.fit(trained)
    assert again.recommend(_ask("play some jazz music"), k=8, exclude={"t0", "t1"}) == out
    # An empty conversation gets a ranking (the model's prior), as from every baseline.
    empty = rec.recommend(Conversation(id="empty"), k=5)
    assert len({t for t, _ in empty}) == 5 and all(t in catalog for t, _ in empty)


def test_eval_includes_talkplay_when_the_run_has_a_model(trained):
    runner = CliRunner()
    res = runner.invoke(app, ["eval", str(trained.path), "--protocol", "next-track", "--json", "--no-plots",
                              "--n-boot", "0", "--limit", "4"], catch_exceptions=False)
    assert res.exit_code == 0
    report = json.loads(res.stdout)
    assert "talkplay" in report["systems"] and "bm25" in report["systems"]
    assert report["conversations"]["source"].endswith("test.jsonl")
    assert report["systems"]["talkplay"]["all"]["n_turns"] == report["conversations"]["n_turns"] > 0
    # its replies are scored too, beside the human replies of the same turns
    tp = report["systems"]["talkplay"]
    for key in ("distinct_2", "repeated_trigram_rate", "cut_off_rate", "artist_grounding",
                "requests_naming_card_artist", "fluency", "fluency_human", "reply_faithfulness_unguarded"):
        assert key in tp, key
    assert tp["n_replies"] > 0 and 0 <= tp["cut_off_rate"] <= 1 and 0 <= tp["repeated_trigram_rate"] <= 1
    assert tp["fluency_model"] == "tiny" and tp["n_human_replies"] > 0 and tp["fluency_human"] > 0
    assert tp["reply_faithfulness_unguarded"] is None  # a codes model writes unguarded replies only
    rec = tp["replies"][0]
    assert {"human_reply", "nll", "nll_human", "cut_off", "repeats_trigram", "unguarded_reply"} <= rec.keys()
    side = Path(report["files"]["replies"]).read_text(encoding="utf-8")
    assert side.startswith("# Replies") and rec["human_reply"].splitlines()[0].replace("|", "\\|") in side
