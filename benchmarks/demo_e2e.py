"""End-to-end time of `talkplay demo` per stage, and the hit@10 it reaches.

    python benchmarks/demo_e2e.py --run /tmp/demo-bench [--config cfg.json] [--fresh]

Prints a Markdown table: seconds per stage, total, the 1-minute load average before and
after (the machine may be shared: a load above the core count means contention), and the
evaluation's macro hit@10 per system. A second invocation without --fresh times the
resume path (every stage skipped).
"""

from __future__ import annotations

import argparse
import os
import shutil
import time

from talkplay.demo import DemoConfig, run_demo
from talkplay.run import Run


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", default="/tmp/talkplay-demo-bench")
    ap.add_argument("--config", default=None, help="JSON file of DemoConfig fields")
    ap.add_argument("--fresh", action="store_true", help="delete the run directory first")
    args = ap.parse_args()
    if args.fresh:
        shutil.rmtree(args.run, ignore_errors=True)
    cfg = DemoConfig.from_file(args.config) if args.config else DemoConfig()
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    result = run_demo(Run(args.run), cfg)
    total = time.perf_counter() - t0
    load1 = os.getloadavg()[0]
    print(f"machine: {os.cpu_count()} cores; load average (1 min) before {load0:.2f}, after {load1:.2f}")
    print("| stage | status | seconds |\n|---|---|---|")
    for s in result["stages"]:
        secs = f"{s['seconds']:.1f}" if s["seconds"] is not None and s["status"] != "skipped" else "–"
        print(f"| {s['name']} | {s['status']} | {secs} |")
    print(f"| **total** | | **{total:.1f}** |")
    ev = result.get("evaluation")
    if ev:
        print("\n| system | hit@10 (macro) | turns |\n|---|---|---|")
        for name, v in ev["systems"].items():
            agg = v["all"]
            print(f"| {name} | {agg['macro'].get('hit@10', float('nan')):.3f} | {agg.get('n_turns', '')} |")


if __name__ == "__main__":
    main()
