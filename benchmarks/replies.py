"""Reply faithfulness with and without the engine's guard, side by side on one run.

    python benchmarks/replies.py runs/cpcd-cards --protocol cpcd [--limit 60] [--markdown]

Answers the last scored held-out turn of each conversation (as ``talkplay eval`` does)
twice: once as the model writes alone (``guard_replies=False``), once with the guard that
rolls back names outside the answer's tracks. Prints faithfulness, distinct-2, request
mentions, seconds per reply and the rollbacks the guard needed, plus a few replies to read.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cpcd import print_table  # noqa: E402

from talkplay.engine import Engine, EngineConfig  # noqa: E402
from talkplay.evaluate.protocols import make_cases  # noqa: E402
from talkplay.evaluate.replies import reply_report  # noqa: E402
from talkplay.run import Run  # noqa: E402
from talkplay.splits import run_split  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--protocol", default="cpcd")
    ap.add_argument("--limit", type=int, default=60)
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--guarded-only", action="store_true", help="skip the model-alone pass")
    args = ap.parse_args()
    run = Run(args.run)
    catalog = run.load_catalog(validate=False)
    convs = run_split(run, catalog, record=False).test
    cases = make_cases(args.protocol, convs, catalog.ids(), False)
    rows, samples, shown = [], [], []
    for guard in (True,) if args.guarded_only else (False, True):
        engine = Engine.load(run.path, EngineConfig(guard_replies=guard))
        t0 = time.perf_counter()
        rep = reply_report(engine, cases, catalog, args.limit)
        per = (time.perf_counter() - t0) / max(rep["n_replies"], 1)
        rows.append(["guarded" if guard else "model alone", str(rep["n_replies"]),
                     f"{rep['reply_faithfulness']:.3f}", f"{rep['distinct_2']:.3f}",
                     "–" if rep["request_mention"] is None else f"{rep['request_mention']:.3f}",
                     f"{per:.2f}"])
        if not guard:
            samples = [r for r in rep["replies"] if r["unfaithful"]][:3]
        shown = rep["replies"][:3]
    for r in shown:
        print(f"\nrequest: {r['request'][:200]}")
        for card in r["cards"]:
            print("  card:", card)
        print("  reply:", r["reply"])
    for s in samples:
        print(f"\nunfaithful without the guard: {s['reply']!r}\n  cards: {s['cards']}\n"
              f"  named: {s['unfaithful']}")
    print()
    header = ["replies", "n", "faithful", "distinct-2", "mentions request", "s / answer"]
    print_table(f"Replies on {run.path}", header, rows, args.markdown)


if __name__ == "__main__":
    main()
