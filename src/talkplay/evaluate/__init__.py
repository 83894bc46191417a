"""Evaluation: protocols, metrics, reports. ``evaluate_run(Run(path), EvalConfig(protocol="cpcd"))``.

See ``protocols`` (CPCD multi-turn, next-track), ``metrics`` (hit/recall/nDCG/MRR, macro,
micro, bootstrap CIs) and ``report``; the train/test conversations of a run are
``talkplay.splits``.
"""

from talkplay.evaluate.metrics import K_VALUES, ScoredTurn, aggregate, turn_metrics
from talkplay.evaluate.protocols import PROTOCOLS, EvalCase, cpcd_cases, make_cases, next_track_cases
from talkplay.evaluate.runner import DEFAULT_BASELINES, EvalConfig, LeakProbe, evaluate_run

__all__ = ["DEFAULT_BASELINES", "K_VALUES", "PROTOCOLS", "EvalCase", "EvalConfig", "LeakProbe", "ScoredTurn",
           "aggregate", "cpcd_cases", "evaluate_run", "make_cases",
           "next_track_cases", "turn_metrics"]
