"""The conversation's tracks so far as an input at ``<|music|>``: which tracks, how much, gated."""

from __future__ import annotations

import torch

from talkplay.catalog import Conversation, Turn
from talkplay.tracks.data import CONTEXT_DECAY, context_tracks
from talkplay.tracks.network import TrackNet, TrackNetConfig
from talkplay.tracks.words import WORDS


def test_context_is_the_unrejected_tracks_so_far_latest_weighing_most():
    conv = Conversation(id="c", turns=[Turn(user="jazz", recommended=["a"], liked=["a"]),
                                       Turn(user="reggae", recommended=["b"], disliked=["b"]),
                                       Turn(user="more", recommended=["c", "d"]),
                                       Turn(user="and now?")])
    assert context_tracks(conv, 3) == [("a", CONTEXT_DECAY ** 2), ("c", 1.0), ("d", 1.0)]
    assert context_tracks(conv, 0) == []  # the first request has nothing before it
    align = Conversation(id="x", turns=conv.turns, extra={"alignment": True})
    assert context_tracks(align, 3) == []  # packed unrelated requests: nothing carries over


def net_and_rows(n: int = 12, current: float = 0.0) -> tuple[TrackNet, torch.Tensor]:
    net, rows, _ = net_rows_arrays(n, current)
    return net, rows


def net_rows_arrays(n: int = 12, current: float = 0.0) -> tuple[TrackNet, torch.Tensor, dict]:
    cfg = TrackNetConfig(dims={"metadata": 16, WORDS: 16}, hidden=24, query_dim=16,
                         text_modalities=["metadata", WORDS], unit_query=True, context=1.0, current=current)
    net = TrackNet.create(cfg)
    gen = torch.Generator().manual_seed(0)
    arrays = {m: torch.nn.functional.normalize(torch.randn(n, 16, generator=gen), dim=-1) for m in cfg.dims}
    masks = {m: torch.ones(n, dtype=torch.bool) for m in cfg.dims}
    return net, net.rows(arrays, masks), arrays


@torch.no_grad()
def test_context_alone_points_the_head_at_the_tracks_it_holds():
    net, rows = net_and_rows()
    ctx = net.context(rows, 2, torch.tensor([0, 1, 1]), torch.tensor([3, 5, 7]),
                      torch.tensor([1.0, 1.0, 0.25]))
    assert torch.allclose(ctx.norm(dim=-1), torch.ones(2))
    q = net.query(torch.zeros(2, net.request_dim), ctx)
    top = net.scores(q, rows).argmax(-1)
    assert top.tolist() == [3, 5]  # one track: itself; two: the one weighing most
    none = net.context(rows, 1, torch.tensor([], dtype=torch.long), torch.tensor([], dtype=torch.long),
                       torch.tensor([]))
    assert not none.any()  # no tracks before: no context at all


@torch.no_grad()
def test_the_turns_own_words_gate_the_context():
    net, rows = net_and_rows()
    ctx = net.context(rows, 1, torch.tensor([0]), torch.tensor([3]), torch.tensor([1.0]))
    request = torch.randn(1, net.request_dim)
    alone = net.query(request)
    opened = net.query(request, ctx)
    assert torch.allclose(opened - alone, net.context_in(ctx) * net.cfg.inject_gain * net.cfg.row_norm)
    net.context_gate.bias.fill_(-5.0)  # a turn that asks for something new: the gate shuts
    assert torch.allclose(net.query(request, ctx), alone, atol=1e-3 * float(alone.norm()))


@torch.no_grad()
def test_the_turns_own_message_outweighs_the_earlier_ones_by_a_learnt_gain():
    net, rows, arrays = net_rows_arrays(current=2.0)
    assert net.request_dim == 16 + 16 + 16 + 16  # text and words of all turns, then of the turn alone

    def text(i: int) -> torch.Tensor:  # a request worded like track i's own metadata
        return torch.cat([arrays["metadata"][i], arrays[WORDS][i]])

    # the conversation so far asked for track 3 (twice) and now asks for track 5
    everything = torch.nn.functional.normalize(2 * text(3) + text(5), dim=-1)
    request = torch.cat([everything[:16], everything[16:], text(5)[:16], text(5)[16:]])[None]
    assert net.scores(net.query(request), rows).argmax().item() == 5
    net.current_gain.fill_(-1.0)  # training can turn the gain down (here to exp(-20) of its start)
    assert net.scores(net.query(request), rows).argmax().item() == 3
    plain, _ = net_and_rows()  # a net without the gain reads only the whole conversation
    assert plain.request_dim == 16 + 16 + 16 and plain.current_gain is None


