"""TalkPlay (content-grounded tracks) under CPCD 5-fold cross-validation, beside dense retrieval.

Run as ``python benchmarks/cpcd_cv.py --base runs/cpcd --work runs/cv [--folds 5]
[--parallel 2] [--budget 20] [--train-args "..."] [--dialogs-args=--follow-ups] [--only 0,1]
[--markdown]``. ``--base`` is an imported and encoded CPCD run; each fold gets a copy whose
recorded split holds out that fold (the folds of ``benchmarks/cpcd.py --folds``), then the
README's CPU recipe: ``talkplay dialogs --no-align --no-search`` (the CPCD training
conversations and their chit-chat follow-ups; ``--dialogs-args`` adds flags), ``talkplay
train --modalities metadata --time-budget BUDGET`` (otherwise the defaults; ``--train-args``
adds flags), and ``talkplay eval --systems dense,bm25,untrained,talkplay`` with the follow-up
probe. ``--parallel`` folds run at once, sharing the cores. Prints, per system, mean ± sd
over folds of macro hit@10 and mrr@100 (overall, cold, follow-up turns) and the probe's echo
rate and hit@10 with / without a follow-up before the request (all follow-ups, and the
chit-chat alone), then per fold what training adds to its untrained start. A fold whose
report exists is read, not rerun (a fold without one is rebuilt: do not start a second run
on a folder whose folds are still running); ``--only`` runs (and reports) those folds alone.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cpcd import folds, print_table  # noqa: E402

from talkplay.evaluate.probe import CHIT_CHAT  # noqa: E402
from talkplay.run import Run  # noqa: E402
from talkplay.splits import SPLIT_STAGE  # noqa: E402

RECIPE = ["--modalities", "metadata"]
SYSTEMS = "dense,bm25,untrained,talkplay"
CELLS = [("all", "hit@10"), ("all", "mrr@100"), ("cold", "hit@10"), ("cold", "mrr@100"),
         ("follow-up", "hit@10"), ("follow-up", "mrr@100")]


def cell(report: dict, part: str, metric: str) -> float:
    """One system's figure: ``all``/``cold`` macro, or a turn slice of ``by_turn``."""
    if part in report:
        return report[part]["macro"][metric]
    return report["by_turn"][part][metric]


def run_fold(base: Path, work: Path, f: int, n_folds: int, test_ids: list[str], budget: float,
             train_args: list[str], dialogs_args: list[str], threads: int) -> dict:
    path = work / f"fold{f}"
    report = path / "eval" / "cv.json"
    if report.exists():
        return json.loads(report.read_text())
    if path.exists():
        shutil.rmtree(path)
    shutil.copytree(base, path, ignore=shutil.ignore_patterns("model", "checkpoints", "eval", "dialogs"))
    Run(path).record(SPLIT_STAGE, {"method": f"fold {f} of {n_folds}", "test_ids": test_ids,
                                   "n_test": len(test_ids)})
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TALKPLAY_NO_PROGRESS": "1", "HF_HUB_OFFLINE": "1"}
    cli = [sys.executable, "-m", "talkplay.cli"]
    log = open(path / "cv.log", "w")  # noqa: SIM115
    for cmd in (["dialogs", str(path), "--no-align", "--no-search", *dialogs_args],
                ["train", str(path), *RECIPE, "--threads", str(threads), "--time-budget", str(budget),
                 *train_args],
                ["eval", str(path), "--systems", SYSTEMS, "--name", "cv", "--n-boot", "0",
                 "--no-plots", "--replies", "0"]):
        subprocess.run([*cli, *cmd], check=True, env=env, stdout=log, stderr=subprocess.STDOUT)
    return json.loads(report.read_text())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", type=Path, required=True)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--parallel", type=int, default=2)
    ap.add_argument("--budget", type=float, default=20.0, help="Training minutes per fold at most.")
    ap.add_argument("--train-args", default="",
                    help="More `talkplay train` flags, e.g. \"--negatives catalog\".")
    ap.add_argument("--dialogs-args", default="",
                    help="More `talkplay dialogs` flags (one flag alone: --dialogs-args=--follow-ups).")
    ap.add_argument("--only", default="",
                    help="Comma-separated fold numbers to run and report (default: all).")
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    splits = folds(Run(args.base), args.folds)
    threads = max(1, (os.cpu_count() or 1) // args.parallel)  # the cores shared between the folds at once
    with ThreadPoolExecutor(args.parallel) as pool:
        def one(f: int) -> dict:
            return run_fold(args.base, args.work, f, args.folds, splits[f], args.budget,
                            shlex.split(args.train_args), shlex.split(args.dialogs_args), threads)

        picked = [int(f) for f in args.only.split(",")] if args.only else list(range(args.folds))
        results = list(pool.map(one, picked))
    header = ["system", *(f"{p} {m}" for p, m in CELLS), "echo", "with / without hit@10",
              "chit-chat with / without hit@10"]
    rows = []
    for name in results[0]["systems"]:
        systems = [r["systems"][name] for r in results]
        cells = []
        for part, m in CELLS:
            vals = [cell(s, part, m) for s in systems]
            cells.append(f"{np.mean(vals):.3f} ± {np.std(vals):.3f}")
        probes = [s["follow_ups"] for s in systems if s.get("follow_ups", {}).get("n")]
        echo = [p["echo_rate"] for p in probes]
        cells.append(f"{np.mean(echo):.3f} ± {np.std(echo):.3f}" if echo else "")
        chat = [p["by_kind"][CHIT_CHAT] for p in probes if CHIT_CHAT in p.get("by_kind", {})]
        for got in (probes, chat):
            cells.append(f"{np.mean([p['with_follow_up']['hit@10'] for p in got]):.3f} / "
                         f"{np.mean([p['without']['hit@10'] for p in got]):.3f}" if got else "")
        rows.append([name, *cells])
    steps = [Run(args.work / f"fold{f}").stage("train").get("steps") for f in picked]
    print(f"folds {picked} of {args.folds}, training steps per fold: {steps}, "
          f"budget {args.budget:g} min each")
    title = f"CPCD {args.folds}-fold CV (folds {', '.join(map(str, picked))}), macro, mean ± sd over folds"
    print_table(title, header, rows, args.markdown)
    gains = [[str(f), *(f"{cell(r['systems']['talkplay'], p, m) - cell(r['systems']['untrained'], p, m):+.3f}"
                        for p, m in CELLS)] for f, r in zip(picked, results, strict=True)
             if {"talkplay", "untrained"} <= r["systems"].keys()]
    if gains:
        print_table("trained minus untrained, per fold", ["fold", *(f"{p} {m}" for p, m in CELLS)], gains,
                    args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
