"""Conversations as training examples for the content-grounded model.

``ex = Example.build(conv, tok, slots, RenderConfig(max_length=256))`` renders a conversation
(``talkplay.dialogs.render``) and records, for every track block, the position of its slot
and the track's row, and for every block the assistant writes, the ``<|music|>`` position
where the model predicts the track, the request text whose embedding is added there, and
the target row (-1 when the track is not a target, e.g. one the user rejected), the turn's
own message and the conversation's tracks so far (``context_tracks``), which the model also
reads there, the playlist still to come (``goal_rows``) and the tracks the user turned down at
that turn. ``collate(examples, pad_id, query_index)`` pads a batch into the tensors
``ContentModel.forward`` reads (each open's goal rows as ``goal_open``/``goal_row`` pairs, its
turned-down rows as ``avoid_open``/``avoid_row``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch

from talkplay.catalog import Conversation
from talkplay.dialogs.render import RenderConfig, Rendered, render
from talkplay.modalities import MUSIC_OPEN, TRACK_SLOT

CONTEXT_DECAY = 0.5  # a track's weight in the context halves with every turn since (CPCD: BENCHMARKS.md)


def query_text(conv: Conversation, turn: int) -> str:
    """The request the model answers at ``turn``: every user message so far, one per line.

    Catalog-alignment conversations pack unrelated requests, so there only the turn's own
    message counts.
    """
    if conv.extra.get("alignment"):
        return conv.turns[turn].user.strip()
    return "\n".join(t.user.strip() for t in conv.turns[: turn + 1] if t.user.strip())


def current_text(conv: Conversation, turn: int) -> str:
    """The turn's own message (what says whether to go on from the tracks so far)."""
    return conv.turns[turn].user.strip()


def context_tracks(conv: Conversation, turn: int, decay: float = CONTEXT_DECAY) -> list[tuple[str, float]]:
    """``[(track_id, weight)]``: the tracks of the turns before ``turn`` that the user did not
    reject (recommended, liked), the last turn's weighing 1 and each earlier one ``decay``
    times less. Alignment conversations pack unrelated requests: none."""
    if conv.extra.get("alignment"):
        return []
    out: dict[str, float] = {}
    for i, t in enumerate(conv.turns[:turn]):
        bad = set(t.disliked)
        for tid in (*t.recommended, *t.liked):
            if tid not in bad:
                out[tid] = decay ** (turn - 1 - i)
    return list(out.items())


def context_rows(conv: Conversation, turn: int, index: dict[str, int],
                 decay: float = CONTEXT_DECAY) -> list[tuple[int, float]]:
    """``context_tracks`` as ``(row, weight)`` by ``index`` (track id -> row); unknown ids dropped.
    A trained model passes the ``decay`` it was trained with (``TrackNetConfig.context_decay``)."""
    return [(index[t], w) for t, w in context_tracks(conv, turn, decay) if t in index]


@dataclass
class Open:
    """One ``<|music|>`` the assistant writes: where, what request it answers, which row is the
    target (-1: none), the turn's own message, the context (``(row, weight)`` pairs) and
    ``goal``: the rows of the conversation's other liked tracks not written before it (the
    playlist the conversation is building; see ``goal_rows``); ``avoid``: the rows of the
    tracks the user turned down at this turn (``Turn.disliked``), the wrong answers nearest
    the right ones."""

    position: int
    text: str
    target: int
    current: str = ""
    context: list[tuple[int, float]] = field(default_factory=list)
    goal: list[int] = field(default_factory=list)
    avoid: list[int] = field(default_factory=list)


def goal_rows(conv: Conversation, index: dict[str, int]) -> list[int]:
    """Rows of the playlist a conversation builds (its ``goal``; none when it has none, as
    synthesized and alignment conversations). CPCD scores each turn against the whole playlist
    still to come, and a follow-up that names nothing ("more please") is answered from it."""
    return [index[t] for t in dict.fromkeys(conv.goal) if t in index]


