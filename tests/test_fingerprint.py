"""A run that cannot lie: stale models are refused, overwrites need --force, eval is read-only."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from synth_run import build_synth_run, run_files
from talkplay.atomic import save_npy_atomic
from talkplay.catalog import Conversation, Track, Turn
from talkplay.cli import app
from talkplay.engine import Engine
from talkplay.errors import StaleArtifactError
from talkplay.run import Run
from talkplay.train import TrainConfig, train_run

cli = CliRunner()
CODES = dict(base_model="tiny", track_repr="codes", lora=False, max_steps=2, batch_size=8, max_length=128)


def invoke(*args: str):
    return cli.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def trained_codes(tmp_path_factory) -> Run:
    run = build_synth_run(tmp_path_factory.mktemp("codes") / "run", n_train=48)
    train_run(run, TrainConfig(**CODES))
    return run


@pytest.fixture
def codes_run(trained_codes, tmp_path) -> Run:
    """A fresh copy of the trained music-token run, for a test to change."""
    shutil.copytree(trained_codes.path, tmp_path / "run")
    return Run(tmp_path / "run")


def test_model_records_what_it_was_trained_on(codes_run):
    meta = json.loads((codes_run.model_dir / "talkplay.json").read_text())
    assert len(meta["model_id"]) == 16
    assert set(meta["inputs"]) == {"tokenizer", "dialogs"}
    assert meta["inputs"]["tokenizer"]["tracks"] == 16 and meta["inputs"]["dialogs"]["train"]


def test_retokenize_after_training_is_refused_then_forced_then_recommend_names_the_tokenizer(codes_run):
    state = codes_run.tokenizer_dir / "tokenizer.npz"
    before = state.read_bytes()
    res = invoke("tokenize", codes_run.path, "--k", "3")
    assert isinstance(res.exception, StaleArtifactError), res.output
    assert "--force" in str(res.exception) and "talkplay train" in str(res.exception)
    assert state.read_bytes() == before  # nothing overwritten
    assert invoke("recommend", codes_run.path, "some jazz").exit_code == 0
    res = invoke("tokenize", codes_run.path, "--k", "3", "--force")
    assert res.exit_code == 0, res.output
    assert state.read_bytes() != before
    res = invoke("recommend", codes_run.path, "some jazz")
    assert isinstance(res.exception, StaleArtifactError)
    msg = str(res.exception)
    assert str(codes_run.tokenizer_dir) in msg and "codebooks" in msg
    assert f"talkplay train {codes_run.path}" in msg
    # the real command: one clear line, exit code 2, no traceback
    out = subprocess.run([sys.executable, "-m", "talkplay.cli", "recommend", str(codes_run.path), "jazz"],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "error:" in out.stderr and "stale" in out.stderr
    assert "Traceback" not in out.stderr
    train_run(codes_run, TrainConfig(**CODES))  # retraining is the way back
    assert invoke("recommend", codes_run.path, "some jazz").exit_code == 0


def test_same_refit_and_new_tracks_are_not_stale(codes_run):
    from talkplay.tokenizer import TokenizerConfig, extend_run, tokenize_run

    tokenize_run(codes_run, TokenizerConfig(k=4, seed=0, min_dup_tokens=8))  # the same fit: allowed
    gen = np.random.default_rng(5)
    emb = {"tags": (gen.normal(size=(1, 16)).astype(np.float32), np.ones(1, bool)),
           "metadata": (gen.normal(size=(1, 8)).astype(np.float32), np.ones(1, bool))}
    extend_run(codes_run, [Track(id="fresh", title="Fresh")], embeddings=emb)
    engine = Engine.load(codes_run.path)
    assert "fresh" in engine.vocab.sequences


def test_eval_with_a_test_file_leaves_every_file_of_the_run_as_it_was(codes_run, tmp_path):
    f = tmp_path / "fresh.jsonl"
    convs = [Conversation(id=f"fresh-{i}", goal=["t2", "t5"], turns=[
        Turn(user=f"fresh polka number {i}", liked=["t2"]), Turn(user="and then some samba")])
        for i in range(3)]
    f.write_text("".join(json.dumps(c.to_dict()) + "\n" for c in convs))
    before = run_files(codes_run.path)
    res = invoke("eval", codes_run.path, "--conversations", f, "--systems", "popularity,bm25,talkplay",
                 "--n-boot", "0", "--no-plots", "--json")
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["conversations"]["n"] == 3 and "talkplay" in report["systems"]
    meta = json.loads((codes_run.model_dir / "talkplay.json").read_text())
    assert report["inputs"]["model"] == meta["model_id"]
    after = run_files(codes_run.path)
    assert {k: v for k, v in after.items() if k in before} == before  # byte for byte
    assert all(k.startswith("eval/") for k in after.keys() - before.keys())


def test_rebuilding_dialogs_after_training_needs_force_and_makes_eval_refuse_the_model(codes_run):
    train_file = codes_run.dialogs_dir / "train.jsonl"
    before = train_file.read_bytes()
    res = invoke("dialogs", codes_run.path, "--synthesize", "20")
    assert isinstance(res.exception, StaleArtifactError) and "--force" in str(res.exception)
    assert train_file.read_bytes() == before
    assert invoke("dialogs", codes_run.path, "--synthesize", "20", "--force").exit_code == 0
    assert train_file.read_bytes() != before
    res = invoke("eval", codes_run.path, "--systems", "talkplay", "--n-boot", "0")
    assert isinstance(res.exception, StaleArtifactError)
    assert "train.jsonl" in str(res.exception) and "held-out" in str(res.exception)
    assert invoke("recommend", codes_run.path, "some jazz").exit_code == 0  # serving does not need them


def test_a_model_trained_before_these_records_loads_with_a_warning(codes_run, caplog):
    path = codes_run.model_dir / "talkplay.json"
    meta = json.loads(path.read_text())
    del meta["inputs"], meta["model_id"]
    path.write_text(json.dumps(meta))
    with caplog.at_level(logging.WARNING):
        Engine.load(codes_run.path)
    assert any("records nothing of what it was trained on" in r.getMessage() for r in caplog.records)


def test_train_refuses_a_tokenizer_fitted_on_other_embeddings(tmp_path):
    run = build_synth_run(tmp_path / "run", n_train=48)
    save_npy_atomic(run.embeddings_dir / "tags.npy", np.zeros((16, 5), np.float32))
    with pytest.raises(StaleArtifactError) as e:
        train_run(run, TrainConfig(**CODES))
    assert "tags.npy" in str(e.value) and f"talkplay tokenize {run.path}" in str(e.value)
    assert not run.model_dir.exists()


def test_train_refuses_dialogs_built_from_an_older_catalog(tmp_path):
    from talkplay.dialogs import DialogsConfig, build_dialogs
    from test_baselines import make_synthetic_run

    run = make_synthetic_run(tmp_path / "run")
    build_dialogs(run, DialogsConfig(synthesize=0, align=False))
    cat = run.load_catalog()
    cat.conversations.append(Conversation(id="late", turns=[Turn(user="hi", liked=[cat.tracks[0].id])]))
    cat.save(run.path)
    with pytest.raises(StaleArtifactError) as e:
        train_run(run, TrainConfig(**CODES))
    assert "conversations changed" in str(e.value) and f"talkplay dialogs {run.path}" in str(e.value)
