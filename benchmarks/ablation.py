"""One table of TalkPlay variants on the same held-out split, beside the baselines.

Run as ``python benchmarks/ablation.py "codes=runs/cpcd-codes" "content=runs/cpcd-meta" ...
[--baselines dense,bm25,hybrid] [--markdown]``. Every RUN must share one catalog and split
(copies of one imported and encoded run, trained differently). Each run's trained model is
scored under the CPCD protocol (``talkplay eval RUN --systems talkplay --name ablation``;
a report already written under that name is reused), the baselines once on the first run.
Rows: macro hit@10 and mrr@100 overall and on the cold slice, with 95% bootstrap CIs, plus
the training steps and seconds each run recorded.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cpcd import print_table  # noqa: E402

from talkplay.evaluate import EvalConfig, evaluate_run  # noqa: E402
from talkplay.run import Run  # noqa: E402

METRICS = ("hit@10", "mrr@100")


def scored(run: Run, systems: list[str], name: str, n_boot: int) -> dict:
    path = run.eval_dir / f"{name}.json"
    if path.exists():
        return json.loads(path.read_text())
    return evaluate_run(run, EvalConfig(systems=systems, name=name, n_boot=n_boot, plots=False))


def cell(part: dict, m: str) -> str:
    lo, hi = (part.get("ci") or {}).get("macro", {}).get(m) or (None, None)
    v = part["macro"][m]
    return f"{v:.3f}" + (f" [{lo:.3f}, {hi:.3f}]" if lo is not None else "")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", help="LABEL=RUN pairs")
    ap.add_argument("--baselines", default="dense,bm25,hybrid")
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--name", default="ablation", help="Report name (an existing one is reused).")
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    pairs = [r.split("=", 1) for r in args.runs]
    header = ["system", *METRICS, *(f"cold {m}" for m in METRICS), "train steps", "train s"]
    rows = []
    base = scored(Run(pairs[0][1]), args.baselines.split(","), "ablation-baselines", args.n_boot)
    for name, s in base["systems"].items():
        rows.append([name, *(cell(s["all"], m) for m in METRICS), *(cell(s["cold"], m) for m in METRICS),
                     "", ""])
    for label, path in pairs:
        run = Run(Path(path))
        s = scored(run, ["talkplay"], args.name, args.n_boot)["systems"]["talkplay"]
        train = run.stage("train")
        rows.append([f"talkplay: {label}", *(cell(s["all"], m) for m in METRICS),
                     *(cell(s["cold"], m) for m in METRICS), str(train.get("steps", "")),
                     str(train.get("train_seconds", ""))])
    print_table("TalkPlay variants beside the baselines (macro, 95% CI)", header, rows, args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