@dataclass
class Example:
    """One rendered conversation with its slot and ``<|music|>`` bookkeeping."""

    input_ids: list[int]
    labels: list[int]
    slots: list[tuple[int, int]] = field(default_factory=list)  # (position, track row)
    opens: list[Open] = field(default_factory=list)

    @classmethod
    def from_rendered(cls, r: Rendered, conv: Conversation, tok: Any, slots: Any) -> Example:
        slot_id = tok.convert_tokens_to_ids(TRACK_SLOT)
        open_id = tok.convert_tokens_to_ids(MUSIC_OPEN)
        ids = r.input_ids
        positions = [p for p, i in enumerate(ids) if i == slot_id]
        blocks = r.blocks[: len(positions)]  # a block cut off at the end keeps no slot
        labels = r.labels()
        ex = cls(list(ids), labels)
        goal = goal_rows(conv, slots.index)
        earlier: set[int] = set()  # the rows of the slots so far
        for p, (tid, turn, by_assistant) in zip(positions, blocks, strict=True):
            row = slots.index[tid]
            if by_assistant and p > 0 and ids[p - 1] == open_id:
                target = row if r.loss_mask[p] else -1
                ex.opens.append(Open(p - 1, query_text(conv, turn), target, current_text(conv, turn),
                                     context_rows(conv, turn, slots.index),
                                     [g for g in goal if g != row and g not in earlier]
                                     if target >= 0 else [],
                                     [slots.index[t] for t in dict.fromkeys(conv.turns[turn].disliked)
                                      if t in slots.index and slots.index[t] != row]
                                     if target >= 0 else []))
            ex.slots.append((p, row))
            earlier.add(row)
            labels[p] = -100  # the slot is predicted by the track head, not the text head
        return ex

    @classmethod
    def build(cls, conv: Conversation, tok: Any, slots: Any, cfg: RenderConfig) -> Example:
        return cls.from_rendered(render(conv, tok, slots, cfg), conv, tok, slots)

    @classmethod
    def build_every_turn(cls, conv: Conversation, tok: Any, slots: Any, cfg: RenderConfig) -> list[Example]:
        """``Example.build``, and where ``cfg.max_length`` drops the oldest turns, one more example
        of the conversation up to the last dropped turn (and so on): every turn is trained once,
        the openings and early follow-ups too, each with as much of what came before as fits."""
        out, end = [], len(conv.turns)
        while end:
            part = conv if end == len(conv.turns) else dataclasses.replace(conv, turns=conv.turns[:end])
            r = render(part, tok, slots, cfg)
            out.append(cls.from_rendered(r, part, tok, slots))
            end = r.dropped_turns
        return out

    @property
    def supervised(self) -> bool:
        return any(o.target >= 0 for o in self.opens) or any(x != -100 for x in self.labels)


def request_key(o: Open) -> tuple[str, str]:
    """What an open's request vector is computed from: ``(request text, the turn's own message)``."""
    return o.text, o.current


def collate(examples: list[Example], pad_id: int,
            query_index: dict[tuple[str, str], int]) -> dict[str, torch.Tensor]:
    """Right-padded ``input_ids``/``labels`` and flat index tensors for slots, opens (their
    request vector's index in ``query_index``, keyed by ``request_key``), context tracks,
    goal tracks and turned-down tracks (pairs of an open's index and a row)."""
    n = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), n), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), n), -100, dtype=torch.long)
    sb, sp, sr, ob, op, oq, ot, co, cr, go, gr, ao, ar = [], [], [], [], [], [], [], [], [], [], [], [], []
    cw: list[float] = []
    for b, e in enumerate(examples):
        ids[b, : len(e.input_ids)] = torch.tensor(e.input_ids)
        labels[b, : len(e.labels)] = torch.tensor(e.labels)
        for p, r in e.slots:
            sb.append(b), sp.append(p), sr.append(r)
        for o in e.opens:
            for r, w in o.context:
                co.append(len(ob)), cr.append(r), cw.append(w)
            for r in o.goal:
                go.append(len(ob)), gr.append(r)
            for r in o.avoid:
                ao.append(len(ob)), ar.append(r)
            ob.append(b), op.append(o.position), oq.append(query_index[request_key(o)]), ot.append(o.target)

    def lt(x: list[int]) -> torch.Tensor:
        return torch.tensor(x, dtype=torch.long)

    return {"input_ids": ids, "labels": labels, "slot_b": lt(sb), "slot_p": lt(sp), "slot_row": lt(sr),
            "open_b": lt(ob), "open_p": lt(op), "open_q": lt(oq), "open_target": lt(ot),
            "ctx_open": lt(co), "ctx_row": lt(cr), "ctx_w": torch.tensor(cw, dtype=torch.float32),
            "goal_open": lt(go), "goal_row": lt(gr), "avoid_open": lt(ao), "avoid_row": lt(ar)}
