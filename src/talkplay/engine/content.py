"""The engine for content-grounded tracks: one forward, one matrix product, k tracks.

``ContentEngine.load(run_dir)`` (what ``Engine.load`` returns for such a run: an ``Engine``
of ``talkplay.engine.protocol``) reads the merged LM, ``tracks.pt``, the declared record
``talkplay.json`` (``talkplay.tracks.meta``) and the run's *current* embeddings, so tracks added with
``talkplay catalog add`` and ``talkplay encode`` after training are ranked at once (their
rows come from their content). A request is rendered as in training, its text embedded
by the text encoder and added at ``<|music|>``; the hidden state there is scored against
every catalog row, already-seen tracks masked, and the top k taken. The reply is then
written after the k track blocks, reusing the prompt's KV cache.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from talkplay.catalog import Catalog, Conversation, Turn
from talkplay.dialogs.render import RenderConfig, render_prompt_blocks
from talkplay.encoders.text import TextEncoder
from talkplay.engine.explain import Explainer
from talkplay.engine.lm import lm_forward, pick_token, stop_token_ids
from talkplay.engine.protocol import EngineConfig, Recommendation, Response, collect_response, resolve_device
from talkplay.engine.reply import ReplyGuard, ReplyWriter
from talkplay.errors import InputError
from talkplay.exclusion import Songs, session_exclude
from talkplay.fingerprint import check_model
from talkplay.log import get_logger
from talkplay.modalities import MUSIC_CLOSE, MUSIC_OPEN, TRACK_SLOT
from talkplay.names import CatalogNames
from talkplay.run import Run
from talkplay.tracks.data import context_rows, current_text, query_text
from talkplay.tracks.features import TrackFeatures, TrackSlots
from talkplay.tracks.meta import ContentMeta
from talkplay.tracks.model import ContentModel
from talkplay.tracks.network import TrackNet, TrackNetConfig

log = get_logger(__name__)


@dataclass
class Prompt:
    """A rendered request: ids ending in ``<|music|>`` and where its slots and opens are."""

    ids: list[int]
    slots: list[tuple[int, str]]  # (position, track id)
    opens: list[tuple[int, int]]  # (position, turn answered)


@dataclass
class Request:
    """What the model reads at one ``<|music|>``: the request vector and the context tracks
    (``(row, weight)``, ``talkplay.tracks.data.context_tracks``)."""

    vector: torch.Tensor
    context: list[tuple[int, float]]


def refuse_codes_options(cfg: EngineConfig) -> None:
    """Raise ``InputError`` for a codes-only ranking option (``--method beam``): a content
    model scores every catalog track exactly, so ``auto`` and ``exact`` are what it does."""
    if cfg.method not in ("auto", "exact"):
        raise InputError(f"--method {cfg.method} applies to codes models only: a content model "
                         "scores every catalog track exactly (auto or exact)", field="--method")


class ContentEngine:
    """An ``Engine`` over a ``ContentModel``; build with ``ContentEngine.load(run_dir)``."""

    def __init__(self, model: ContentModel, tokenizer: Any, catalog: Catalog, cfg: EngineConfig | None = None,
                 render_cfg: RenderConfig | None = None, text_model: str | None = None,
                 reply_tracks: int | None = None) -> None:
        self.cfg = cfg or EngineConfig()
        refuse_codes_options(self.cfg)
        self.device = resolve_device(self.cfg.device)
        self.content = model.to(self.device).eval()
        self.model = self.content.lm
        self.tokenizer = tokenizer
        self.catalog = catalog
        self.music = TrackSlots(catalog.ids())
        self.render_cfg = render_cfg or RenderConfig()
        self.explainer = Explainer(self.music, catalog)
        self.stop_ids = stop_token_ids(self.model, tokenizer)
        self.last_method = ""
        self.text = TextEncoder(text_model)
        self.reply_tracks = reply_tracks  # tracks written before the reply (None: all k)
        ids = tokenizer.convert_tokens_to_ids([MUSIC_OPEN, MUSIC_CLOSE, TRACK_SLOT])
        self.open_id, self.close_id, self.slot_id = (int(i) for i in ids)
        self.music_ids = torch.tensor(ids, device=self.device)
        with torch.inference_mode():
            self.rows = self.content.rows()
        if self.cfg.threads:
            torch.set_num_threads(self.cfg.threads)

    @classmethod
    def load(cls, run_dir: str | Path, cfg: EngineConfig | None = None) -> ContentEngine:
        """Load ``run/model`` (merged LM, ``tracks.pt``) over the run's current embeddings;
        raises ``StaleArtifactError`` when those changed in a way the model cannot read."""
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        refuse_codes_options(cfg or EngineConfig())  # before minutes of loading
        run = Run(run_dir)
        check_model(run)
        meta = ContentMeta.read(run.model_dir)
        ncfg = TrackNetConfig(**json.loads((run.model_dir / "tracks.json").read_text(encoding="utf-8")))
        feats = TrackFeatures.from_run(run, dims=ncfg.dims)
        feats.word_weights = ncfg.word_weights or None
        net = TrackNet(ncfg)
        net.load_state_dict(torch.load(run.model_dir / "tracks.pt", map_location="cpu", weights_only=True))
        lm = AutoModelForCausalLM.from_pretrained(run.model_dir, dtype=torch.float32)
        tok = AutoTokenizer.from_pretrained(run.model_dir)
        model = ContentModel(lm, net, feats)
        catalog = run.load_catalog(validate=False)
        return cls(model, tok, catalog, cfg, meta.render_config(catalog), meta.text_model, meta.reply_tracks)

    @property
    def guards_replies(self) -> bool:
        """``EngineConfig.guard_replies``: replies are checked against the answer's tracks."""
        return self.cfg.guard_replies

    def pick(self, scores: torch.Tensor, gen: torch.Generator) -> int:
        """The next reply token from one row of scores (greedy, or top-p at ``temperature``)."""
        return pick_token(scores, gen, self.cfg.temperature, self.cfg.top_p)

    @cached_property
    def songs(self) -> Songs:
        """Which catalog tracks are one song: a list offers each once (``talkplay.exclusion``)."""
        return Songs(self.catalog)

    @cached_property
    def names(self) -> CatalogNames:
        """The catalog's titles and artists, for guarding replies (built on first use)."""
        return CatalogNames(self.catalog)

    # -- prompt -----------------------------------------------------------------------------
    def prompt(self, conversation: Conversation) -> Prompt:
        """Render the conversation up to the assistant's first ``<|music|>``."""
        r = render_prompt_blocks(conversation, self.tokenizer, self.music, self.render_cfg)
        ids = [*r.input_ids, self.open_id]
        positions = [p for p, i in enumerate(ids) if i == self.slot_id]
        blocks = r.blocks[len(r.blocks) - len(positions):]  # a prompt is cut from the left
        slots, opens = [], []
        for p, (tid, turn, by_assistant) in zip(positions, blocks, strict=True):
            slots.append((p, tid))
            if by_assistant and p > 0 and ids[p - 1] == self.open_id:
                opens.append((p - 1, turn))
        opens.append((len(ids) - 1, len(conversation.turns) - 1))
        return Prompt(ids, slots, opens)

    def _requests(self, conversation: Conversation, turns: list[int]) -> list[Request]:
        """What the model reads at the opens answering ``turns``: request vector and context."""
        net = self.content.net
        texts = [query_text(conversation, t) for t in turns]
        own = [current_text(conversation, t) for t in turns] if net.reads_current else []
        dense = self.text.encode(texts + own)
        current = dense[len(texts):] if own else None
        vectors = torch.from_numpy(self.content.features.requests(
            dense[: len(texts)], texts, current, own if net.current_gain is not None else None))
        decay = net.cfg.context_decay  # as the model was trained
        return [Request(v.to(self.device), context_rows(conversation, t, self.music.index, decay))
                for v, t in zip(vectors, turns, strict=True)]

    def _forward(self, emb: torch.Tensor, cache: Any = None) -> tuple[Any, Any]:
        return lm_forward(self.model, cache, inputs_embeds=emb, output_hidden_states=True, logits_to_keep=1)

    def _embed(self, ids: list[int], slots: list[tuple[int, int]],
               opens: list[tuple[int, Request]]) -> torch.Tensor:
        t = torch.tensor([ids], dtype=torch.long, device=self.device)

        def lt(x: list[int]) -> torch.Tensor:
            return torch.tensor(x, dtype=torch.long, device=self.device)

        q = (torch.stack([r.vector for _, r in opens]) if opens
             else torch.zeros(0, self.content.net.request_dim, device=self.device))
        ctx = [(i, row, w) for i, (_, r) in enumerate(opens) for row, w in r.context]
        return self.content.embed(t, self.rows, lt([0] * len(slots)), lt([p for p, _ in slots]),
                                  lt([r for _, r in slots]), lt([0] * len(opens)),
                                  lt([p for p, _ in opens]), q, lt([i for i, _, _ in ctx]),
                                  lt([row for _, row, _ in ctx]), torch.tensor(
                                      [w for _, _, w in ctx], dtype=torch.float32, device=self.device))

    # -- ranking ----------------------------------------------------------------------------
    def _prompt_embeds(self, conversation: Conversation) -> tuple[torch.Tensor, list[Request]]:
        """(1, L, hidden) input embeddings of ``prompt(conversation)`` and each open's request."""
        pr = self.prompt(conversation)
        reqs = self._requests(conversation, [t for _, t in pr.opens])
        index = self.music.index
        emb = self._embed(pr.ids, [(p, index[t]) for p, t in pr.slots],
                          [(p, reqs[i]) for i, (p, _) in enumerate(pr.opens)])
        return emb, reqs

    @torch.inference_mode()
    def prompt_embeds(self, conversation: Conversation) -> torch.Tensor:
        """``engine.prompt_embeds(conv)`` -> (L, hidden) float32: the conversation up to the
        answer's first ``<|music|>``, tracks as their rows and the request added there. It is
        what a server fed prompt embeddings (vLLM's ``prompt_embeds``) needs to rank as this
        engine does (``talkplay.vllm_support``)."""
        return self._prompt_embeds(conversation)[0][0].float().cpu()

    @torch.inference_mode()
    def _rank(self, conversation: Conversation, k: int, banned: set[str], reply: bool = False) -> tuple[
            list[tuple[str, float]], Any, Request]:
        """Top k (track id, log-prob); with ``reply`` also the KV cache of the whole stack
        (the reply reads every layer; ranking alone runs only up to the track head's exit)."""
        emb, reqs = self._prompt_embeds(conversation)
        cache = None
        if reply:
            out, cache = self._forward(emb)
            h = self.content.rank_hidden(out.hidden_states)[0, -1]
        else:
            h = self.content.rank_forward(emb)[0, -1]
        return self._top(h, k, banned), cache, reqs[-1]

    def _top(self, h: torch.Tensor, k: int, banned: set[str]) -> list[tuple[str, float]]:
        """Top k (track id, log-prob) for the hidden state ``h`` [hidden] at ``<|music|>``."""
        index = self.music.index
        scores = torch.log_softmax(self.content.track_scores(h, self.rows), dim=-1)
        mask = [index[t] for t in banned if t in index]
        if mask:
            scores[torch.tensor(mask, device=self.device)] = float("-inf")
        n = len(index) - len(mask)
        if min(k, n) <= 0:
            return []
        top = torch.topk(scores, min(k + self.songs.repeats, n))
        ids = self.music.track_ids
        ranked = [(ids[i], float(s)) for s, i in zip(top.values.tolist(), top.indices.tolist(), strict=True)]
        return self.songs.distinct(ranked, banned, k)

    def why(self, track_id: str, liked: list[str]) -> str:
        """The track's tags (else artists), then co-occurrence with tracks the user liked."""
        tr = self.catalog.get(track_id)
        facts = (f"tags: {' / '.join(tr.tags[:3])}" if tr.tags else
                 f"by {', '.join(tr.artists[:2])}" if tr.artists else "")
        parts = [p for p in (facts, self.explainer.cooccur_reason(track_id, liked)) if p]
        return "; ".join(parts)

    def _recommend(self, conversation: Conversation, k: int, exclude: Iterable[str],
                   reply: bool = False) -> tuple[list[Recommendation], Any]:
        if not conversation.turns:
            conversation = replace(conversation, turns=[Turn(user="")])
        banned = session_exclude(conversation, exclude)
        ranked, cache, q = self._rank(conversation, k, banned, reply)
        self.last_method = "exact"
        liked = [x for t in conversation.turns for x in t.liked]
        return [Recommendation(t, s, self.why(t, liked)) for t, s in ranked], (cache, q)

    def recommend(self, conversation: Conversation, k: int = 10, exclude: Iterable[str] = ()) -> list[
            Recommendation]:
        """k distinct catalog tracks for the conversation's last request, best first; never one
        the conversation already recommended, liked or rejected, nor one in ``exclude``."""
        return self._recommend(conversation, k, exclude)[0]

    def respond(self, conversation: Conversation, k: int = 3, exclude: Iterable[str] = ()) -> Response:
        """Recommendations and the model's reply for the conversation's last request."""
        return collect_response(self, conversation, k, exclude)

    # -- reply ------------------------------------------------------------------------------
    @torch.inference_mode()
    def stream_respond(self, conversation: Conversation, k: int = 3, exclude: Iterable[str] = ()) -> Iterator[
            Recommendation | str]:
        """Yield each ``Recommendation`` (best first), then the reply as text chunks."""
        recs, (cache, q) = self._recommend(conversation, k, exclude, reply=True)
        yield from recs
        if not recs:
            return
        out, cache = self._forward(self._reply_blocks(recs, q), cache)
        ids = [r.track_id for r in recs]
        guard = ReplyGuard(self.names, conversation, ids) if self.guards_replies else None
        yield from ReplyWriter(self, guard).stream(out.logits[0, -1], cache)

    def _reply_blocks(self, recs: list[Recommendation], q: Request) -> torch.Tensor:
        """(1, S, hidden) input embeddings of what follows the answer's first ``<|music|>``
        before its reply: the answer's track blocks and cards."""
        # the blocks after the open already in the cache: slot, close, then open + slot + close ...
        # as many as an answer in the training data wrote before its reply (the rest are only shown)
        ids: list[int] = []
        slots: list[tuple[int, int]] = []
        opens: list[tuple[int, Request]] = []
        cards = self.render_cfg.cards
        for n, r in enumerate(recs[: self.reply_tracks or len(recs)]):
            if n:
                opens.append((len(ids), q))
                ids.append(self.open_id)
            slots.append((len(ids), self.music.index[r.track_id]))
            ids += [self.slot_id, self.close_id]
            if cards is not None:  # the card, tokenized on its own as in training
                ids += self.tokenizer(cards(r.track_id), add_special_tokens=False)["input_ids"]
        # without cards no separator here: in training it is tokenized with the reply's first word
        return self._embed(ids, slots, opens)
