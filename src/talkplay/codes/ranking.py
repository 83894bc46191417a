"""Ranked lists of catalog tracks from one prompt: exact scoring or beam search over the trie.

``rank_tracks(model, vocab, prompt_ids, k=10, exclude=set())`` returns ``[(track_id, logprob)]``
best first: k distinct catalog tracks, none excluded. A track's score is the model's
log-probability of its code sequence right after ``prompt + <|music|>``.

Two ways to get there, chosen by ``method``:

- ``"exact"``: the prompt is run once; its KV cache is shared by every candidate, and all
  catalog sequences are scored with batched forwards of ``seq_len - 1`` tokens each. Cost
  grows with catalog size (N x (L-1) tokens), and the result is the true top-k.
- ``"beam"``: beam search over the id trie with width >= k, reusing and reordering the KV
  cache: L - 1 batched one-token steps of ``width`` rows. Cost is independent of catalog
  size; the result is the top-k among the paths the beam kept.
- ``"auto"`` (default): exact when the catalog needs at most ``exact_budget`` tokens of
  scoring, beam otherwise.

Excluded tracks are removed from the trie before search (with every prefix that leads
only to excluded tracks), so the beam never wastes a slot on them.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

import torch

from talkplay.codes.constraint import MusicVocab, Prefix
from talkplay.engine.lm import lm_step
from talkplay.engine.protocol import EXACT_BUDGET


@torch.inference_mode()
def prompt_state(model: Any, prompt_ids: list[int], open_id: int) -> tuple[torch.Tensor, Any]:
    """Run ``prompt + <|music|>`` once: (log-probs of the first code [V], KV cache of batch 1)."""
    device = next(model.parameters()).device
    ids = torch.tensor([list(prompt_ids) + [open_id]], dtype=torch.long, device=device)
    logits, cache = lm_step(model, ids)
    return torch.log_softmax(logits[0, -1].float(), dim=-1), cache


def _expand(cache: Any, index: torch.Tensor) -> Any:
    c = copy.deepcopy(cache)
    c.reorder_cache(index)
    return c


@torch.inference_mode()
def score_exact(model: Any, vocab: MusicVocab, first_logp: torch.Tensor, cache: Any,
                track_ids: list[str], chunk: int = 64) -> list[tuple[str, float]]:
    """Log-probability of every track in ``track_ids`` after the cached prompt."""
    if not track_ids:
        return []
    device = first_logp.device
    seqs = torch.tensor([vocab.sequences[t] for t in track_ids], dtype=torch.long, device=device)
    scores = first_logp[seqs[:, 0]].clone()
    n = vocab.seq_len
    if n > 1:
        for s in range(0, len(track_ids), chunk):
            part = seqs[s:s + chunk]
            c = _expand(cache, torch.zeros(len(part), dtype=torch.long, device=device))
            logits, _ = lm_step(model, part[:, :n - 1], c)
            logp = torch.log_softmax(logits.float(), dim=-1)
            scores[s:s + chunk] += logp.gather(-1, part[:, 1:, None]).squeeze(-1).sum(-1)
    order = torch.argsort(scores, descending=True).tolist()
    return [(track_ids[i], float(scores[i])) for i in order]


@torch.inference_mode()
def beam_search(model: Any, vocab: MusicVocab, first_logp: torch.Tensor, cache: Any, width: int,
                dead: set[Prefix] | frozenset[Prefix] = frozenset()) -> list[tuple[str, float]]:
    """Beam search over the trie; returns up to ``width`` complete tracks, best first."""
    device = first_logp.device
    beams: list[tuple[Prefix, float]] = [((), 0.0)]
    logp_rows = first_logp[None, :]
    cache = copy.deepcopy(cache)
    for depth in range(vocab.seq_len):
        cand: list[tuple[float, int, int]] = []  # (score, parent row, token)
        for row, (prefix, score) in enumerate(beams):
            children = vocab.allowed(prefix, dead)
            if not children:
                continue
            lp = logp_rows[row, children].tolist()
            cand.extend((score + v, row, c) for v, c in zip(lp, children, strict=True))
        cand.sort(key=lambda x: -x[0])
        cand = cand[:width]
        beams = [(beams[r][0] + (c,), s) for s, r, c in cand]
        if depth == vocab.seq_len - 1 or not beams:
            break
        parents = torch.tensor([r for _, r, _ in cand], dtype=torch.long, device=device)
        cache.reorder_cache(parents)
        step = torch.tensor([[c] for _, _, c in cand], dtype=torch.long, device=device)
        logits, cache = lm_step(model, step, cache)
        logp_rows = torch.log_softmax(logits[:, -1].float(), dim=-1)
    track_of = vocab.track_of
    return [(track_of[p], s) for p, s in beams if p in track_of]


def choose_method(vocab: MusicVocab, n_candidates: int, k: int, method: str = "auto",
                  exact_budget: int = EXACT_BUDGET) -> str:
    """``"exact"`` or ``"beam"`` for this request (see the module docstring)."""
    if method not in ("auto", "exact", "beam"):
        raise ValueError(f"unknown ranking method {method!r}; use auto, exact or beam")
    if method != "auto":
        return method
    return "exact" if n_candidates * max(vocab.seq_len - 1, 1) <= exact_budget else "beam"


@torch.inference_mode()
def rank_tracks(model: Any, vocab: MusicVocab, prompt_ids: list[int], k: int = 10,
                exclude: Iterable[str] = (), method: str = "auto", width: int | None = None,
                exact_budget: int = EXACT_BUDGET) -> tuple[list[tuple[str, float]], str]:
    """Top-k ``(track_id, logprob)`` after ``prompt_ids``, and the method used."""
    exclude = set(exclude)
    candidates = [t for t in vocab.sequences if t not in exclude]
    k = min(k, len(candidates))
    if k <= 0:
        return [], "none"
    used = choose_method(vocab, len(candidates), k, method, exact_budget)
    first_logp, cache = prompt_state(model, prompt_ids, vocab.open_id)
    if used == "exact":
        ranked = score_exact(model, vocab, first_logp, cache, candidates)
    else:
        dead = vocab.dead_prefixes(exclude)
        ranked = beam_search(model, vocab, first_logp, cache, max(width or 0, k), dead)
    return ranked[:k], used
