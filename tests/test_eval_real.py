"""Evaluation on the real shared data (skipped when ../shared/data is absent): a CPCD slice
scored by `talkplay eval` and, from its prediction files, by the official formula; and the
TalkPlayData 2 sessions under the pool-restricted next-track protocol."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from conftest import CPCD_FILE
from talkplay.catalog import Catalog
from talkplay.cli import app
from talkplay.evaluate.metrics import K_VALUES
from talkplay.run import Run
from talkplay.sources.base import Issues
from talkplay.sources.cpcd import CPCDImporter
from talkplay.splits import held_out_ids
from test_metrics import official_scores

runner = CliRunner()
N_DIALOGS = 64


@pytest.fixture(scope="module")
def cpcd_slice(tmp_path_factory):
    if not CPCD_FILE.exists():
        pytest.skip(f"CPCD data not found at {CPCD_FILE} (set TALKPLAY_SHARED_DATA)")
    cpcd_file = CPCD_FILE
    tmp = tmp_path_factory.mktemp("cpcd")
    raw = [json.loads(line) for line in cpcd_file.read_text().splitlines()[:N_DIALOGS]]
    path = tmp / "slice.jsonl"
    path.write_text("".join(json.dumps(d) + "\n" for d in raw))
    CPCDImporter().load(str(path), Issues()).save(tmp / "run")
    return Run(tmp / "run"), raw, path


def test_cpcd_predictions_score_identically_under_the_official_formula(cpcd_slice, tmp_path):
    run, raw, _ = cpcd_slice
    out = tmp_path / "preds"
    res = runner.invoke(app, ["eval", str(run.path), "--systems", "popularity,bm25,hybrid",
                              "--predictions-out", str(out), "--json", "--no-plots", "--n-boot", "0"],
                        catch_exceptions=False)
    assert res.exit_code == 0
    report = json.loads(res.stdout)
    test_ids = held_out_ids(run, record=False)  # eval is read-only: the split is derived, not recorded
    assert len(test_ids) == N_DIALOGS // 8
    gold_dialogs = [d for d in raw if d["id"] in test_ids]
    for system in ("popularity", "bm25", "hybrid"):
        lines = (out / f"{system}.cpcd.jsonl").read_text().splitlines()
        for line in lines:  # the official script demands >= 100 distinct ids after seed removal
            assert len({n["docid"] for n in json.loads(line)["neighbor"]}) >= 100
        official = official_scores(gold_dialogs, lines)
        ours = report["systems"][system]["all"]
        assert ours["n_turns"] == official["n_turns"]
        for avg in ("macro", "micro"):
            for k in K_VALUES:
                for m in ("hit", "recall", "mrr"):
                    name = f"{m}@{k}"
                    assert ours[avg][name] == pytest.approx(official[avg][name]), (system, avg, name)
    assert report["systems"]["bm25"]["all"]["macro"]["hit@100"] > 0.2


def test_cpcd_file_of_training_conversations_is_refused(cpcd_slice):
    run, _, path = cpcd_slice
    res = runner.invoke(app, ["eval", str(run.path), "--conversations", str(path), "--systems", "bm25"])
    assert res.exit_code != 0 and "trained on" in str(res.exception)


def test_talkplaydata2_next_track_with_pool(tpd2_dir, tmp_path):
    from talkplay.sources.talkplaydata2 import TalkPlayData2Importer

    cat = TalkPlayData2Importer().load(str(tpd2_dir), Issues())
    Catalog(cat.tracks).save(tmp_path / "run")  # tracks only: all three sessions stay unseen
    res = runner.invoke(app, ["eval", str(tmp_path / "run"), "--protocol", "next-track", "--pool",
                              "--conversations", str(tpd2_dir), "--systems", "random,bm25,cooccur",
                              "--json", "--no-plots", "--n-boot", "0"], catch_exceptions=False)
    assert res.exit_code == 0
    report = json.loads(res.stdout)
    assert report["conversations"]["n"] == 3 and report["conversations"]["n_turns"] >= 12
    for system in ("random", "bm25", "cooccur"):
        agg = report["systems"][system]["all"]
        assert agg["macro"]["hit@100"] == 1.0  # the pool holds the gold and fewer than 100 tracks
        assert 0 <= agg["macro"]["mrr@100"] <= 1
