"""The codes engine: a model whose tracks are k-means code sequences (``talkplay train
--track-repr codes``), kept beside the content engine for comparison.

``engine = CodesEngine.load("runs/codes")`` (or ``Engine.load``, which picks it for a codes
run); ``engine.recommend(conv, k=10)`` ranks the catalog by ``exact`` scoring or ``beam``
search over the code trie (``talkplay.codes.ranking``); ``engine.respond(conv, k=3)`` writes
the reply after the tracks' code blocks, music tokens masked. Everything below the
conversation works on token ids (``generate``, ``rank_ids``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from talkplay.catalog import Catalog, Conversation, Turn
from talkplay.codes.constraint import MusicVocab, TrieConstraint
from talkplay.codes.ranking import rank_tracks
from talkplay.dialogs.render import render_prompt
from talkplay.engine.explain import Explainer
from talkplay.engine.lm import lm_step, pick_token, stop_token_ids
from talkplay.engine.protocol import (
    EngineConfig,
    Recommendation,
    Response,
    collect_response,
    resolve_device,
)
from talkplay.engine.reply import clean_reply
from talkplay.exclusion import session_exclude
from talkplay.fingerprint import check_model
from talkplay.log import get_logger
from talkplay.run import Run
from talkplay.tokenizer import MusicTokenizer

log = get_logger(__name__)


class CodesEngine:
    """A codes model, its tokenizers and catalog: an ``Engine``. Build with ``CodesEngine.load(run_dir)``."""

    def __init__(self, model: Any, tokenizer: Any, music: Any, catalog: Catalog,
                 cfg: EngineConfig | None = None, render_cfg: Any = None) -> None:
        self.device = resolve_device(cfg.device if cfg else "auto")
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.music = music
        self.catalog = catalog
        self.cfg = cfg or EngineConfig()
        self.render_cfg = render_cfg
        self.vocab = MusicVocab.build(music, tokenizer)
        self.explainer = Explainer(music, catalog)
        self.stop_ids = stop_token_ids(self.model, tokenizer)
        self.last_method = ""  # the ranking method the last request used (exact or beam)
        if self.cfg.threads:
            torch.set_num_threads(self.cfg.threads)

    @classmethod
    def load(cls, run_dir: str | Path, cfg: EngineConfig | None = None) -> CodesEngine:
        """Load ``run/model`` (plain transformers), ``run/tokenizer`` and the catalog; raises
        ``StaleArtifactError`` when the tokenizer or embeddings changed since training."""
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        run = Run(run_dir)
        music = MusicTokenizer.load(run.tokenizer_dir)
        check_model(run, music)
        model = AutoModelForCausalLM.from_pretrained(run.model_dir, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(run.model_dir)
        return cls(model, tokenizer, music, run.load_catalog(validate=False), cfg)

    @property
    def guards_replies(self) -> bool:
        """Whether replies are checked against the answer's tracks as they are written
        (``EngineConfig.guard_replies``; the content-grounded engine does, this one not)."""
        return False

    # -- ids level ----------------------------------------------------------------------
    @torch.inference_mode()
    def generate(self, prompt_ids: list[int], max_new_tokens: int = 32, exclude: Iterable[str] = (),
                 constrained: bool = True) -> list[int]:
        """Greedy ``model.generate`` from ids, with the trie constraint unless told otherwise."""
        from transformers import LogitsProcessorList

        procs = LogitsProcessorList([TrieConstraint(self.vocab, exclude)] if constrained else [])
        ids = torch.tensor([list(prompt_ids)], dtype=torch.long, device=self.device)
        out = self.model.generate(
            ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens, do_sample=False,
            logits_processor=procs, pad_token_id=self.tokenizer.pad_token_id or 0)
        return out[0, ids.shape[1]:].tolist()

    def rank_ids(self, prompt_ids: list[int], k: int = 10, exclude: Iterable[str] = ()) -> tuple[
            list[tuple[str, float]], str]:
        """Top-k ``(track_id, logprob)`` after ``prompt_ids``, and the ranking method used."""
        return rank_tracks(self.model, self.vocab, prompt_ids, k, exclude, self.cfg.method,
                           self.cfg.beam_width, self.cfg.exact_budget)

    @torch.inference_mode()
    def decode_stream(self, ids: list[int], processor: TrieConstraint, max_new_tokens: int) -> Iterator[int]:
        """Yield new token ids one by one (KV-cached), stopping at an end-of-turn token."""
        gen = torch.Generator().manual_seed(self.cfg.seed)
        seq = list(ids)
        step = torch.tensor([seq], dtype=torch.long, device=self.device)
        past = None
        for _ in range(max_new_tokens):
            logits, past = lm_step(self.model, step, past)
            scores = processor(torch.tensor([seq], dtype=torch.long), logits[:, -1].float())
            tok = self.pick(scores[0], gen)
            if tok in self.stop_ids:
                return
            yield tok
            seq.append(tok)
            step = torch.tensor([[tok]], dtype=torch.long, device=self.device)

    def pick(self, scores: torch.Tensor, gen: torch.Generator) -> int:
        """The next token from one row of scores: greedy, or top-p sampled at ``temperature``."""
        return pick_token(scores, gen, self.cfg.temperature, self.cfg.top_p)

    # -- conversation level ---------------------------------------------------------------
    def prompt_ids(self, conversation: Conversation) -> list[int]:
        """The rendered prompt (history + current request) as token ids."""
        return render_prompt(conversation, self.tokenizer, self.music, self.render_cfg)

    def recommend(self, conversation: Conversation, k: int = 10, exclude: Iterable[str] = ()) -> list[
            Recommendation]:
        """k distinct catalog tracks for the conversation's last request, best first.

        Never returns a track the conversation already recommended, liked or rejected, nor
        one in ``exclude``.
        """
        return self._recommend(conversation, k, exclude)[0]

    def _recommend(self, conversation: Conversation, k: int, exclude: Iterable[str]) -> tuple[
            list[Recommendation], list[int]]:
        if not conversation.turns:  # no request yet: rank by the model's prior, as baselines do
            conversation = replace(conversation, turns=[Turn(user="")])
        banned = session_exclude(conversation, exclude)
        prompt = self.prompt_ids(conversation)
        ranked, self.last_method = self.rank_ids(prompt, k, banned)
        liked = [x for t in conversation.turns for x in t.liked]
        recs = [Recommendation(t, s, self.explainer.why(t, liked)) for t, s in ranked]
        return recs, prompt

    def reply_prefix(self, prompt_ids: list[int], track_ids: list[str]) -> list[int]:
        """Prompt ids followed by one music block per track: where the reply begins."""
        ids = list(prompt_ids)
        for t in track_ids:
            ids += [self.vocab.open_id, *self.vocab.sequences[t], self.vocab.close_id]
        return ids

    def stream_respond(self, conversation: Conversation, k: int = 3, exclude: Iterable[str] = ()) -> Iterator[
            Recommendation | str]:
        """Yield each ``Recommendation`` (best first), then the reply as text chunks."""
        recs, prompt = self._recommend(conversation, k, exclude)
        yield from recs
        prefix = self.reply_prefix(prompt, [r.track_id for r in recs])
        processor = TrieConstraint(self.vocab, allow_open=False)
        reply: list[int] = []
        sent = ""
        for tok in self.decode_stream(prefix, processor, self.cfg.reply_tokens):
            reply.append(tok)
            text = clean_reply(self.tokenizer.decode(reply, skip_special_tokens=True))
            if text.endswith("\ufffd"):  # a multi-byte character is not complete yet
                continue
            if text.startswith(sent) and len(text) > len(sent):
                yield text[len(sent):] if sent else text
                sent = text
        final = clean_reply(self.tokenizer.decode(reply, skip_special_tokens=True))
        if final.startswith(sent) and len(final) > len(sent):
            yield final[len(sent):]

    def respond(self, conversation: Conversation, k: int = 3, exclude: Iterable[str] = ()) -> Response:
        """Recommendations and the model's reply for the conversation's last request."""
        return collect_response(self, conversation, k, exclude)
