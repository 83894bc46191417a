"""Training throughput (tokens/s) and peak memory of `talkplay train` settings.

Run as ``nice python benchmarks/training.py --run RUN`` (a run with a tokenizer and dialogs;
default settings are the CPU recipe for SmolLM2-135M) or with ``--config`` several times,
e.g. ``--config "full" --config "keep8:--keep-layers 8" --config "lora8:--keep-layers 8 --lora"``.
Each setting trains ``--steps`` steps in a fresh process (so peak memory is its own) on a
copy of the run and reports tokens/s over the steps (the Trainer's count of non-padding
tokens), seconds per step and peak resident memory.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

RECIPE = "--base-model smollm2-135m --keep-layers 8 --max-length 256 --batch-size 8 --lr 1e-3 --threads 2"


def copy_for_training(run: str | Path, dst: Path,
                      folders: tuple[str, ...] = ("tokenizer", "dialogs")) -> Path:
    """Copy the catalog files, run.json and ``folders`` of ``run`` into a fresh ``dst``
    (by default what ``talkplay train`` reads), so a benchmark never touches the run's own
    model or reports."""
    run = Path(run)
    shutil.rmtree(dst, ignore_errors=True)
    dst.mkdir(parents=True)
    for name in ("catalog.parquet", "playlists.parquet", "conversations.parquet", "run.json"):
        if (run / name).exists():
            shutil.copy(run / name, dst / name)
    for name in folders:
        shutil.copytree(run / name, dst / name)
    return dst


def one(run: str, flags: str, steps: int) -> dict:
    """Train ``steps`` steps with ``flags`` on a scratch copy of ``run``; returns the summary."""
    with tempfile.TemporaryDirectory(prefix="talkplay-bench-") as tmp:
        dst = copy_for_training(run, Path(tmp) / "run")
        cmd = [sys.executable, "-m", "talkplay.cli", "train", str(dst), *shlex.split(flags),
               "--max-steps", str(steps), "--save-every", str(10 * steps), "--json"]
        env = {**os.environ, "TALKPLAY_NO_PROGRESS": "1", "HF_HUB_OFFLINE": "1"}
        out = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if out.returncode != 0:
            raise SystemExit(out.stderr[-2000:])
        return json.loads(out.stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True)
    ap.add_argument("--config", action="append", help="NAME:FLAGS (repeatable); default: the CPU recipe")
    ap.add_argument("--steps", type=int, default=6)
    args = ap.parse_args()
    configs = [c.split(":", 1) if ":" in c else (c, "") for c in (args.config or [f"recipe:{RECIPE}"])]
    console = Console(width=160)
    console.print(f"load average before: {os.getloadavg()[0]:.1f}")
    t = Table(title=f"training throughput, {args.steps} steps each")
    cols = ("setting", "flags", "tokens/s", "s/step", "trainable params", "peak RSS (GiB)", "loss first→last")
    for c in cols:
        t.add_column(c)
    for name, flags in configs:
        s = one(args.run, flags, args.steps)
        t.add_row(name, flags, f"{s['tokens_per_s']:.0f}", f"{s['train_seconds'] / max(s['steps'], 1):.2f}",
                  f"{s['trainable_parameters']:,}", f"{s['peak_rss_gib']:.2f}",
                  f"{s['first_loss']:.2f}→{s['final_loss']:.2f}")
    console.print(t)
    console.print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
