"""One network, two exits: the track head reads an early layer, the reply the whole stack.

The tiny base has two layers; a model trained with ``exit_layer=1`` ranks from the first
layer's output (through the final norm), whether the engine runs only that layer (ranking
alone) or the whole stack (an answer that goes on to a reply).
"""

from __future__ import annotations

import json

import pytest
import torch

from synth_run import build_synth_run
from talkplay.catalog import Conversation, Turn
from talkplay.engine import Engine
from talkplay.train import TrainConfig, train_run

TINY = dict(base_model="tiny", track_repr="content", lora=False, init="mean_cov", batch_size=16,
            lr=3e-3, max_length=256, save_every=1000, cards=True)


@pytest.fixture(scope="module")
def exit_run(tmp_path_factory):
    run = build_synth_run(tmp_path_factory.mktemp("exit") / "run")
    train_run(run, TrainConfig(**TINY, max_steps=60, exit_layer=1, text_every=3))
    return run


def test_the_exit_is_saved_and_only_every_nth_step_trains_the_reply(exit_run):
    assert json.loads((exit_run.model_dir / "tracks.json").read_text())["exit_layer"] == 1
    assert json.loads((exit_run.model_dir / "talkplay.json").read_text())["exit_layer"] == 1
    log = [json.loads(x) for x in (exit_run.path / "train" / "log.jsonl").read_text().splitlines()]
    assert [h["text_loss"] is not None for h in log[:6]] == [True, False, False, True, False, False]
    assert all(h["track_loss"] > 0 for h in log[:6])  # (a learnt target may round to 0 later)


def test_ranking_alone_and_ranking_before_a_reply_agree_and_read_the_exit(exit_run):
    engine = Engine.load(exit_run.path)
    conv = Conversation(id="c", turns=[Turn(user="play some tango music")])
    alone = engine.recommend(conv, k=4)
    answered = engine.respond(conv, k=4)
    assert [r.track_id for r in alone] == [r.track_id for r in answered.recommendations]
    assert [r.score for r in alone] == pytest.approx([r.score for r in answered.recommendations], abs=1e-4)
    assert alone[0].track_id == "t3" and answered.reply  # tango is track 3
    # the head reads layer 1, not the last layer: the two hidden states differ
    emb = engine._prompt_embeds(conv)[0]
    with torch.inference_mode():
        at_exit = engine.content.rank_forward(emb)[0, -1]
        last = engine.model(inputs_embeds=emb, output_hidden_states=True).hidden_states[-1][0, -1]
    assert not torch.allclose(at_exit, last, atol=1e-3)


def test_an_exit_at_or_past_the_last_layer_is_the_last_layer(tmp_path):
    run = build_synth_run(tmp_path / "run")
    train_run(run, TrainConfig(**TINY, max_steps=2, exit_layer=8))  # the tiny base has 2 layers
    assert json.loads((run.model_dir / "tracks.json").read_text())["exit_layer"] is None
    log = [json.loads(x) for x in (run.path / "train" / "log.jsonl").read_text().splitlines()]
    assert all(h["text_loss"] is not None for h in log)
