"""Many conversations answered together: ``for req, item in stream_batch(engine, requests): ...``.

``requests`` are ``BatchRequest``s (a conversation, ``k``, tracks to exclude, and whether a
reply is wanted). Each request's items come in the order ``engine.stream_respond`` yields
them: first the whole ranked list (one ``list[Recommendation]``), then the reply as text
chunks, then ``Finished`` with its token counts; items of different requests interleave.
``respond_batch(engine, conversations)`` collects them into ``Response``s.

How: every prompt is rendered and embedded as ``ContentEngine`` does for one, the prompts
are left-padded to one length (an attention mask hides the padding, position ids count
each row's own tokens), and one forward ranks them all: the track head reads every row's
last position. The rows that want a reply then read their track blocks and cards in a
second forward and are decoded together, one token per row per forward, each row by its
own ``ReplyWriter`` (guard, steering, n-gram rule, sampling state: all per row).

A row's rollback (the guard taking back a name) cannot crop a cache shared by the batch:
the rolled-back tokens' cache columns are masked out for that row instead, and its next
token gets the position after the tokens it keeps. What the row attends to is then exactly
what a cache cropped for it alone holds, so a batched answer is the unbatched one (at
temperature 0 the same tracks and reply, up to float rounding in the padded matmuls).
Rows leave the batch when their reply ends (their cache rows are dropped), and with
``more`` (a callable returning requests that arrived since) new rows join between decode
steps: they are ranked in a forward of their own, their first items sent at once, and
their cache is padded on the left and stacked onto the running one (continuous batching).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from talkplay.catalog import Conversation, Turn
from talkplay.engine.lm import lm_forward
from talkplay.engine.protocol import Recommendation, Response
from talkplay.engine.reply import Feed, ReplyGuard, ReplyWriter, clean_reply
from talkplay.exclusion import session_exclude

Item = Any  # list[Recommendation] | str | Finished


@dataclass(eq=False)  # identity: the same conversation may be asked twice in one batch
class BatchRequest:
    """One conversation to answer: ``BatchRequest(conv, k=3, exclude=(), reply=True)``.

    ``reply=False`` ranks only (``engine.recommend``). Setting ``cancelled`` (a listener
    who left) takes the row out of the batch at the next decode step.
    """

    conversation: Conversation
    k: int = 3
    exclude: Iterable[str] = ()
    reply: bool = True
    cancelled: bool = False


@dataclass
class Finished:
    """A request's last item: the tokens of the conversation the model read and of the reply
    it wrote (rolled-back tokens not counted)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0


def supports_batching(engine: Any) -> bool:
    """Whether ``stream_batch`` can drive ``engine`` (content-grounded engines can)."""
    return all(hasattr(engine, a) for a in ("_prompt_embeds", "_reply_blocks", "_top", "content"))


@dataclass(eq=False)
class _Row:
    req: BatchRequest
    writer: ReplyWriter
    steps: Any  # the writer's ``steps`` generator
    base: int  # the row's own tokens in the cache before its reply
    prompt_tokens: int
    logits: torch.Tensor | None = None  # what the model answered to the row's last Feed
    feed: Feed | None = None
    cols: list[int] = field(default_factory=list)  # cache columns of the reply tokens fed


@dataclass
class _Batch:
    """Rows decoding together: one KV cache [B, heads, T, dim] and ``mask`` [B, T], which of
    the cache's columns each row reads."""

    cache: Any
    mask: torch.Tensor
    rows: list[_Row]

    def select(self, keep: list[int]) -> None:
        """Keep only the rows at ``keep`` (the rest left the batch)."""
        if len(keep) == len(self.rows):
            return
        idx = torch.tensor(keep, dtype=torch.long, device=self.mask.device)
        self.cache.batch_select_indices(idx)
        self.mask = self.mask[idx]
        self.rows = [self.rows[i] for i in keep]
        # columns no remaining row reads (the padding of rows that left) cost every step
        used = self.mask.any(0).nonzero()
        first = int(used[0]) if len(used) else self.mask.shape[1]
        if first > 0 and self.rows:
            for layer in _layers(self.cache):
                layer.keys, layer.values = layer.keys[:, :, first:], layer.values[:, :, first:]
            self.mask = self.mask[:, first:]
            for r in self.rows:
                r.cols = [c - first for c in r.cols]

    def merge(self, other: _Batch) -> _Batch:
        """Both batches' rows in one: the shorter cache is padded on the left (masked out)."""
        width = max(self.mask.shape[1], other.mask.shape[1])
        parts = []
        for b in (self, other):
            pad = width - b.mask.shape[1]
            for r in b.rows:
                r.cols = [c + pad for c in r.cols]
            parts.append((b, pad))
        (_, pa), (_, pb) = parts
        for la, lb in zip(_layers(self.cache), _layers(other.cache), strict=True):
            la.keys = torch.cat([_pad_left(la.keys, pa, 2), _pad_left(lb.keys, pb, 2)])
            la.values = torch.cat([_pad_left(la.values, pa, 2), _pad_left(lb.values, pb, 2)])
        mask = torch.cat([_pad_left(self.mask, pa, 1), _pad_left(other.mask, pb, 1)])
        return _Batch(self.cache, mask, self.rows + other.rows)