def plain_gated_chat_ask(gate: str, seed: int
                         ) -> tuple[TrackNet, TrackNet, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A net without and with ``gate`` (the same start), a chit-chat request, a request whose
    own message is unlike it, and the chit-chat message's direction ``e``; checks that the
    gate, from zero, changes nothing."""
    cfg = TrackNetConfig(dims={"metadata": 16, WORDS: 16}, hidden=24, query_dim=16,
                         text_modalities=["metadata", WORDS], unit_query=True, context=1.0, current=2.0)
    plain = TrackNet.create(cfg)
    gated = TrackNet.create(TrackNetConfig(**{**cfg.to_dict(), gate: True}))
    gen = torch.Generator().manual_seed(seed)
    chat, ask = (torch.randn(1, plain.request_dim, generator=gen) for _ in range(2))
    own = slice(32, 48)  # the turn's own text embedding in the request
    e = chat[0, own] / chat[0, own].norm()
    ask[0, own] -= (ask[0, own] @ e) * e  # a message unlike the chit-chat
    for q in (chat, ask):  # from zero the gate changes nothing: the gated net starts as the plain one
        assert torch.allclose(gated.query(q), plain.query(q))
    return plain, gated, chat, ask, e


@torch.no_grad()
def test_a_current_gate_weighs_each_message_by_what_it_says():
    plain, gated, chat, ask, e = plain_gated_chat_ask("current_gate", seed=1)
    gated.current_gate.weight.copy_(-e[None])  # learnt: messages like this one weigh less

    def own_part(net: TrackNet, q: torch.Tensor) -> torch.Tensor:  # the query minus all turns' part
        return net.query(q) - net._text(q[..., :32]) * net.cfg.inject_gain * net.cfg.row_norm

    assert own_part(gated, chat).norm() < 1e-3 * own_part(plain, chat).norm()
    assert torch.allclose(gated.query(ask), plain.query(ask))  # another message keeps its weight


@torch.no_grad()
def test_a_words_gate_silences_the_words_of_one_kind_of_message_and_keeps_its_meaning():
    plain, gated, chat, ask, e = plain_gated_chat_ask("words_gate", seed=2)
    gated.words_gate.weight.copy_(-e[None])  # learnt: messages like this one have no words worth matching

    def without_words(q: torch.Tensor) -> torch.Tensor:  # the request with every words vector zeroed
        q = q.clone()
        q[..., 16:32] = 0
        q[..., 48:64] = 0
        return plain.query(q)

    assert torch.allclose(gated.query(chat), without_words(chat), atol=1e-4 * float(chat.norm()))
    assert not torch.allclose(plain.query(chat), without_words(chat), atol=1e-2)
    assert torch.allclose(gated.query(ask), plain.query(ask))  # another message keeps its words


@torch.no_grad()
def test_own_words_take_the_turns_own_words_out_and_keep_the_earlier_turns():
    plain, gated, chat, ask, e = plain_gated_chat_ask("own_words", seed=3)
    # a request whose words are the earlier turns' plus this message's: take this message's out
    earlier = torch.randn(16, generator=torch.Generator().manual_seed(4))
    chat[0, 16:32] = earlier + chat[0, 48:64]
    ask[0, 16:32] = earlier + ask[0, 48:64]
    # learnt: -1 for messages like this one (its own text embedding is chat[0, 32:48])
    gated.own_words.weight.copy_(-e[None] / (gated.cfg.gate_scale * chat[0, 32:48].norm()))

    def earlier_words_only(q: torch.Tensor) -> torch.Tensor:
        q = q.clone()
        q[..., 16:32] = earlier
        return plain.query(q)

    assert torch.allclose(gated.query(chat), earlier_words_only(chat), atol=1e-4 * float(chat.norm()))
    assert not torch.allclose(plain.query(chat), earlier_words_only(chat), atol=1e-2)
    assert torch.allclose(gated.query(ask), plain.query(ask))  # another message keeps its words
