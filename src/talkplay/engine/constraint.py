"""Trie-constrained decoding over token ids.

Build once per model with ``vocab = MusicVocab.build(music_tokenizer, hf_tokenizer)``, then
``TrieConstraint(vocab, exclude={"t1", ...})`` is a ``transformers.LogitsProcessor``:

- inside ``<|music|> ... <|/music|>`` only continuations that exist in the catalog's id trie
  are allowed, and once a full code sequence is written only ``<|/music|>`` is;
- a track in ``exclude`` (already recommended, liked or rejected), or one this very
  generation already wrote, can never be completed: its trie branch is pruned, and so is
  every prefix whose tracks are all excluded, so decoding never walks into a dead end;
- outside a music span, music code tokens and ``<|/music|>`` are banned, so plain text
  never contains raw music tokens; ``allow_open=False`` also bans ``<|music|>`` (reply mode).

The processor knows nothing of chat formatting: it reads token ids only.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch

from talkplay.errors import TalkPlayError
from talkplay.modalities import MUSIC_CLOSE, MUSIC_OPEN

Prefix = tuple[int, ...]


@dataclass
class MusicVocab:
    """Token ids of the music vocabulary of one model, and the catalog's id trie.

    ``MusicVocab.build(music, hf_tokenizer)``; ``.sequences[track_id]`` is the track's code ids
    (without open/close), ``.track_of[ids]`` the reverse, ``.seq_len`` their common length.
    """

    open_id: int
    close_id: int
    code_ids: list[int]
    trie: Any
    sequences: dict[str, Prefix]
    seq_len: int
    id_to_token: dict[int, str] = field(default_factory=dict)

    @property
    def track_of(self) -> dict[Prefix, str]:
        if not hasattr(self, "_track_of"):
            self._track_of = {s: t for t, s in self.sequences.items()}
        return self._track_of

    @classmethod
    def build(cls, music: Any, hf_tokenizer: Any) -> MusicVocab:
        """Map ``music.vocab`` to ids of ``hf_tokenizer`` (which must hold the music tokens)."""
        unk = hf_tokenizer.unk_token_id

        def tid(tok: str) -> int:
            i = hf_tokenizer.convert_tokens_to_ids(tok)
            if i is None or (unk is not None and i == unk) or i < 0:
                raise TalkPlayError(
                    f"the model's tokenizer has no token {tok!r}; was the vocabulary expanded "
                    "(run `talkplay train` on this run)?")
            return int(i)

        token_to_id = {t: tid(t) for t in music.vocab}
        sequences: dict[str, Prefix] = {}
        for track_id in music.track_ids:
            sequences[track_id] = tuple(token_to_id[t] for t in music.track_tokens(track_id))
        lengths = {len(s) for s in sequences.values()}
        if len(lengths) > 1:
            raise TalkPlayError(f"music token sequences differ in length: {sorted(lengths)}")
        return cls(
            open_id=tid(MUSIC_OPEN),
            close_id=tid(MUSIC_CLOSE),
            code_ids=sorted(set(token_to_id.values())),
            trie=music.trie_for(token_to_id),
            sequences=sequences,
            seq_len=lengths.pop() if lengths else 0,
            id_to_token={i: t for t, i in token_to_id.items()},
        )

    def dead_prefixes(self, track_ids: Iterable[str]) -> set[Prefix]:
        """Prefixes (full sequences included) under which every track is in ``track_ids``."""
        dead: set[Prefix] = set()
        for t in track_ids:
            seq = self.sequences.get(t)
            if seq is None:
                continue
            dead.add(seq)
            for i in range(len(seq) - 1, 0, -1):
                p = seq[:i]
                if all(p + (c,) in dead for c in self.trie.allowed(p)):
                    dead.add(p)
                else:
                    break
        return dead

    def allowed(self, prefix: Prefix, dead: set[Prefix] | frozenset[Prefix] = frozenset()) -> list[int]:
        """Next code ids after ``prefix`` that still lead to a track outside ``dead``."""
        children = self.trie.allowed(prefix)
        if not dead:
            return list(children)
        return [c for c in children if prefix + (c,) not in dead]


class TrieConstraint:
    """``LogitsProcessor`` keeping generation inside the catalog (see the module docstring).

    Call as ``model.generate(ids, logits_processor=LogitsProcessorList([TrieConstraint(vocab)]))``.
    The first call marks where the prompt ends; use one instance per generation.
    """

    def __init__(self, vocab: MusicVocab, exclude: Iterable[str] = (), allow_open: bool = True) -> None:
        self.vocab = vocab
        self.exclude = set(exclude)
        self.dead = vocab.dead_prefixes(self.exclude)
        self.allow_open = allow_open
        self.prompt_len: int | None = None
        self._outside_bias: torch.Tensor | None = None
        self._banned = list(vocab.code_ids) + [vocab.close_id] + ([] if allow_open else [vocab.open_id])

    def _bias(self, scores: torch.Tensor) -> torch.Tensor:
        if self._outside_bias is None or self._outside_bias.shape[-1] != scores.shape[-1]:
            bias = torch.zeros(scores.shape[-1], dtype=scores.dtype, device=scores.device)
            bias[[i for i in self._banned if i < scores.shape[-1]]] = float("-inf")
            self._outside_bias = bias
        return self._outside_bias

    def state(self, row: list[int]) -> Prefix | None:
        """The code prefix written since the last unclosed ``<|music|>``, or None outside a span."""
        window = row[-(self.vocab.seq_len + 1):]
        for j in range(len(window) - 1, -1, -1):
            if window[j] == self.vocab.close_id:
                return None
            if window[j] == self.vocab.open_id:
                return tuple(window[j + 1:])
        return None

    def _generated_tracks(self, row: list[int]) -> list[str]:
        """Tracks this generation has already written (so it never writes one twice)."""
        start = self.prompt_len or len(row)
        out, track_of, n = [], self.vocab.track_of, self.vocab.seq_len
        for j in range(start, len(row)):
            if row[j] == self.vocab.open_id and j + n < len(row):
                t = track_of.get(tuple(row[j + 1:j + 1 + n]))
                if t is not None:
                    out.append(t)
        return out

    def allowed_next(self, row: list[int]) -> list[int] | None:
        """Allowed next ids for one row inside a span; None means "outside a span"."""
        prefix = self.state(row)
        if prefix is None:
            return None
        if len(prefix) >= self.vocab.seq_len or self.vocab.trie.track(prefix) is not None:
            return [self.vocab.close_id]
        dead = self.dead
        written = self._generated_tracks(row)
        if written:
            dead = dead | self.vocab.dead_prefixes(written)
        allowed = self.vocab.allowed(prefix, dead)
        return allowed or [self.vocab.close_id]  # only reachable when every track is excluded

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.prompt_len is None or input_ids.shape[1] <= self.prompt_len:
            self.prompt_len = input_ids.shape[1]  # a new generation starts here
        rows = input_ids.tolist()
        out = scores.clone()
        for b, row in enumerate(rows):
            allowed = self.allowed_next(row)
            if allowed is None:
                out[b] += self._bias(scores)
            else:
                keep = torch.tensor(allowed, dtype=torch.long, device=scores.device)
                masked = torch.full_like(scores[b], float("-inf"))
                masked[keep] = scores[b, keep]
                out[b] = masked
        return out