def _layers(cache: Any) -> list[Any]:
    """The cache's per-layer key/value holders (transformers' ``DynamicCache.layers``)."""
    layers = getattr(cache, "layers", None)
    if layers is None or not all(hasattr(x, "keys") and hasattr(x, "values") for x in layers):
        raise TypeError(f"batched decoding needs a DynamicCache with per-layer keys, "
                        f"got {type(cache).__name__}")
    return layers


def _pad_left(x: torch.Tensor, n: int, dim: int) -> torch.Tensor:
    if n == 0:
        return x
    shape = list(x.shape)
    shape[dim] = n
    return torch.cat([x.new_zeros(shape), x], dim=dim)


def _stack_left(embs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(1, L_i, H) each -> (B, max L, H) left-padded with zeros, and the (B, max L) mask."""
    width = max(e.shape[1] for e in embs)
    out = embs[0].new_zeros(len(embs), width, embs[0].shape[2])
    mask = torch.zeros(len(embs), width, dtype=torch.long, device=out.device)
    for i, e in enumerate(embs):
        out[i, width - e.shape[1]:] = e[0]
        mask[i, width - e.shape[1]:] = 1
    return out, mask


def _start(engine: Any, reqs: list[BatchRequest]) -> Iterator[tuple[BatchRequest, Item]]:
    """Rank ``reqs`` in one forward and read the reply rows' track blocks in a second;
    yields each request's ranked list (and ``Finished`` for those without a reply) and
    returns the ``_Batch`` of rows ready to decode (None when there is none)."""
    convs, embs, queries = [], [], []
    for req in reqs:
        conv = req.conversation
        if not conv.turns:
            conv = replace(conv, turns=[Turn(user="")])
        emb, requests = engine._prompt_embeds(conv)
        convs.append(conv)
        embs.append(emb)
        queries.append(requests[-1])
    emb, mask = _stack_left(embs)
    pos = (mask.cumsum(1) - 1).clamp(min=0)  # each row counts its own tokens (RoPE)
    cache = None
    if any(r.reply for r in reqs):  # the reply reads every layer: keep the whole stack's cache
        out, cache = lm_forward(engine.model, None, inputs_embeds=emb, attention_mask=mask, position_ids=pos,
                                output_hidden_states=True, logits_to_keep=1)
        hidden = engine.content.rank_hidden(out.hidden_states)[:, -1]
    else:  # ranking alone runs only up to the track head's exit
        hidden = engine.content.rank_forward(emb, attention_mask=mask, position_ids=pos)[:, -1]
    engine.last_method = "exact"
    lengths = [e.shape[1] for e in embs]
    keep, blocks, answers = [], [], []
    for i, (req, conv) in enumerate(zip(reqs, convs, strict=True)):
        banned = session_exclude(conv, req.exclude)
        liked = [x for t in conv.turns for x in t.liked]
        recs = [Recommendation(t, s, engine.why(t, liked)) for t, s in engine._top(hidden[i], req.k, banned)]
        yield req, recs
        if not req.reply or not recs:
            yield req, Finished(lengths[i], 0)
            continue
        keep.append(i)
        blocks.append(engine._reply_blocks(recs, queries[i]))
        answers.append(recs)
    if not keep:
        return None
    idx = torch.tensor(keep, dtype=torch.long, device=mask.device)
    if len(keep) < len(reqs):
        cache.batch_select_indices(idx)
    seg, seg_mask = _stack_left(blocks)
    starts = torch.tensor([[lengths[i]] for i in keep], device=mask.device)
    seg_pos = starts + (seg_mask.cumsum(1) - 1).clamp(min=0)
    mask = torch.cat([mask[idx], seg_mask], dim=1)
    out, cache = lm_forward(engine.model, cache, inputs_embeds=seg, attention_mask=mask, position_ids=seg_pos,
                            logits_to_keep=1)
    rows = []
    for j, i in enumerate(keep):
        ids = [r.track_id for r in answers[j]]
        guard = ReplyGuard(engine.names, convs[i], ids) if engine.guards_replies else None
        writer = ReplyWriter(engine, guard)
        base = lengths[i] + blocks[j].shape[1]
        rows.append(_Row(reqs[i], writer, writer.steps(out.logits[j, -1]), base, lengths[i]))
    return _Batch(cache, mask, rows)


def _advance(row: _Row) -> Iterator[tuple[BatchRequest, Item]]:
    """Run the row's writer to its next ``Feed`` (kept in ``row.feed``, None at the end),
    yielding its text chunks and, at the end, ``Finished``."""
    row.feed = None
    try:
        item = next(row.steps) if row.logits is None else row.steps.send(row.logits)
        while isinstance(item, str):
            yield row.req, item
            item = next(row.steps)
        row.feed = item
    except StopIteration:
        yield row.req, Finished(row.prompt_tokens, row.writer.written)


@torch.inference_mode()
def stream_batch(engine: Any, requests: Iterable[BatchRequest],
                 more: Callable[[], list[BatchRequest]] | None = None) -> Iterator[tuple[BatchRequest, Item]]:
    """Yield ``(request, item)`` for every request (see the module docstring) until every
    reply is written; ``more()`` is asked between decode steps for requests to join."""
    if not supports_batching(engine):
        raise TypeError(f"{type(engine).__name__} does not answer in batches "
                        "(a content-grounded engine does)")
    reqs = list(requests)
    batch = (yield from _start(engine, reqs)) if reqs else None
    while True:
        joining = more() if more is not None else []
        if joining:
            joined = yield from _start(engine, joining)
            batch = joined if batch is None else (batch.merge(joined) if joined else batch)
        if batch is None:
            return
        keep = []
        for i, row in enumerate(batch.rows):
            if row.req.cancelled:
                row.steps.close()
                yield row.req, Finished(row.prompt_tokens, row.writer.written)
                continue
            yield from _advance(row)
            if row.feed is not None:
                keep.append(i)
        batch.select(keep)
        if not batch.rows:
            batch = None
            continue  # ask `more` once more before returning
        width = batch.mask.shape[1]
        for i, row in enumerate(batch.rows):
            gone = row.cols[row.feed.keep:]  # a rollback: those tokens are no longer the row's
            if gone:
                batch.mask[i, gone] = 0
                del row.cols[row.feed.keep:]
            row.cols.append(width)
        dev = batch.mask.device
        ids = torch.tensor([[r.feed.token] for r in batch.rows], device=dev)
        pos = torch.tensor([[r.base + r.feed.keep] for r in batch.rows], device=dev)
        batch.mask = torch.cat([batch.mask, batch.mask.new_ones(len(batch.rows), 1)], dim=1)
        out, batch.cache = lm_forward(engine.model, batch.cache, input_ids=ids, attention_mask=batch.mask,
                                      position_ids=pos, logits_to_keep=1)
        for i, row in enumerate(batch.rows):
            row.logits = out.logits[i, -1]


def respond_batch(engine: Any, conversations: list[Conversation], k: int = 3,
                  excludes: list[Iterable[str]] | None = None, reply: bool = True) -> list[Response]:
    """``respond_batch(engine, convs, k=3)`` -> one ``Response`` per conversation, answered as
    one batch (``reply=False``: rankings only, empty replies)."""
    reqs = [BatchRequest(c, k, (excludes or [()] * len(conversations))[i], reply)
            for i, c in enumerate(conversations)]
    recs: dict[int, list[Recommendation]] = {}
    chunks: dict[int, list[str]] = {id(r): [] for r in reqs}
    for req, item in stream_batch(engine, reqs):
        if isinstance(item, list):
            recs[id(req)] = item
        elif isinstance(item, str):
            chunks[id(req)].append(item)
    return [Response(recs[id(r)], clean_reply("".join(chunks[id(r)])), "exact") for r in reqs]
