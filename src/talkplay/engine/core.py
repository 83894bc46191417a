"""The engine: a trained run's model answering conversations with catalog tracks and a reply.

``engine = Engine.load("runs/demo")``; ``engine.recommend(conv, k=10)`` -> ranked
``Recommendation``s; ``engine.respond(conv, k=3)`` -> ``Response(recommendations, reply)``;
``engine.stream_respond(conv)`` yields each ``Recommendation`` and then reply text chunks.
Chat formatting comes from ``talkplay.dialogs.render_prompt``; everything below it works on
token ids (``generate``, ``rank_ids``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from talkplay.catalog import Catalog, Conversation, Turn
from talkplay.dialogs.render import render_prompt
from talkplay.engine.constraint import MusicVocab, TrieConstraint
from talkplay.engine.explain import Explainer
from talkplay.engine.ranking import EXACT_BUDGET, lm_step, rank_tracks
from talkplay.engine.reply import clean_reply
from talkplay.errors import InputError, TalkPlayError
from talkplay.exclusion import session_exclude
from talkplay.fingerprint import check_model
from talkplay.log import get_logger
from talkplay.run import Run
from talkplay.tokenizer import MusicTokenizer

log = get_logger(__name__)
# How a run's model is loaded, by the ``track_repr`` its ``model/talkplay.json`` records
# (``codes`` when absent); other representations register here (``engine/content.py``).
_LOADERS: dict[str, Callable[..., Engine]] = {}


@dataclass
class EngineConfig:
    """Decoding settings: ``EngineConfig(method="auto", reply_tokens=80, temperature=0.0)``.

    ``method``: ranking by ``exact`` scoring, ``beam`` search over the trie, or ``auto``
    (exact while the catalog costs at most ``exact_budget`` scoring tokens). ``beam_width``
    is raised to k when smaller. ``temperature`` 0 means greedy replies. ``device``:
    ``auto`` (the GPU when torch sees one, else the CPU), or any torch device string.
    ``guard_replies``: roll back a reply that names a catalog title or artist outside the
    answer's and the conversation's tracks (``talkplay.engine.reply``; content-grounded models).
    """

    method: str = "auto"
    beam_width: int = 16
    exact_budget: int = EXACT_BUDGET
    reply_tokens: int = 80
    temperature: float = 0.0
    top_p: float = 0.9
    seed: int = 0
    threads: int | None = None
    device: str = "auto"
    guard_replies: bool = True


@dataclass
class Recommendation:
    """One ranked track: ``track_id``, ``score`` (log-probability) and a short ``why``."""

    track_id: str
    score: float
    why: str = ""


@dataclass
class Response:
    """The engine's answer: ranked ``recommendations`` and the model's ``reply`` text."""

    recommendations: list[Recommendation] = field(default_factory=list)
    reply: str = ""
    method: str = ""


def resolve_device(device: str = "auto") -> torch.device:
    """``resolve_device("auto")`` is CUDA when torch sees a GPU, else the CPU; other names pass through."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except RuntimeError:
        raise InputError(f"unknown torch device {device!r} (try auto, cpu, cuda or cuda:1)",
                         field="device") from None


def register_loader(track_repr: str, loader: Callable[..., Engine]) -> None:
    """Make ``Engine.load`` hand runs trained with ``track_repr`` to ``loader(run_dir, cfg)``."""
    _LOADERS[track_repr] = loader


def track_repr_of(run: Run) -> str:
    """``content`` or ``codes``: how the run's trained model represents tracks."""
    path = run.model_dir / "talkplay.json"
    if not path.exists():
        return "codes"
    return json.loads(path.read_text(encoding="utf-8")).get("track_repr", "codes")




class Engine:
    """A trained model, its tokenizers and catalog. Build with ``Engine.load(run_dir)``."""

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
        self.stop_ids = self._stop_ids()
        self.last_method = ""  # the ranking method the last request used (exact or beam)
        if self.cfg.threads:
            torch.set_num_threads(self.cfg.threads)

    @classmethod
    def load(cls, run_dir: str | Path, cfg: EngineConfig | None = None) -> Engine:
        """Load ``run/model`` (plain transformers), ``run/tokenizer`` and the catalog; a run
        trained with content-grounded tracks gets a ``ContentEngine``.

        Raises ``StaleArtifactError`` when what the model was trained on changed since
        (``talkplay.fingerprint.check_model``): a refitted tokenizer, embeddings from another
        model or of another size. Tracks added since are fine.
        """
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()

        run = Run(run_dir)
        if not (run.model_dir / "config.json").exists():
            raise TalkPlayError(f"no trained model in {run.model_dir}; run `talkplay train {run.path}` first")
        kind = track_repr_of(run)
        if kind != "codes":
            if kind not in _LOADERS:
                raise TalkPlayError(f"{run.model_dir} holds a {kind!r} model this version cannot load")
            check_model(run)
            return _LOADERS[kind](run_dir, cfg)
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
    def _stop_ids(self) -> set[int]:
        out: set[int] = set()
        eos = getattr(self.model.generation_config, "eos_token_id", None)
        for e in eos if isinstance(eos, (list, tuple)) else [eos]:
            if e is not None:
                out.add(int(e))
        if self.tokenizer.eos_token_id is not None:
            out.add(int(self.tokenizer.eos_token_id))
        vocab = self.tokenizer.get_vocab()
        for s in ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|endoftext|>"):
            if s in vocab:
                out.add(int(vocab[s]))
        return out

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
        if self.cfg.temperature <= 0:
            return int(scores.argmax())
        # sampled on the CPU, where the seeded generator lives
        probs = torch.softmax(scores.cpu() / self.cfg.temperature, dim=-1)
        sp, si = torch.sort(probs, descending=True)
        keep = torch.cumsum(sp, 0) - sp < self.cfg.top_p
        return int(si[keep][torch.multinomial(sp[keep] / sp[keep].sum(), 1, generator=gen)])

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
        recs: list[Recommendation] = []
        chunks: list[str] = []
        for item in self.stream_respond(conversation, k, exclude):
            (recs if isinstance(item, Recommendation) else chunks).append(item)
        return Response(recs, clean_reply("".join(chunks)), self.last_method)


class TalkPlayRecommender:
    """The ``Recommender`` protocol over an ``Engine``: ``rec.fit(run); rec.recommend(conv, k)``."""

    name = "talkplay"

    def __init__(self, cfg: EngineConfig | None = None, engine: Engine | None = None) -> None:
        self.cfg = cfg
        self.engine = engine

    def fit(self, run: Run) -> None:
        """Load the run's trained model (training happens in ``talkplay train``)."""
        self.engine = Engine.load(run.path, self.cfg)

    def recommend(self, conversation: Conversation, k: int = 10,
                  exclude: set[str] | frozenset[str] = frozenset()) -> list[tuple[str, float]]:
        if self.engine is None:
            raise TalkPlayError("call fit(run) before recommend")
        return [(r.track_id, r.score) for r in self.engine.recommend(conversation, k, exclude)]
