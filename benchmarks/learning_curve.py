"""What training adds as it gets more to learn from: the CPCD learning curve.

Run as ``python benchmarks/learning_curve.py --base runs/cpcd --work runs/curve
[--fractions 0.25,0.5,1] [--sources searches,alignment,follow-ups] [--train-args "--goal-weight 0"]
[--plot docs/learning_curve.png] [--markdown]``. ``--base`` is an imported and encoded CPCD
run (its recorded split: 350 train / 50 test). Each point gets a copy of it, ``talkplay
dialogs`` (CPCD conversations only, or with the curators' searches, the catalog alignment or
chit-chat follow-ups for ``--sources``), a seeded ``fraction`` of the CPCD training
conversations, ``talkplay train`` with the default recipe on metadata rows (plus
``--train-args``) and ``talkplay eval --systems dense,untrained,talkplay``. Points already
evaluated are read back, so an interrupted curve resumes. Prints hit@10 and mrr@100 of the
trained model beside its untrained start per point, and plots both against training
conversations.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cpcd import print_table  # noqa: E402

RECIPE = ["--modalities", "metadata", "--time-budget", "0", "--epochs", "3"]
# each source alone on top of CPCD's conversations (`talkplay dialogs` flags)
CPCD_ONLY = ["--no-align", "--no-search", "--no-follow-ups"]
SOURCES = {"searches": ["--no-align", "--no-follow-ups"], "alignment": ["--no-search", "--no-follow-ups"],
           "follow-ups": ["--no-align", "--no-search", "--follow-ups"]}


def point(base: Path, work: Path, name: str, fraction: float, dialogs: list[str],
          train_args: list[str]) -> dict:
    """Build, train and evaluate one point of the curve (or read back its report)."""
    path = work / name
    report = path / "eval" / "curve.json"
    if report.exists():
        return json.loads(report.read_text())
    if path.exists():
        shutil.rmtree(path)
    skip = shutil.ignore_patterns("model", "checkpoints", "eval", "dialogs", "train")
    shutil.copytree(base, path, ignore=skip)
    env = {**os.environ, "TALKPLAY_NO_PROGRESS": "1", "HF_HUB_OFFLINE": "1"}
    cli = [sys.executable, "-m", "talkplay.cli"]
    with open(path / "curve.log", "w") as log:
        def call(*args: str) -> None:
            subprocess.run([*cli, *args], check=True, env=env, stdout=log, stderr=subprocess.STDOUT)

        call("dialogs", str(path), *dialogs)
        train = path / "dialogs" / "train.jsonl"
        lines = train.read_text(encoding="utf-8").splitlines()
        # searches, alignment and chit-chat follow-ups are a source's, kept whole beside the sample
        packed = [bool(d.get("extra", {}).get("alignment")) or d.get("source") == "follow-up"
                  for d in map(json.loads, lines)]
        cpcd = [x for x, p in zip(lines, packed, strict=True) if not p]
        keep = set(random.Random(0).sample(range(len(cpcd)), round(fraction * len(cpcd))))
        kept = [x for i, x in enumerate(cpcd) if i in keep]
        kept += [x for x, p in zip(lines, packed, strict=True) if p]
        train.write_text("\n".join(kept) + "\n", encoding="utf-8")
        call("train", str(path), *RECIPE, *train_args)
        call("eval", str(path), "--systems", "dense,untrained,talkplay", "--name", "curve", "--n-boot", "0",
             "--no-plots", "--replies", "0", "--no-follow-ups")
    out = json.loads(report.read_text())
    out["n_cpcd_train"] = len(keep)
    out["train_summary"] = json.loads((path / "run.json").read_text())["stages"]["train"]
    report.write_text(json.dumps(out))
    return out


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curve = [r for r in rows if r["source"] == "CPCD"]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for ax, metric in zip(axes, ("hit@10", "mrr@100"), strict=True):
        n = [r["n"] for r in curve]
        for system, style in (("talkplay", "o-"), ("untrained", "s--"), ("dense", "^:")):
            ax.plot(n, [r[system][metric] for r in curve], style, label=system)
        for r in rows:
            if r["source"] != "CPCD":
                ax.plot([r["n"]], [r["talkplay"][metric]], "D", label=f"talkplay + {r['source']}")
        ax.set_xlabel("CPCD training conversations")
        ax.set_title(f"{metric}, CPCD 50 held-out conversations")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", type=Path, required=True)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--fractions", default="0.25,0.5,1")
    ap.add_argument("--sources", default="", help="comma-separated: searches, alignment, follow-ups "
                                                  "(each at 100%%)")
    ap.add_argument("--train-args", default="", help="extra `talkplay train` flags for every point")
    ap.add_argument("--plot", type=Path, default=None)
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    extra = shlex.split(args.train_args)
    plan = [(f"cpcd-{f}", "CPCD", float(f), CPCD_ONLY) for f in args.fractions.split(",")]
    plan += [(f"cpcd+{s}", s, 1.0, SOURCES[s]) for s in args.sources.split(",") if s]
    rows = []
    for name, source, fraction, dialogs in plan:
        rep = point(args.base, args.work, name, fraction, dialogs, extra)
        macro = {s: rep["systems"][s]["all"]["macro"] for s in ("dense", "untrained", "talkplay")}
        rows.append({"source": source, "n": rep["n_cpcd_train"], "steps": rep["train_summary"].get("steps"),
                     **macro})
    table = [[r["source"], str(r["n"]), str(r["steps"]),
              *[f"{r[s][m]:.3f}" for s in ("untrained", "talkplay") for m in ("hit@10", "mrr@100")],
              f"{r['talkplay']['hit@10'] - r['untrained']['hit@10']:+.3f}",
              f"{r['talkplay']['mrr@100'] - r['untrained']['mrr@100']:+.3f}"] for r in rows]
    print_table("learning curve, CPCD 350/50", ["training data", "CPCD conversations", "steps",
                                                "untrained hit@10", "untrained mrr@100", "trained hit@10",
                                                "trained mrr@100", "Δ hit@10", "Δ mrr@100"],
                table, args.markdown)
    if args.plot:
        plot(rows, args.plot)
        print(f"plot: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
