"""Metric code against ranx and against CPCD's official formula, reimplemented here from
the dataset README's description, on a small hand-computed case."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from talkplay.catalog import Conversation, Turn
from talkplay.evaluate.metrics import (
    K_VALUES,
    ScoredTurn,
    aggregate,
    metric_names,
    turn_metrics,
    uniform_choice_metrics,
)
from talkplay.evaluate.protocols import cpcd_cases, score_case

# --- the official CPCD formula, written from the README (not from this project's code) --


def official_scores(dialogs: list[dict], prediction_lines: list[str], ks=(1, 5, 10, 20, 100)) -> dict:
    """Score CPCD-format predictions: seeds = first 3 liked of each earlier turn; gold =
    goal minus seeds so far; seeds removed from the ranking; turns without gold skipped;
    hit@k, recall@k, mrr@k; macro = mean over dialogs of per-dialog mean, micro = over turns."""
    preds: dict[str, dict[int, list[str]]] = {}
    for line in prediction_lines:
        row = json.loads(line)
        dialog_id, turn_index = row["docid"].split(":", 1)
        preds.setdefault(dialog_id, {})[int(turn_index)] = [n["docid"] for n in row["neighbor"]]
    per_dialog: list[list[dict[str, float]]] = []
    for d in dialogs:
        seen: set[str] = set()
        values = []
        for i in range(len(d["turns"])):
            if i > 0:
                seen |= set(d["turns"][i - 1]["liked_results"][:3])
            gold = [t for t in d["goal_playlist"] if t not in seen]
            if not gold:
                continue
            ranked = [t for t in preds[d["id"]][i] if t not in seen]
            m = {}
            for k in ks:
                top = ranked[:k]
                hits = len(set(gold) & set(top))
                m[f"hit@{k}"] = 1.0 if hits else 0.0
                m[f"recall@{k}"] = hits / len(gold)
                m[f"mrr@{k}"] = next((1 / r for r, t in enumerate(top, 1) if t in gold), 0.0)
            values.append(m)
        if values:
            per_dialog.append(values)
    names = list(per_dialog[0][0])
    macro = {n: float(np.mean([np.mean([v[n] for v in vals]) for vals in per_dialog])) for n in names}
    micro = {n: float(np.mean([v[n] for vals in per_dialog for v in vals])) for n in names}
    return {"macro": macro, "micro": micro, "n_turns": sum(len(v) for v in per_dialog)}


def _turn(liked: list[str]) -> dict:
    return {"user_query": "q", "system_response": "r", "search_queries": [], "search_results": [],
            "liked_results": liked, "disliked_results": []}


HAND_DIALOGS = [
    {"id": "d1", "goal_playlist": ["a", "b", "c", "d", "e", "f"],
     "turns": [_turn(["a", "b", "c", "d"]), _turn(["e"]), _turn([])]},
    {"id": "d2", "goal_playlist": ["g", "h"], "turns": [_turn(["g", "h"]), _turn([])]},
]
HAND_PREDICTIONS = [
    {"docid": "d1:0", "neighbor": ["x", "a", "y", "z", "w"]},
    {"docid": "d1:1", "neighbor": ["a", "e", "x", "f", "y", "z"]},  # "a" is a seed: removed
    {"docid": "d1:2", "neighbor": ["q", "r", "s", "t", "d"]},
    {"docid": "d2:0", "neighbor": ["v", "w", "h", "x", "y"]},
]
# Worked by hand: d1 turns hit@1 = 0, 1, 0 (gold {a..f}, {d,e,f}, {d,f}); d2:0 hit@1 = 0;
# d2:1 has no gold left and is skipped. mrr@5: d1 = 1/2, 1, 1/5; d2 = 1/3.
# recall@5: d1 = 1/6, 2/3, 1/2; d2 = 1/2.
HAND_EXPECTED = {
    "macro": {"hit@1": (1 / 3 + 0) / 2, "mrr@5": ((0.5 + 1 + 0.2) / 3 + 1 / 3) / 2,
              "recall@5": ((1 / 6 + 2 / 3 + 1 / 2) / 3 + 1 / 2) / 2, "hit@5": 1.0},
    "micro": {"hit@1": 1 / 4, "mrr@5": (0.5 + 1 + 0.2 + 1 / 3) / 4,
              "recall@5": (1 / 6 + 2 / 3 + 1 / 2 + 1 / 2) / 4},
}


def _as_conversation(d: dict) -> Conversation:
    return Conversation(id=d["id"], goal=list(d["goal_playlist"]),
                        turns=[Turn(user=t["user_query"], assistant=t["system_response"],
                                    liked=list(t["liked_results"])) for t in d["turns"]])


def test_prediction_file_scores_identically_under_project_and_official_formula():
    lines = [json.dumps({"docid": p["docid"], "neighbor": [{"docid": t} for t in p["neighbor"]]})
             for p in HAND_PREDICTIONS]
    official = official_scores(HAND_DIALOGS, lines, ks=(1, 5))
    by_docid = {p["docid"]: p["neighbor"] for p in HAND_PREDICTIONS}
    cases = list(cpcd_cases([_as_conversation(d) for d in HAND_DIALOGS]))
    assert [c.docid for c in cases] == ["d1:0", "d1:1", "d1:2", "d2:0"]
    assert cases[1].gold == ["d", "e", "f"] and cases[2].gold == ["d", "f"]
    scored = [ScoredTurn(c.conversation_id, c.turn_index, score_case(c, by_docid[c.docid], ks=(1, 5)))
              for c in cases]
    ours = aggregate(scored, ks=(1, 5), n_boot=0)
    assert ours["n_turns"] == official["n_turns"] == 4
    for avg in ("macro", "micro"):
        for name, expected in HAND_EXPECTED[avg].items():
            assert official[avg][name] == pytest.approx(expected)
        for name, value in official[avg].items():
            assert ours[avg][name] == pytest.approx(value), (avg, name)


def test_turn_metrics_hand_case():
    m = turn_metrics(["x", "g1", "y", "g2"], {"g1", "g2", "g3"}, ks=(1, 2, 4))
    assert m["hit@1"] == 0 and m["hit@2"] == 1
    assert m["recall@4"] == pytest.approx(2 / 3)
    assert m["mrr@4"] == pytest.approx(0.5) and m["mrr@1"] == 0
    dcg = 1 / np.log2(3) + 1 / np.log2(5)
    idcg = 1 + 1 / np.log2(3) + 1 / np.log2(4)
    assert m["ndcg@4"] == pytest.approx(dcg / idcg)


def test_turn_metrics_rejects_bad_input():
    with pytest.raises(ValueError, match="empty"):
        turn_metrics(["a"], set())
    with pytest.raises(ValueError, match="repeats"):
        turn_metrics(["a", "a"], {"a"})


def test_metrics_match_ranx_on_random_rankings():
    from ranx import Qrels, Run, evaluate

    rng = random.Random(7)
    items = [f"t{i}" for i in range(300)]
    qrels, runs, ours = {}, {}, []
    for q in range(40):
        gold = rng.sample(items, rng.randint(1, 25))
        ranked = rng.sample(items, 120)
        if q % 4 == 0:  # make some rankings good, so high-k and low-k metrics both vary
            ranked = gold[:3] + [t for t in ranked if t not in gold[:3]][:117]
        qrels[f"q{q:03d}"] = {g: 1 for g in gold}
        runs[f"q{q:03d}"] = {t: float(len(ranked) - r) for r, t in enumerate(ranked)}
        ours.append(turn_metrics(ranked, gold))
    names = {f"hit@{k}": f"hit_rate@{k}" for k in K_VALUES}
    names |= {f"recall@{k}": f"recall@{k}" for k in K_VALUES}
    names |= {f"ndcg@{k}": f"ndcg@{k}" for k in K_VALUES}
    names |= {f"mrr@{k}": f"mrr@{k}" for k in K_VALUES}
    # ranx returns per-query scores in sorted query-id order: ids are zero-padded to match
    ranx_scores = evaluate(Qrels(qrels), Run(runs), list(names.values()), return_mean=False)
    for ours_name, ranx_name in names.items():
        np.testing.assert_allclose([o[ours_name] for o in ours], ranx_scores[ranx_name], atol=1e-9,
                                   err_msg=ours_name)


def test_aggregate_macro_micro_per_turn_and_ci():
    scored = [ScoredTurn("a", 0, {"hit@1": 1.0}), ScoredTurn("a", 1, {"hit@1": 0.0}),
              ScoredTurn("a", 2, {"hit@1": 0.0}), ScoredTurn("b", 0, {"hit@1": 1.0})]
    scored = [ScoredTurn(s.conversation_id, s.turn_index, {n: s.metrics["hit@1"] for n in metric_names((1,))})
              for s in scored]
    agg = aggregate(scored, ks=(1,), n_boot=500, seed=1)
    assert agg["macro"]["hit@1"] == pytest.approx((1 / 3 + 1) / 2)
    assert agg["micro"]["hit@1"] == pytest.approx(0.5)
    per_turn = [(e["turn"], e["n"], e["hit@1"]) for e in agg["per_turn"]]
    assert per_turn == [(0, 2, 1.0), (1, 1, 0.0), (2, 1, 0.0)]
    lo, hi = agg["ci"]["macro"]["hit@1"]
    assert lo <= agg["macro"]["hit@1"] <= hi and lo < hi
    assert aggregate(scored, ks=(1,), n_boot=500, seed=1)["ci"] == agg["ci"]  # seeded
    assert aggregate([], ks=(1,))["n_turns"] == 0


@pytest.mark.parametrize("n", [1, 3, 10, 17, 150])
def test_uniform_choice_metrics_are_the_mean_over_every_gold_position(n):
    ranking = [f"t{i}" for i in range(n)]
    per_position = [turn_metrics(ranking, {g}) for g in ranking]
    expected = {m: sum(p[m] for p in per_position) / n for m in metric_names()}
    assert uniform_choice_metrics(n) == pytest.approx(expected)
    assert uniform_choice_metrics(20)["hit@10"] == 0.5
    with pytest.raises(ValueError):
        uniform_choice_metrics(0)
