"""What the learnt word weights add to the start, and what training adds on top of them.

Run as ``python benchmarks/word_weights.py RUN [--markdown]`` on a run whose model was trained
with ``--word-weights`` (``talkplay.tracks.words.word_weights``). Three systems are scored on
RUN's held-out split with the follow-up probe: the untrained start as ``talkplay eval`` scores
it (every request word at full weight), the same start reading the model's learnt word
weights, and the trained model. The middle row splits "trained minus untrained" into what
counting the training turns' words brings and what the gradient steps bring.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cpcd import print_table  # noqa: E402

import talkplay.evaluate.runner as runner  # noqa: E402
from talkplay.baselines import REGISTRY  # noqa: E402
from talkplay.baselines.untrained import UntrainedRecommender  # noqa: E402
from talkplay.evaluate import EvalConfig, evaluate_run  # noqa: E402
from talkplay.run import Run  # noqa: E402

WEIGHED = "untrained + word weights"


class WeighedStart(UntrainedRecommender):
    """The untrained start reading the run's model's learnt word weights."""

    def _fit(self, catalog, train, run) -> None:  # noqa: ANN001
        super()._fit(catalog, train, run)
        cfg = json.loads((run.model_dir / "tracks.json").read_text(encoding="utf-8"))
        if not cfg.get("word_weights"):
            raise SystemExit(f"{run.model_dir} was trained without --word-weights: nothing to compare")
        self.features.word_weights = cfg["word_weights"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    REGISTRY[WEIGHED] = lambda **kw: WeighedStart(**kw)
    runner.BASELINES = tuple(REGISTRY)  # scored like a baseline
    rep = evaluate_run(Run(args.run), EvalConfig(systems=["untrained", WEIGHED, "talkplay"], n_boot=0,
                                                 write=False, replies=0))
    rows = []
    for name, s in rep["systems"].items():
        fu, turns = s.get("follow_ups", {}), s.get("by_turn", {}).get("follow-up", {})
        cells = [f"{s[p]['macro'][m]:.3f}" for p in ("all", "cold") for m in ("hit@10", "mrr@100")]
        rows.append([name, *cells,
                     f"{turns.get('hit@10', float('nan')):.3f} / {turns.get('mrr@100', float('nan')):.3f}",
                     f"{fu.get('echo_rate', float('nan')):.3f}"])
    print_table(f"word weights, {args.run}", ["system", "hit@10", "mrr@100", "cold hit@10", "cold mrr@100",
                                              "follow-up hit@10 / mrr", "echo"], rows, args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
