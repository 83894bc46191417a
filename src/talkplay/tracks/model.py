"""A causal LM and a ``TrackNet`` as one network: ``ContentModel(lm, net, features, slot_id)``.

Tracks enter the LM as their rows (the slot's input embedding), the request's text
embedding (and the conversation's tracks so far, ``TrackNet.query``) is added at every
``<|music|>`` the assistant writes, and the hidden state there is scored against every
catalog row. ``model(**batch)`` (a batch from
``talkplay.tracks.data.collate`` plus ``queries``) returns the summed text and track loss
for training; ``model.embed(...)`` and ``model.track_scores(...)`` serve inference.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from talkplay.tracks.exit import exit_hidden, run_to_exit
from talkplay.tracks.features import TrackFeatures
from talkplay.tracks.network import TrackNet


class ContentModel(nn.Module):
    """See the module docstring. ``features`` become buffers (not saved: they come from the run)."""

    def __init__(self, lm: Any, net: TrackNet, features: TrackFeatures, modality_dropout: float = 0.0,
                 full_softmax_max: int = 200_000, negatives: int = 8192) -> None:
        super().__init__()
        self.lm = lm
        self.net = net
        self.modality_dropout = modality_dropout
        # beyond this many tracks a step scores its own tracks plus `negatives` random ones
        self.full_softmax_max = full_softmax_max
        self.negatives = negatives
        # the rows the track loss ranks a target among (None: every catalog row); see
        # ``set_candidates``
        self.candidates: torch.Tensor | None = None
        self.set_features(features)

    def set_candidates(self, rows: torch.Tensor | None) -> None:
        """Rank training targets among these rows only (``None``: the whole catalog).

        The trainer passes the tracks its conversations hold: a track no training conversation
        has is never a target, so a softmax over the whole catalog teaches "not seen in
        training" as a reason to rank a track low, and cold tracks, those users add and those
        a held-out conversation asks for, pay (CPCD: BENCHMARKS.md, "Learning beyond the start").
        """
        self.candidates = None if rows is None else torch.unique(rows.long())

    def set_features(self, features: TrackFeatures) -> None:
        """Point the model at a catalog's content (new tracks need nothing else: cold start)."""
        arrays, masks = features.tensors()
        self.features = features
        self.n_tracks = len(features.ids)
        for m in self.net.modalities:
            self.register_buffer(f"feat_{m}", arrays[m], persistent=False)
            self.register_buffer(f"mask_{m}", masks[m], persistent=False)

    def rows(self, index: torch.Tensor | None = None) -> torch.Tensor:
        """(N, hidden) rows of every catalog track, or of the tracks ``index`` names."""
        pick = (lambda t: t) if index is None else (lambda t: t[index])
        arrays = {m: pick(getattr(self, f"feat_{m}")) for m in self.net.modalities}
        masks = {m: pick(getattr(self, f"mask_{m}")) for m in self.net.modalities}
        if self.training and self.modality_dropout > 0:
            # Training targets come from training conversations, so they always have
            # co-occurrence (and such) while held-out tracks often do not: hide it at random,
            # or "has co-occurrence" alone becomes the reason to recommend a track.
            for m in masks:
                if m not in self.net.cfg.text_modalities:
                    keep = torch.rand(masks[m].shape, device=masks[m].device) >= self.modality_dropout
                    masks[m] = masks[m] & keep
        return self.net.rows(arrays, masks)

    def embed(self, input_ids: torch.Tensor, rows: torch.Tensor, slot_b: torch.Tensor, slot_p: torch.Tensor,
              slot_row: torch.Tensor, open_b: torch.Tensor, open_p: torch.Tensor,
              open_query: torch.Tensor, ctx_open: torch.Tensor | None = None,
              ctx_row: torch.Tensor | None = None, ctx_w: torch.Tensor | None = None) -> torch.Tensor:
        """Input embeddings: token rows, slots replaced by track rows, requests (with their
        context: ``ctx_*`` as ``TrackNet.context`` reads them) added at opens."""
        emb = self.lm.get_input_embeddings()(input_ids)
        if len(slot_b):
            emb = emb.index_put((slot_b, slot_p), rows[slot_row].to(emb.dtype))
        if len(open_b):
            ctx = None
            if ctx_open is not None and self.net.context_in is not None:
                ctx = self.net.context(rows, len(open_b), ctx_open, ctx_row, ctx_w)
            q = self.net.query(open_query, ctx).to(emb.dtype)
            emb = emb.index_put((open_b, open_p), q, accumulate=True)
        return emb

    def track_scores(self, hidden: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        return self.net.scores(hidden.float(), rows.float())

    def rank_hidden(self, hidden_states: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """(B, L, hidden) the track head reads, from a full forward's ``hidden_states``."""
        return exit_hidden(self.lm, hidden_states, self.net.cfg.exit_layer)

    def rank_forward(self, emb: torch.Tensor, **inputs: Any) -> torch.Tensor:
        """(B, L, hidden) the track head reads, running the LM only up to its exit (``inputs``:
        more forward arguments, such as a padded batch's ``attention_mask`` and ``position_ids``)."""
        return run_to_exit(self.lm, self.net.cfg.exit_layer, inputs_embeds=emb, **inputs)

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor, slot_b: torch.Tensor,
                slot_p: torch.Tensor, slot_row: torch.Tensor, open_b: torch.Tensor, open_p: torch.Tensor,
                open_q: torch.Tensor, open_target: torch.Tensor, queries: torch.Tensor,
                ctx_open: torch.Tensor | None = None, ctx_row: torch.Tensor | None = None,
                ctx_w: torch.Tensor | None = None, goal_open: torch.Tensor | None = None,
                goal_row: torch.Tensor | None = None, avoid_open: torch.Tensor | None = None,
                avoid_row: torch.Tensor | None = None, text_weight: float = 1.0,
                goal_weight: float = 0.0, disliked_weight: float = 1.0) -> dict[str, torch.Tensor]:
        """``{"loss", "text_loss", "track_loss", "goal_loss", "n_text", "n_tracks"}`` for one batch.

        The text loss is the LM's cross-entropy on the supervised reply tokens (its head run
        only there; ``text_weight`` 0 skips it, and the layers past the track head's exit with
        it); the track loss is the cross-entropy of the target at each supervised
        ``<|music|>`` among the candidates (``set_candidates``; default every catalog row) less
        the conversation's tracks before it: a full softmax, or, past ``full_softmax_max``
        candidates, a sampled one over the batch's own tracks (in-batch negatives) and
        ``negatives`` random candidates. With ``goal_weight``, each open's ``goal`` tracks
        (``goal_open``/``goal_row`` pairs: the playlist the conversation builds, beyond the
        turn's own track) are targets too, their mean cross-entropy weighted so. With
        ``disliked_weight`` other than 1, each open's turned-down tracks (``avoid_open``/
        ``avoid_row`` pairs: what the user rejected at that turn) count that many times among
        its wrong answers (their logits plus its log): the near misses a curator's own
        candidates are, where the rest of the catalog is mostly far off.
        """
        goal = goal_weight > 0 and goal_row is not None and len(goal_row) > 0
        if not goal:
            goal_row = slot_row[:0]
        avoid = (disliked_weight != 1.0 and avoid_open is not None and avoid_row is not None
                 and len(avoid_row) > 0)
        if not avoid:
            avoid_row = slot_row[:0]
        cand_rows = self.candidates.to(slot_row.device) if self.candidates is not None else None
        n_cand = self.n_tracks if cand_rows is None else len(cand_rows)
        if n_cand > self.full_softmax_max:
            extra = torch.randint(n_cand, (self.negatives,), device=slot_row.device)
            if cand_rows is not None:
                extra = cand_rows[extra]
            ctx = ctx_row if ctx_row is not None else slot_row[:0]
            parts = [slot_row, open_target.clamp(min=0), ctx, goal_row, avoid_row, extra]
            cand, inverse = torch.unique(torch.cat(parts), return_inverse=True)
            n_slots, n_opens = len(slot_row), len(open_target)
            slot_row = inverse[:n_slots]
            open_target = torch.where(open_target >= 0, inverse[n_slots:n_slots + n_opens], open_target)
            if ctx_row is not None:
                ctx_row = inverse[n_slots + n_opens: n_slots + n_opens + len(ctx)]
            n_before = n_slots + n_opens + len(ctx)
            goal_row = inverse[n_before: n_before + len(goal_row)]
            n_before += len(goal_row)
            avoid_row = inverse[n_before: n_before + len(avoid_row)]
            rows = self.rows(cand)
            cand_rows = None  # the sampled rows are the candidates
        else:
            rows = self.rows()
        emb = self.embed(input_ids, rows, slot_b, slot_p, slot_row, open_b, open_p, queries[open_q],
                         ctx_open, ctx_row, ctx_w)
        target = labels[:, 1:]
        keep = target != -100
        zero = emb.sum() * 0.0
        text_loss = zero
        if text_weight > 0:
            out = self.lm(inputs_embeds=emb, output_hidden_states=True, logits_to_keep=1, use_cache=False)
            hidden = out.hidden_states[-1]  # replies: the full stack
            at_exit = self.rank_hidden(out.hidden_states)
            if keep.any():
                logits = self.lm.get_output_embeddings()(hidden[:, :-1][keep]).float()
                text_loss = nn.functional.cross_entropy(logits, target[keep])
        else:  # a step for the track head alone runs the layers up to its exit, no further
            at_exit = self.rank_forward(emb)
        sel = open_target >= 0
        track_loss = goal_loss = zero
        if sel.any():
            track_loss, goal_loss = self._track_losses(
                at_exit, rows, cand_rows, (slot_b, slot_p, slot_row), sel, open_b, open_p, open_target,
                goal_open, goal_row if goal else None,
                (avoid_open, avoid_row, disliked_weight) if avoid else None)
        return {"loss": text_weight * text_loss + track_loss + goal_weight * goal_loss,
                "text_loss": text_loss.detach(), "track_loss": track_loss.detach(),
                "goal_loss": goal_loss.detach(), "n_text": keep.sum(), "n_tracks": sel.sum()}

    def _track_losses(self, at_exit: torch.Tensor, rows: torch.Tensor, cand_rows: torch.Tensor | None,
                      slots: tuple[torch.Tensor, torch.Tensor, torch.Tensor], sel: torch.Tensor,
                      open_b: torch.Tensor, open_p: torch.Tensor, open_target: torch.Tensor,
                      goal_open: torch.Tensor | None, goal_row: torch.Tensor | None,
                      avoid: tuple[torch.Tensor, torch.Tensor, float] | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """(target cross-entropy, goal cross-entropy) of the supervised opens ``sel`` (see ``forward``).
        ``cand_rows``: the rows ranked (None: all of ``rows``); ``slots``: (batch, position, row);
        ``avoid``: (open, row, weight) of the turned-down tracks."""
        slot_b, slot_p, slot_row = slots
        ob, op, target_row = open_b[sel], open_p[sel], open_target[sel]
        ranked, col = rows, slot_row
        if cand_rows is not None:  # places among the candidates
            ranked = rows[cand_rows]
            place = torch.full((len(rows),), -1, dtype=torch.long, device=rows.device)
            place[cand_rows] = torch.arange(len(cand_rows), device=rows.device)
            target_row, col = place[target_row], place[slot_row]
            goal_row = place[goal_row] if goal_row is not None else None
            if avoid is not None:
                avoid = (avoid[0], place[avoid[1]], avoid[2])
        scores = self.track_scores(at_exit[ob, op], ranked)
        # each open's index among sel, for the per-open pairs (goal, avoid)
        where = torch.full((len(open_target),), -1, dtype=torch.long, device=scores.device)
        where[sel] = torch.arange(int(sel.sum()), device=scores.device)
        if avoid is not None:  # a turned-down track counts `weight` times
            a_open, a_row = where[avoid[0]], avoid[1]
            ok = (a_open >= 0) & (a_row >= 0)  # (a row outside the candidates is never ranked)
            bump = torch.full((int(ok.sum()),), math.log(avoid[2]), device=scores.device, dtype=scores.dtype)
            scores = scores.index_put((a_open[ok], a_row[ok]), bump, accumulate=True)
        # the conversation's tracks before this <|music|> are never offered again (the engine
        # excludes them: talkplay.exclusion), so the target ranks among the others; left in,
        # they teach that the tracks so far, which the context points at, are wrong answers
        o, sl = ((slot_b[None, :] == ob[:, None]) & (slot_p[None, :] < op[:, None])).nonzero(as_tuple=True)
        hide = (col[sl] >= 0) & (col[sl] != target_row[o])
        scores = scores.index_put((o[hide], col[sl][hide]), torch.tensor(float("-inf"), device=scores.device))
        track_loss = nn.functional.cross_entropy(scores, target_row)
        goal_loss = torch.zeros((), device=scores.device)  # (scores hold -inf: no 0 * sum)
        if goal_row is not None and goal_open is not None:  # goal pairs, by their open's index among sel
            g_open = where[goal_open]
            ok = (g_open >= 0) & (goal_row >= 0)
            if ok.any():
                logp = torch.log_softmax(scores, dim=-1)[g_open[ok], goal_row[ok]]
                goal_loss = -logp[torch.isfinite(logp)].mean()
        return track_loss, goal_loss
