"""The track-row network: content in, one row per track out, and the track head.

``net = TrackNet.create(dims, hidden=576, query_dim=384, text_modalities=["metadata"])``;
``rows = net.rows(arrays, masks)`` -> (N, hidden): each track's row from its modality
embeddings (a projection per modality, a learnt "missing" vector where a modality is
absent, summed and scaled to the LM's embedding norm). ``net.query(q)`` projects the text
encoder's embedding of the user's request, every user turn so far (followed by the request's
``words`` vector when the net has that modality, ``talkplay.tracks.words``), into the LM's
hidden size; with ``current`` the turn's own message through the same projections, times a
learnt gain, on top (a new request is not drowned by the earlier ones); and with
``context`` the conversation's tracks so far (the weighted mean of their rows), gated by the
text embedding of the turn's own message (does it go on from them or ask for something
new?). The model adds the result to the input of every ``<|music|>`` position it writes.
``net.scores(h, rows)`` scores the LM's hidden state at ``<|music|>`` against every row: one
matrix product over the catalog.

Initialisation puts every text modality and the query in one shared subspace (a fixed
random isometry of the text encoder's space), so before training the head already
compares request and track in the text encoder's terms; training moves everything.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from talkplay.tracks.data import CONTEXT_DECAY
from talkplay.tracks.words import WORDS

# the context gate's logits and the log of the current gain: lets a zero-initialised parameter
# move a long way within tens of steps (Adam's steps are about the learning rate)
GATE_SCALE = GAIN_SCALE = 20.0
MISSING_INIT = 1e-2  # the "missing" rows' random start
QUIET_ROW = 0.2  # a modality with no shared space with the request starts this quiet beside text rows


@dataclass
class TrackNetConfig:
    """Shapes and initial values of a ``TrackNet``; saved beside the model as ``tracks.json``."""

    dims: dict[str, int]
    hidden: int
    query_dim: int
    text_modalities: list[str] = field(default_factory=list)
    row_norm: float = 1.0  # rows are scaled to the LM's mean token-embedding norm
    inject_gain: float = 1.0  # query injection size, in units of row_norm (set from the LM at creation)
    logit_scale: float = 20.0
    seed: int = 0
    # at initialisation, the words vectors' weight beside the text embeddings: in the request
    # and in a row (tuned on untrained networks, CPCD: BENCHMARKS.md, "Words")
    words_gain: float = 1.0
    words_row: float = 1.5
    # the request projections hold unit-size weights and their output is multiplied by
    # inject_gain * row_norm (~700 for 30 layers): weights that large would barely move under
    # Adam, whose steps are lr-sized whatever the weight's size. False in nets saved before.
    unit_query: bool = False
    # the conversation's tracks beside the request, at initialisation as large as the request
    # itself times this (0: no context; nets saved before had none). CPCD: BENCHMARKS.md, "Context"
    context: float = 0.0
    # the turn's own message beside the request (every user turn so far), at initialisation this
    # many times as large: a new request names what it wants in its own words, which the whole
    # conversation's text dilutes (0: none; nets saved before had none). BENCHMARKS.md, "Current turn"
    current: float = 0.0
    # the LM layer whose output (through the LM's final norm) the track head reads at
    # <|music|>; replies read the full stack (None: the last layer, as nets saved before).
    # One network, two exits: ranking keeps the early layer that ranked best on CPCD while
    # the reply keeps all the pretrained language (BENCHMARKS.md, "Replies that talk")
    exit_layer: int | None = None
    # the current gain read from the turn's own message (its text embedding, through a learnt
    # linear map from zero): training can weigh a message that names music above chit-chat
    # ("thank you!", whose words a title can echo). False: one gain for every message, as
    # nets saved before. BENCHMARKS.md, "Learning beyond the start"
    current_gate: bool = False
    # the request's words (every turn's and the turn's own) weighed by what the turn's own
    # message says (its text embedding, through a learnt linear map from zero, 2 sigmoid):
    # training can silence the words of chit-chat ("thank you!", "I love it") that titles echo,
    # and keep those of a message that names an artist. False: words always at full weight, as
    # nets saved before. BENCHMARKS.md, "Learning beyond the start"
    words_gate: bool = False
    # the turn's own words taken out of the request's words (every turn's) or added to them, by a
    # signed weight its text embedding says (a learnt linear map from zero): "Nice! What else have
    # you got?" is one line of the request's words, and a words gate on them all would silence the
    # earlier turns' words too. False: none, as nets saved before. BENCHMARKS.md, "Learning
    # beyond the start"
    own_words: bool = False
    # how much each word of a request counts in its words vector, learnt from the training turns
    # (``talkplay.tracks.words.word_weights``; empty: every word at full weight, as nets saved
    # before). BENCHMARKS.md, "Words learnt from the answers"
    word_weights: dict[str, float] = field(default_factory=dict)
    # constants that change what a trained net computes or how it started, saved with it so a
    # retuned default never changes a model trained before (nets saved without them used these)
    gate_scale: float = GATE_SCALE
    gain_scale: float = GAIN_SCALE
    context_decay: float = CONTEXT_DECAY  # talkplay.tracks.data.context_tracks
    missing_init: float = MISSING_INIT
    quiet_row: float = QUIET_ROW

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def isometry(hidden: int, query_dim: int, seed: int) -> torch.Tensor:
    """A (hidden, query_dim) matrix with orthonormal columns (rows, when hidden < query_dim)."""
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(max(hidden, query_dim), min(hidden, query_dim), generator=gen, dtype=torch.float64)
    q, _ = torch.linalg.qr(a)
    return (q if hidden >= query_dim else q.T).float()


class TrackNet(nn.Module):
    """Rows from content, the query projection and the track head (see the module docstring)."""

    def __init__(self, cfg: TrackNetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.modalities = list(cfg.dims)
        self.proj = nn.ModuleDict({m: nn.Linear(d, cfg.hidden, bias=False) for m, d in cfg.dims.items()})
        self.missing = nn.Parameter(torch.zeros(len(self.modalities), cfg.hidden))
        self.query_in = nn.Linear(cfg.query_dim, cfg.hidden, bias=False)
        # the request's words vector, when tracks have the words modality
        self.words_dim = cfg.dims.get(WORDS, 0)
        self.query_words = nn.Linear(self.words_dim, cfg.hidden, bias=False) if self.words_dim else None
        # the conversation's tracks (a mean of rows), gated by the text embedding of the turn's
        # own message (words would not do: "more like that" has no catalog word)
        self.context_in = nn.Linear(cfg.hidden, cfg.hidden, bias=False) if cfg.context else None
        self.context_gate = nn.Linear(cfg.query_dim, 1) if cfg.context else None
        # the turn's own message through the same projections as the request, times a learnt
        # gain cfg.current * exp(cfg.gain_scale * current_gain), from zero
        self.current_gain = nn.Parameter(torch.zeros(())) if cfg.current else None
        self.current_gate = (nn.Linear(cfg.query_dim, 1, bias=False)
                             if cfg.current and cfg.current_gate else None)
        self.words_gate = (nn.Linear(cfg.query_dim, 1) if cfg.words_gate and self.words_dim
                           and (cfg.context or cfg.current) else None)
        self.own_words = (nn.Linear(cfg.query_dim, 1) if cfg.own_words and self.words_dim and cfg.current
                          else None)
        self.readout = nn.Linear(cfg.hidden, cfg.hidden, bias=False)
        self.log_scale = nn.Parameter(torch.tensor(math.log(cfg.logit_scale)))

    @classmethod
    def create(cls, cfg: TrackNetConfig) -> TrackNet:
        """A freshly initialised net (see the module docstring for why this start)."""
        net = cls(cfg)
        p = isometry(cfg.hidden, cfg.query_dim, cfg.seed)
        gen = torch.Generator().manual_seed(cfg.seed + 1)
        shared = [m for m in cfg.text_modalities if cfg.dims.get(m) == cfg.query_dim]
        with torch.no_grad():
            for m, lin in net.proj.items():
                if m == WORDS:  # the same map as the request's words (see ``query_words``)
                    lin.weight.copy_(isometry(cfg.hidden, net.words_dim, cfg.seed) * cfg.words_row)
                elif m in shared:
                    lin.weight.copy_(p)
                else:  # no shared space with the request: a random start, quiet beside text rows
                    w = isometry(cfg.hidden, cfg.dims[m], cfg.seed + 2 + len(m))
                    lin.weight.copy_(w * (cfg.quiet_row if shared else 1.0))
            net.missing.copy_(cfg.missing_init * torch.randn(net.missing.shape, generator=gen))
            gain = 1.0 if cfg.unit_query else cfg.inject_gain * cfg.row_norm
            net.query_in.weight.copy_(p * gain)
            if net.query_words is not None:
                w = isometry(cfg.hidden, net.words_dim, cfg.seed)  # = p when the sizes match
                net.query_words.weight.copy_(w * cfg.words_gain * gain)
            net.readout.weight.copy_(p @ p.T)
            if net.context_in is not None:  # as large as the request vector (text + words, ~orthogonal)
                size = math.hypot(1.0, cfg.words_gain if net.words_dim else 0.0)
                net.context_in.weight.copy_(torch.eye(cfg.hidden) * cfg.context * size)
            if net.context_gate is not None:  # open at 1 (2 sigmoid(0)) until training says otherwise
                net.context_gate.weight.zero_()
                net.context_gate.bias.zero_()
            if net.current_gate is not None:  # every message at cfg.current until training says otherwise
                net.current_gate.weight.zero_()
            if net.words_gate is not None:  # words at full weight (2 sigmoid(0)) until trained otherwise
                net.words_gate.weight.zero_()
                net.words_gate.bias.zero_()
            if net.own_words is not None:  # no change until training says otherwise
                net.own_words.weight.zero_()
                net.own_words.bias.zero_()
        return net

    def rows(self, arrays: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]) -> torch.Tensor:
        """(N, hidden) rows: the input embedding of each track's slot."""
        total = None
        for i, m in enumerate(self.modalities):
            x = self.proj[m](arrays[m])
            x = torch.where(masks[m][:, None], x, self.missing[i])
            total = x if total is None else total + x
        assert total is not None, "a TrackNet needs at least one modality"
        return nn.functional.normalize(total, dim=-1, eps=1e-8) * self.cfg.row_norm

    @property
    def reads_current(self) -> bool:
        """Whether a request vector carries the turn's own message (for the gate or the gain)."""
        return self.context_gate is not None or self.current_gain is not None

    @property
    def request_dim(self) -> int:
        """Size of a request vector: text embedding and words of every user turn so far, then the
        turn's own text embedding when the net reads it, then its words with a current gain."""
        d, w = self.cfg.query_dim, self.words_dim
        return d + w + (d if self.reads_current else 0) + (w if self.current_gain is not None else 0)

    def context(self, rows: torch.Tensor, n_opens: int, ctx_open: torch.Tensor, ctx_row: torch.Tensor,
                ctx_w: torch.Tensor) -> torch.Tensor:
        """(n_opens, hidden): each open's context, the unit-length weighted mean of the rows
        ``ctx_row`` (weights ``ctx_w``) that ``ctx_open`` assigns to it; zero where it has none."""
        out = torch.zeros(n_opens, rows.shape[-1], dtype=rows.dtype, device=rows.device)
        if len(ctx_open):
            out = out.index_add(0, ctx_open, rows[ctx_row] * ctx_w[:, None].to(rows.dtype))
        return nn.functional.normalize(out, dim=-1, eps=1e-8)

    def _text(self, q: torch.Tensor, words_weight: torch.Tensor | None = None) -> torch.Tensor:
        """A text embedding followed by its words vector (if the net has words, times
        ``words_weight`` when given), projected."""
        out = self.query_in(q[..., : self.cfg.query_dim])
        if self.query_words is not None:
            words = self.query_words(q[..., self.cfg.query_dim:])
            out = out + (words if words_weight is None else words * words_weight)
        return out

    def query(self, q: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """The request (``request_dim`` wide, see there) and the ``context`` projected into the
        LM's hidden size."""
        d, w = self.cfg.query_dim, self.words_dim
        own = q[..., d + w: 2 * d + w]  # the turn's own text embedding: what the gates read
        ww = None
        if self.words_gate is not None:
            ww = 2 * torch.sigmoid(self.cfg.gate_scale * self.words_gate(own))
        out = self._text(q[..., : d + w], ww)
        if self.current_gain is not None:
            logit = self.current_gain
            if self.current_gate is not None:
                logit = logit + self.current_gate(own)
            gain = self.cfg.current * torch.exp(self.cfg.gain_scale * logit)
            out = out + gain * self._text(q[..., d + w:], ww)
        if self.own_words is not None and self.query_words is not None:
            signed = self.cfg.gate_scale * self.own_words(own)
            out = out + signed * self.query_words(q[..., 2 * d + w:])
        if context is not None and self.context_in is not None:
            c = self.context_in(context.to(out.dtype))
            if self.context_gate is not None:
                c = c * 2 * torch.sigmoid(self.cfg.gate_scale * self.context_gate(own))
            out = out + c
        return out * (self.cfg.inject_gain * self.cfg.row_norm) if self.cfg.unit_query else out

    def scores(self, hidden: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Logits over every row for hidden states at ``<|music|>``: (..., N)."""
        u = nn.functional.normalize(self.readout(hidden), dim=-1, eps=1e-8)
        r = nn.functional.normalize(rows, dim=-1, eps=1e-8)
        return self.log_scale.exp() * (u @ r.T)
