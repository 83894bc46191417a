"""Scale-out recipes, as far as a CPU machine can check them: the accelerate configs parse,
and two CPU processes launched with the DDP config train one model with identical replicas."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"


@pytest.mark.parametrize("name, kind, procs", [
    ("ddp_cpu_2proc.yaml", "MULTI_GPU", 2),
    ("ddp_multi_gpu.yaml", "MULTI_GPU", 8),
    ("fsdp.yaml", "FSDP", 8),
    ("deepspeed_zero2.yaml", "DEEPSPEED", 8),
    ("deepspeed_zero3.yaml", "DEEPSPEED", 8),
])
def test_accelerate_configs_parse(name, kind, procs):
    from accelerate.commands.config.config_args import load_config_from_file

    cfg = load_config_from_file(str(CONFIGS / name))
    assert cfg.distributed_type.name == kind
    assert cfg.num_processes == procs
    if kind == "FSDP":
        assert cfg.fsdp_config["fsdp_version"] == 2
    if kind == "DEEPSPEED":
        assert cfg.deepspeed_config["zero_stage"] in (2, 3)
    if name != "ddp_cpu_2proc.yaml":
        assert cfg.mixed_precision == "bf16"


def test_scaling_doc_names_every_config():
    doc = (REPO / "docs" / "scaling.md").read_text()
    for cfg in CONFIGS.glob("*.yaml"):
        assert f"configs/{cfg.name}" in doc, f"docs/scaling.md does not describe {cfg.name}"


def test_ddp_two_cpu_processes_train_identical_replicas(tmp_path):
    """`accelerate launch --config_file configs/ddp_cpu_2proc.yaml` runs `talkplay train` on
    two gloo ranks: both finish the same number of steps with bit-identical weights.

    The plain `torchrun` launch is covered in test_train.py; this one checks the accelerate
    config that docs/scaling.md gives to GPU users (~10 s on 2 cores)."""
    if shutil.which("accelerate") is None and not (Path(sys.executable).parent / "accelerate").exists():
        pytest.skip("accelerate's launcher is not installed")
    from synth_run import build_synth_run

    run = build_synth_run(tmp_path / "run", n_train=48, n_test=8)
    launcher = str(Path(sys.executable).parent / "accelerate")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TALKPLAY_NO_PROGRESS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [launcher, "launch", "--config_file", str(CONFIGS / "ddp_cpu_2proc.yaml"),
           "--main_process_port", str(_free_port()), "-m", "talkplay.cli",
           "train", str(run.path), "--track-repr", "codes", "--base-model", "tiny", "--full",
           "--max-steps", "3",
           "--batch-size", "2",
           "--max-length", "128", "--threads", "1", "--save-every", "1000"]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    assert out.returncode == 0, out.stderr[-4000:]
    replicas = [json.loads((run.path / "train" / f"replica-{r}.json").read_text()) for r in (0, 1)]
    assert replicas[0]["step"] == replicas[1]["step"] == 3
    assert replicas[0]["weights_sha256"] == replicas[1]["weights_sha256"]
    meta = json.loads(run.meta_path.read_text())
    assert meta["stages"]["train"]["world_size"] == 2
    assert (run.model_dir / "config.json").exists()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
