"""Can a trained model find a track asked for by its exact title? The long-tail check.

Run as ``python benchmarks/title_lookup.py RUN [--n 24] [--seed 1] [--systems talkplay,bm25]``.
For ``--n`` random catalog tracks it asks "Play TITLE by ARTIST." as a one-turn conversation
(the phrasing of the catalog-alignment turns every track was trained on) and prints hit@1
and hit@10 per system, plus seconds per request. BM25 is the reference: it matches the words.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from talkplay.catalog import Conversation, Turn  # noqa: E402
from talkplay.evaluate.metrics import turn_metrics  # noqa: E402
from talkplay.run import Run  # noqa: E402


def recommender(name: str, run: Run):  # noqa: ANN201
    if name == "talkplay":
        from talkplay.engine import TalkPlayRecommender

        rec = TalkPlayRecommender()
    else:
        from talkplay.baselines import make_baseline

        rec = make_baseline(name)
    rec.fit(run)
    return rec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--n", type=int, default=24, help="random tracks to ask for")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--systems", default="talkplay,bm25")
    args = ap.parse_args()
    run = Run(args.run)
    tracks = random.Random(args.seed).sample(run.load_catalog().tracks, args.n)
    print("| system | tracks | hit@1 | hit@10 | s / request |\n|---|---|---|---|---|")
    for name in [s for s in args.systems.split(",") if s]:
        rec = recommender(name, run)
        hit1 = hit10 = 0.0
        t0 = time.perf_counter()
        for tr in tracks:
            by = f" by {tr.artists[0]}" if tr.artists else ""
            conv = Conversation(id=f"title-{tr.id}", turns=[Turn(user=f"Play {tr.title}{by}.")])
            m = turn_metrics([t for t, _ in rec.recommend(conv, k=10)], {tr.id}, ks=(1, 10))
            hit1 += m["hit@1"]
            hit10 += m["hit@10"]
        n = len(tracks)
        per = (time.perf_counter() - t0) / n
        print(f"| {name} | {n} | {hit1 / n:.2f} | {hit10 / n:.2f} | {per:.2f} |", flush=True)


if __name__ == "__main__":
    main()
