"""The CPCD benchmark: every baseline (and TalkPlay, given a trained run) on real conversations.

Run as ``nice python benchmarks/cpcd.py`` (baselines; about a minute on 2 cores, most of it
the dense encoder), ``--talkplay-run runs/cpcd`` to add a trained TalkPlay run (its catalog
and split are used), ``--folds 5`` for 5-fold cross-validation, ``--markdown`` to print
the tables as Markdown for BENCHMARKS.md.

Data: the shared CPCD file (Chaganty et al., SIGIR 2023, CC BY 4.0). Catalog = every
track in it; split = 350 train / 50 test conversations by a seeded hash of the ids (the
split ``talkplay eval`` records in run.json). Protocol = CPCD's official multi-turn one.
Table: macro hit@1, hit@10, hit@100, mrr@100, recall@100 with 95% bootstrap CIs, and the
fit and predict wall time of each system. The leak-probe row ranks test-only tracks
first in random order: it is not a system, it shows how much "never seen in training"
alone would score. Also runs the pool-restricted next-track protocol on the three
TalkPlayData 2 sessions as a format and sanity check.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from talkplay.catalog import Catalog
from talkplay.evaluate import DEFAULT_BASELINES, EvalConfig, evaluate_run
from talkplay.evaluate.report import CPCD_ATTRIBUTION, markdown_table, table_rows
from talkplay.run import Run
from talkplay.sources.base import Issues
from talkplay.sources.cpcd import CPCDImporter
from talkplay.sources.talkplaydata2 import TalkPlayData2Importer
from talkplay.splits import SPLIT_STAGE, order_key

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TALKPLAY_SHARED_DATA", REPO.parent / "shared" / "data"))
BENCH_METRICS = ("hit@1", "hit@10", "hit@100", "mrr@100", "recall@100")
console = Console(stderr=True)


def build_run(data: Path, work: Path) -> Run:
    """A run whose catalog is every track of the CPCD file (reused when already built)."""
    run = Run(work / "cpcd")
    if not Catalog.exists(run.path):
        CPCDImporter().load(str(data), Issues()).save(run.path)
    return run


def folds(run: Run, n_folds: int, seed: int = 0) -> list[list[str]]:
    ids = [c.id for c in run.load_catalog(validate=False).conversations]
    ids.sort(key=lambda i: order_key(seed, i))
    return [sorted(ids[f::n_folds]) for f in range(n_folds)]


def print_table(title: str, header: list[str], rows: list[list[str]], markdown: bool = False) -> None:
    """The table on the terminal, then as Markdown (for BENCHMARKS.md) when ``markdown``."""
    t = Table(title=title)
    for i, h in enumerate(header):
        t.add_column(h, justify="left" if i == 0 else "right")
    for r in rows:
        t.add_row(*r)
    Console().print(t)
    if markdown:
        print(markdown_table(header, rows))


def cv_rows(results: list[dict]) -> tuple[list[str], list[list[str]]]:
    header = ["system", *[f"{m} (mean ± sd)" for m in BENCH_METRICS]]
    rows = []
    for name, s in results[0]["systems"].items():
        label = name if s["is_system"] else f"{name} (not a system)"
        cells = []
        for m in BENCH_METRICS:
            vals = [r["systems"][name]["all"]["macro"][m] for r in results]
            cells.append(f"{np.mean(vals):.3f} ± {np.std(vals):.3f}")
        rows.append([label, *cells])
    return header, rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=SHARED / "cpcd" / "cpcd_v1.dialogs.dev.train.jsonl")
    ap.add_argument("--tpd2", type=Path, default=SHARED / "talkplaydata2")
    ap.add_argument("--work", type=Path, default=REPO / "runs" / "bench-cpcd",
                    help="Run folder for baselines.")
    ap.add_argument("--talkplay-run", type=Path, help="A trained TalkPlay run on the CPCD catalog.")
    ap.add_argument("--systems", default=",".join(DEFAULT_BASELINES))
    ap.add_argument("--folds", type=int, default=0, help="k-fold cross-validation (0 = the 350/50 split).")
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--markdown", action="store_true", help="Also print the tables as Markdown.")
    ap.add_argument("--json-out", type=Path, help="Write all results as JSON here.")
    args = ap.parse_args(argv)
    if not args.data.exists():
        console.print(f"CPCD file not found: {args.data}")
        return 2
    systems = [s for s in args.systems.split(",") if s]
    if args.talkplay_run:
        run = Run(args.talkplay_run)
        systems.append("talkplay")
    else:
        run = build_run(args.data, args.work)
    machine = f"{os.cpu_count()}-core {platform.machine()} CPU"
    out: dict = {"machine": machine, "date": time.strftime("%Y-%m-%d"), "command": " ".join(sys.argv)}
    md: list[str] = []
    if args.folds:
        results = []
        for f, test_ids in enumerate(folds(run, args.folds)):
            run.record(SPLIT_STAGE, {"method": f"fold {f} of {args.folds}", "test_ids": test_ids,
                                     "n_test": len(test_ids)})
            results.append(evaluate_run(run, EvalConfig(systems=systems, leak_probe=True, n_boot=0,
                                                        name=f"cpcd-fold{f}", plots=False)))
        run.record(SPLIT_STAGE, {"test_ids": []})  # back to the default 350/50 split next time
        header, rows = cv_rows(results)
        print_table(f"CPCD {args.folds}-fold CV, macro", header, rows)
        md += [f"{args.folds}-fold cross-validation (macro, mean ± sd over folds):", "",
               markdown_table(header, rows)]
        out["folds"] = results
    else:
        result = evaluate_run(run, EvalConfig(systems=systems, leak_probe=True, n_boot=args.n_boot,
                                              name="cpcd-benchmark"))
        conv = result["conversations"]
        header, rows = table_rows(result, metrics=BENCH_METRICS)
        print_table(f"CPCD: {conv['n_train']} train / {conv['n']} test conversations, "
                    f"{conv['n_turns']} turns, macro with 95% CI", header, rows)
        cheader, crows = table_rows(result, metrics=("hit@10", "hit@100", "mrr@100", "recall@100"),
                                    part="cold", timing=False)
        print_table("Cold gold (tracks never in training conversations), macro", cheader, crows)
        md += [f"{conv['n_train']} train / {conv['n']} test conversations, {conv['n_turns']} scored turns, "
               f"{result['catalog']['n_tracks']} tracks; macro averages with 95% bootstrap CIs:", "",
               markdown_table(header, rows), "",
               f"Cold slice ({result['catalog']['cold_tracks']} catalog tracks never occur in training "
               "conversations; gold restricted to them):", "", markdown_table(cheader, crows)]
        out["cpcd"] = result
    if args.tpd2.exists():
        tpd2_run = Run(args.work / "tpd2")
        if not Catalog.exists(tpd2_run.path):
            Catalog(TalkPlayData2Importer().load(str(args.tpd2), Issues()).tracks).save(tpd2_run.path)
        tres = evaluate_run(tpd2_run, EvalConfig(protocol="next-track", pool=True, conversations=args.tpd2,
                                                 systems=[s for s in systems if s != "talkplay"],
                                                 n_boot=args.n_boot, plots=False))
        theader, trows = table_rows(tres, metrics=("hit@1", "hit@5", "hit@10", "mrr@100", "ndcg@10"))
        print_table(f"TalkPlayData 2, next-track within the pool ({tres['conversations']['n_turns']} turns)",
                    theader, trows)
        md += ["", f"Next-track within each session's pool on the three TalkPlayData 2 sessions "
               f"({tres['conversations']['n_turns']} turns; sanity check, far too small to rank "
               "systems):", "", markdown_table(theader, trows)]
        out["tpd2"] = tres
    md += ["", CPCD_ATTRIBUTION]
    if args.markdown:
        print("\n".join(md))
    if args.json_out:
        args.json_out.write_text(json.dumps(out, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
