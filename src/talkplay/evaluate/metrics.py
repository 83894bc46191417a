"""Ranking metrics and their aggregation, following the CPCD evaluation script.

``turn_metrics(ranked, gold)`` scores one ranked list against a gold set:
hit@k, recall@k, nDCG@k and mrr@k for k in ``K_VALUES``. ``aggregate(scored)`` turns a
list of ``ScoredTurn`` into macro (mean over conversations of each one's mean over
turns), micro (mean over turns), a per-turn breakdown and seeded 95% bootstrap
confidence intervals (conversations resampled with replacement).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

K_VALUES: tuple[int, ...] = (1, 5, 10, 20, 100)
METRIC_FAMILIES = ("hit", "recall", "ndcg", "mrr")


def metric_names(ks: Sequence[int] = K_VALUES) -> list[str]:
    """``["hit@1", ..., "mrr@100"]`` in a stable order."""
    return [f"{m}@{k}" for m in METRIC_FAMILIES for k in ks]


def turn_metrics(ranked: Sequence[str], gold: Collection[str],
                 ks: Sequence[int] = K_VALUES) -> dict[str, float]:
    """Score one ranking: ``turn_metrics(["a", "b"], {"b"}) -> {"hit@1": 0.0, ...}``.

    Binary relevance. Recall divides by the gold size (as CPCD's script does, so recall@k
    can stay below 1 when the gold set is larger than k); nDCG's ideal DCG puts
    ``min(|gold|, k)`` relevant items first; mrr@k is 1/rank of the first gold item
    within the top k, else 0. A ranking shorter than k is scored as if padded with
    misses.
    """
    gold_set = set(gold)
    if not gold_set:
        raise ValueError("gold set is empty; such turns are skipped, not scored")
    max_k = max(ks)
    hits_at = []  # rank (1-based) of each relevant item within the top max_k
    seen: set[str] = set()
    for rank, tid in enumerate(ranked[:max_k], start=1):
        if tid in seen:
            raise ValueError(f"ranking repeats track {tid!r}")
        seen.add(tid)
        if tid in gold_set:
            hits_at.append(rank)
    n_gold = len(gold_set)
    out: dict[str, float] = {}
    for k in ks:
        in_k = [r for r in hits_at if r <= k]
        out[f"hit@{k}"] = 1.0 if in_k else 0.0
        out[f"recall@{k}"] = len(in_k) / n_gold
        dcg = sum(1.0 / math.log2(r + 1) for r in in_k)
        idcg = sum(1.0 / math.log2(r + 1) for r in range(1, min(n_gold, k) + 1))
        out[f"ndcg@{k}"] = dcg / idcg
        out[f"mrr@{k}"] = 1.0 / in_k[0] if in_k else 0.0
    return {name: out[name] for name in metric_names(ks)}


def uniform_choice_metrics(n_candidates: int, ks: Sequence[int] = K_VALUES) -> dict[str, float]:
    """Expected metrics of the best possible ranking when the single gold track was drawn
    uniformly from ``n_candidates`` equally fitting tracks: ``uniform_choice_metrics(20)["hit@10"] == 0.5``.

    The ideal ranking puts exactly those candidates first, so the gold's rank is uniform on
    1..n: hit@k and recall@k are min(n, k) / n, mrr@k and nDCG@k the means of 1/r and
    1/log2(r + 1) over r <= min(n, k), divided by n.
    """
    if n_candidates < 1:
        raise ValueError(f"need at least one candidate, got {n_candidates}")
    n = n_candidates
    out: dict[str, float] = {}
    for k in ks:
        m = min(n, k)
        out[f"hit@{k}"] = out[f"recall@{k}"] = m / n
        out[f"ndcg@{k}"] = sum(1.0 / math.log2(r + 1) for r in range(1, m + 1)) / n
        out[f"mrr@{k}"] = sum(1.0 / r for r in range(1, m + 1)) / n
    return {name: out[name] for name in metric_names(ks)}


@dataclass
class ScoredTurn:
    """One evaluated turn: ``ScoredTurn("dialog1", 2, {"hit@10": 1.0, ...})``."""

    conversation_id: str
    turn_index: int
    metrics: dict[str, float]
    tags: dict[str, Any] = field(default_factory=dict)


def _stack(scored: Sequence[ScoredTurn], names: Sequence[str]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Group by conversation: (ids, per-conversation metric sums C×M, turn counts C)."""
    order: dict[str, int] = {}
    sums: list[np.ndarray] = []
    counts: list[int] = []
    for t in scored:
        i = order.setdefault(t.conversation_id, len(order))
        if i == len(sums):
            sums.append(np.zeros(len(names)))
            counts.append(0)
        sums[i] += [t.metrics[n] for n in names]
        counts[i] += 1
    return list(order), np.array(sums).reshape(len(order), len(names)), np.array(counts, dtype=float)


def aggregate(scored: Sequence[ScoredTurn], ks: Sequence[int] = K_VALUES, n_boot: int = 1000,
              seed: int = 0, max_turns: int = 10) -> dict[str, Any]:
    """Macro, micro, per-turn means and bootstrap CIs of a list of ``ScoredTurn``.

    Returns ``{"n_conversations", "n_turns", "macro": {m: v}, "micro": {m: v},
    "ci": {"macro": {m: [lo, hi]}, "micro": {...}}, "per_turn": [{"turn": i, "n": c,
    m: v, ...}, ...]}``. The per-turn breakdown covers turn indices below ``max_turns``
    (CPCD's script keeps 10) and one ``">=max_turns"`` bucket for the rest.
    """
    names = metric_names(ks)
    if not scored:
        return {"n_conversations": 0, "n_turns": 0, "macro": {}, "micro": {},
                "ci": {"macro": {}, "micro": {}}, "per_turn": []}
    _, sums, counts = _stack(scored, names)
    means = sums / counts[:, None]
    macro = means.mean(axis=0)
    micro = sums.sum(axis=0) / counts.sum()
    ci: dict[str, dict[str, list[float]]] = {"macro": {}, "micro": {}}
    if n_boot > 0:
        rng = np.random.default_rng(seed)
        n_conv = len(counts)
        # Resample conversations (the independent unit) for both averages.
        idx = rng.integers(0, n_conv, size=(n_boot, n_conv))
        boot_macro = means[idx].mean(axis=1)
        boot_micro = sums[idx].sum(axis=1) / counts[idx].sum(axis=1)[:, None]
        for key, boot in (("macro", boot_macro), ("micro", boot_micro)):
            lo, hi = np.percentile(boot, [2.5, 97.5], axis=0)
            ci[key] = {n: [float(lo[j]), float(hi[j])] for j, n in enumerate(names)}
    buckets: dict[Any, list[ScoredTurn]] = defaultdict(list)
    for t in scored:
        buckets[t.turn_index if t.turn_index < max_turns else f">={max_turns}"].append(t)
    per_turn = []
    for key in sorted(buckets, key=lambda b: b if isinstance(b, int) else max_turns):
        rows = buckets[key]
        entry: dict[str, Any] = {"turn": key, "n": len(rows)}
        for n in names:
            entry[n] = float(np.mean([r.metrics[n] for r in rows]))
        per_turn.append(entry)
    return {
        "n_conversations": int(len(counts)),
        "n_turns": int(counts.sum()),
        "macro": {n: float(macro[j]) for j, n in enumerate(names)},
        "micro": {n: float(micro[j]) for j, n in enumerate(names)},
        "ci": ci,
        "per_turn": per_turn,
    }
