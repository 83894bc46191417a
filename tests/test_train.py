"""Training: resume, LoRA with new rows and head, keep-layers, the CLI, data parallel."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from typer.testing import CliRunner

from synth_run import build_synth_run
from talkplay.cli import app
from talkplay.errors import TalkPlayError
from talkplay.run import Run
from talkplay.train import TrainConfig, train_run

CODES = dict(base_model="tiny", track_repr="codes", lora=False,
             init="mean_cov")  # these tests cover the music-token path
ENV = {**os.environ, "TALKPLAY_NO_PROGRESS": "1", "HF_HUB_OFFLINE": "1"}


def _cli(*args: str):
    """The real ``talkplay`` app in-process (saves the interpreter start-up per call)."""
    return CliRunner().invoke(app, list(args))


def _losses(run: Run) -> dict[int, float]:
    rows = [json.loads(x) for x in (run.path / "train" / "log.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


def test_resume_continues_with_the_same_loss(tmp_path):
    run = build_synth_run(tmp_path / "run", n_train=48)
    cfg = dict(**CODES, max_steps=6, save_every=3, batch_size=4, lr=3e-3, max_length=128)
    first = train_run(run, TrainConfig(**cfg))
    assert first["steps"] == 6
    full = _losses(run)
    assert sorted(full) == [1, 2, 3, 4, 5, 6]
    assert (run.checkpoints_dir / "checkpoint-3").is_dir()
    # interrupted after step 3: the later checkpoint and the outputs never happened
    shutil.rmtree(run.checkpoints_dir / "checkpoint-6")
    shutil.rmtree(run.model_dir)
    shutil.rmtree(run.path / "train")
    again = train_run(run, TrainConfig(**cfg, resume=True))
    assert again["resumed_from"].endswith("checkpoint-3")
    resumed = _losses(run)
    for step in (4, 5, 6):
        assert resumed[step] == pytest.approx(full[step], rel=1e-5, abs=1e-6)
    assert (run.model_dir / "config.json").exists()


def test_codes_training_stops_at_its_time_budget_and_saves_the_model(tmp_path):
    run = build_synth_run(tmp_path / "run", n_train=48)
    out = train_run(run, TrainConfig(**CODES, max_steps=50, batch_size=4, max_length=128,
                                     time_budget=1e-6))  # spent by the end of the first step
    assert out["steps"] == 1
    assert (run.model_dir / "config.json").exists() and run.stage("train")["steps"] == 1


def test_cli_lora_untied_trains_new_rows_and_head_only_and_saves_plain_model(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from talkplay.model import expand_vocab, load_base
    from talkplay.tokenizer import MusicTokenizer

    run = build_synth_run(tmp_path / "run", n_train=48)
    out = _cli("train", str(run.path), "--track-repr", "codes", "--base-model", "tiny-untied", "--lora",
               "--lora-rank", "4",
               "--max-steps", "4", "--save-every", "2", "--batch-size", "4", "--lr", "1e-2",
               "--max-length", "128", "--keep-layers", "1", "--json")
    assert out.exit_code == 0, out.output
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1
    summary = json.loads(lines[0])
    assert summary["steps"] == 4 and summary["config"]["lora"] and summary["kept_layers"] == 1
    assert (run.checkpoints_dir / "checkpoint-2").is_dir()
    assert (run.path / "train" / "loss.png").stat().st_size > 1000
    assert (run.path / "train" / "log.jsonl").exists()
    assert Run(run.path).stage("train")["steps"] == 4

    model = AutoModelForCausalLM.from_pretrained(run.model_dir)
    tok = AutoTokenizer.from_pretrained(run.model_dir)
    assert model.config.num_hidden_layers == 1
    assert not any("lora" in n for n, _ in model.named_parameters())
    music = MusicTokenizer.load(run.tokenizer_dir)
    base, base_tok = load_base("tiny-untied")
    expand_vocab(base, base_tok, music, seed=0)
    assert tok.get_vocab() == base_tok.get_vocab()
    new = torch.tensor(tok.convert_tokens_to_ids(["<|music|>", "<|/music|>", *music.vocab]))
    old = torch.arange(int(new.min()))
    for getter in ("get_input_embeddings", "get_output_embeddings"):
        w, w0 = getattr(model, getter)().weight, getattr(base, getter)().weight
        assert torch.equal(w[old], w0[old]), f"{getter}: old rows changed"
        moved = (w[new] - w0[new]).abs().amax(dim=1).gt(1e-4)
        # every head row gets a gradient through the softmax; an input row only when its
        # token occurs in the batches (unused disambiguation/unknown tokens may not)
        assert bool(moved[:2].all()) and int(moved.sum()) >= len(new) // 2, getter
        if getter == "get_output_embeddings":
            assert bool(moved.all())
    # the single kept layer's attention did change (the adapters were merged in)
    q, q0 = model.model.layers[0].self_attn.q_proj.weight, base.model.layers[0].self_attn.q_proj.weight
    assert not torch.equal(q, q0)


def test_cli_rejects_bad_settings_and_missing_dialogs(tmp_path):
    run = build_synth_run(tmp_path / "run", n_train=48)
    out = _cli("train", str(run.path), "--batch-size", "0")
    assert isinstance(out.exception, TalkPlayError) and "--batch-size" in str(out.exception)
    (run.dialogs_dir / "train.jsonl").unlink()
    out = _cli("train", str(run.path), "--max-steps", "1")
    assert isinstance(out.exception, TalkPlayError) and "train.jsonl" in str(out.exception)
    # the installed command turns it into one red line and exit status 2
    proc = subprocess.run([sys.executable, "-m", "talkplay.cli", "train", str(run.path), "--lr", "0"],
                          capture_output=True, text=True, env=ENV, timeout=300)
    assert proc.returncode == 2 and "--lr" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("repr_", ["codes", "content"])
def test_two_process_data_parallel_replicas_agree(tmp_path, repr_):
    import socket

    run = build_synth_run(tmp_path / "run", n_train=48)
    with socket.socket() as s:  # a free port for the process group's rendezvous
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", port,
           "-m", "talkplay.cli", "train", str(run.path), "--track-repr", repr_, "--base-model", "tiny",
           "--full",
           "--max-steps", "2", "--batch-size", "2", "--time-budget", "30",
           "--max-length", "128", "--lr", "1e-2", "--threads", "1", "--json"]
    out = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert len(out.stdout.strip().splitlines()) == 1  # only the main process reports
    assert json.loads(out.stdout)["world_size"] == 2
    reps = [json.loads((run.path / "train" / f"replica-{r}.json").read_text()) for r in (0, 1)]
    assert reps[0]["step"] == reps[1]["step"] == 2
    assert reps[0]["weights_sha256"] == reps[1]["weights_sha256"]


def test_gradient_checkpointing_gives_the_same_losses(tmp_path):
    """The scale-out memory flag changes how activations are kept, not what is learned."""
    cfg = dict(**CODES, max_steps=3, save_every=100, batch_size=4, lr=3e-3, max_length=128)
    plain = build_synth_run(tmp_path / "plain", n_train=24)
    train_run(plain, TrainConfig(**cfg))
    ckpt = build_synth_run(tmp_path / "ckpt", n_train=24)
    out = train_run(ckpt, TrainConfig(**cfg, gradient_checkpointing=True))
    assert out["config"]["gradient_checkpointing"] is True
    a, b = _losses(plain), _losses(ckpt)
    assert sorted(a) == sorted(b) == [1, 2, 3]
    for step in a:
        assert b[step] == pytest.approx(a[step], rel=1e-4, abs=1e-5)


@pytest.mark.parametrize("extra", [dict(grad_accum=2), dict(lora=True, base_model="tiny-untied")],
                         ids=["full-grad-accum", "lora-untied"])
def test_head_at_supervised_positions_gives_the_trainers_losses(tmp_path, extra):
    """Logits only where the loss mask is 1 is a speed-up, not a different objective."""
    cfg = dict(**CODES, max_steps=3, save_every=100, batch_size=4, lr=3e-3, max_length=128) | extra
    full = build_synth_run(tmp_path / "full", n_train=24)
    train_run(full, TrainConfig(**cfg, supervised_logits=False))
    sparse = build_synth_run(tmp_path / "sparse", n_train=24)
    train_run(sparse, TrainConfig(**cfg, supervised_logits=True))
    a, b = _losses(full), _losses(sparse)
    assert sorted(a) == sorted(b) == [1, 2, 3]
    assert a[3] != a[1]  # it trained
    for step in a:
        assert b[step] == pytest.approx(a[step], rel=1e-4, abs=1e-5)
