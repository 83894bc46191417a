"""Trie-constrained decoding over token ids, shared by the engine and the vLLM path.

Build once per model with ``vocab = MusicVocab.build(music_tokenizer, hf_tokenizer)`` (or
``MusicVocab.from_sequences(open_id, close_id, {track_id: ids})`` from an exported table).
``ConstraintState(vocab, exclude={"t1", ...})`` is the rule for one generated sequence:

- inside ``<|music|> ... <|/music|>`` only continuations that exist in the catalog's id trie
  are allowed, and once a full code sequence is written only ``<|/music|>`` is;
- a track in ``exclude`` (already recommended, liked or rejected), or one this very
  generation already wrote, can never be completed: its trie branch is pruned, and so is
  every prefix whose tracks are all excluded, so decoding never walks into a dead end;
- outside a music span, music code tokens and ``<|/music|>`` are banned, so plain text
  never contains raw music tokens; ``<|music|>`` is banned too once ``max_tracks`` tracks
  are written or none is left to write (``max_tracks=0``: reply mode, no music at all);
- ``music_first`` forces ``<|music|>`` as the first token; ``in_block`` says the prompt
  already ends with it, so the first token must start a track.

``TrieConstraint`` applies it as a ``transformers.LogitsProcessor``; the vLLM logits
processor (``talkplay.vllm_support``) calls a ``ConstraintState`` per request. Both know
nothing of chat formatting: they read token ids only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from talkplay.errors import TalkPlayError
from talkplay.modalities import MUSIC_CLOSE, MUSIC_OPEN
from talkplay.tokenizer.trie import IdTrie

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
    _ban: dict[tuple[str, int, bool], torch.Tensor] = field(default_factory=dict, repr=False, compare=False)

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

    @classmethod
    def from_sequences(cls, open_id: int, close_id: int, sequences: Mapping[str, Sequence[int]],
                       code_ids: Iterable[int] = (),
                       id_to_token: Mapping[int, str] | None = None) -> MusicVocab:
        """``MusicVocab.from_sequences(7, 8, {"t1": [9, 10], "t2": [9, 11]})``: the vocabulary of
        an exported constraint table. ``code_ids`` adds music tokens no track uses (banned in
        text all the same); ``ValueError`` for sequences the trie cannot hold."""
        trie = IdTrie.from_sequences(sequences)
        used = trie.token_ids
        if open_id in used or close_id in used:
            raise ValueError("the music open/close token ids also occur inside a track's sequence")
        return cls(open_id=int(open_id), close_id=int(close_id),
                   code_ids=sorted(used | {int(i) for i in code_ids}), trie=trie,
                   sequences={t: tuple(int(x) for x in s) for t, s in sequences.items()},
                   seq_len=trie.length, id_to_token=dict(id_to_token or {}))

    def dead_prefixes(self, track_ids: Iterable[str], base: Iterable[Prefix] = ()) -> set[Prefix]:
        """Prefixes (full sequences included) under which every track is in ``track_ids`` or
        already dead in ``base`` (which is copied, not changed)."""
        dead: set[Prefix] = set(base)
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

    def ban_ids(self, with_open: bool, width: int, device: Any) -> torch.Tensor:
        """Ids banned outside a span (codes, close, and open if ``with_open``), below ``width``;
        cached per device, as every step of every request needs them."""
        key = (str(device), width, with_open)
        ids = self._ban.get(key)
        if ids is None:
            ban = [*self.code_ids, self.close_id] + ([self.open_id] if with_open else [])
            ids = torch.tensor([i for i in ban if i < width], dtype=torch.long, device=device)
            self._ban[key] = ids
        return ids


def span_start(vocab: MusicVocab, ids: Sequence[int]) -> int | None:
    """Index of the ``<|music|>`` that ``ids`` end inside of (still unclosed), else None."""
    for j in range(len(ids) - 1, max(len(ids) - vocab.seq_len - 2, -1), -1):
        if ids[j] == vocab.close_id:
            return None
        if ids[j] == vocab.open_id:
            return j
    return None


class ConstraintState:
    """The rule for one generated sequence (see the module docstring).

    ``state = ConstraintState(vocab, exclude=ids, max_tracks=1, music_first=True)``;
    ``state.next_rule(output_ids)`` -> ``("only", ids)`` or ``("ban", ids)`` for the next
    token, and ``state(output_ids, logits)`` applies it to one row of logits (vLLM's
    per-request signature). ``output_ids`` only grows between calls; reading is incremental
    and starts over if it ever shrinks. ``max_tracks=None`` allows any number of tracks.
    """

    def __init__(self, vocab: MusicVocab, exclude: Iterable[str] = (), max_tracks: int | None = None,
                 music_first: bool = False, dead: set[Prefix] | None = None, in_block: bool = False) -> None:
        self.vocab = vocab
        self.max_tracks = max_tracks
        self.music_first = music_first
        self.in_block = in_block
        self._excluded = frozenset(t for t in exclude if t in vocab.sequences)
        # ``dead``: ``vocab.dead_prefixes(exclude)`` from a caller that builds a state per step
        self._dead0 = vocab.dead_prefixes(self._excluded) if dead is None else dead
        self._reset()

    def _reset(self) -> None:
        self.pos = 0
        # the codes written since an open <|music|>; None outside
        self.prefix: Prefix | None = () if self.in_block else None
        self.pending_close = False
        self.written: list[str] = []
        self.dead = self._dead0  # never changed in place: it may be shared
        self.gone = len(self._excluded)  # catalog tracks excluded or written

    def feed(self, output_ids: Sequence[int]) -> None:
        """Read the tokens of ``output_ids`` not read yet."""
        if len(output_ids) < self.pos:
            self._reset()
        vocab = self.vocab
        for tok in output_ids[self.pos:]:
            tok = int(tok)
            if self.pending_close:
                self.pending_close = False
                if tok == vocab.close_id:
                    continue
            if self.prefix is None:
                if tok == vocab.open_id:
                    self.prefix = ()
                continue
            if tok == vocab.close_id:  # closed early (a dead end): nothing written
                self.prefix = None
                continue
            prefix = self.prefix + (tok,)
            tid = vocab.trie.track(prefix)
            if tid is not None:
                self.written.append(tid)
                if tid not in self._excluded:
                    self.gone += 1
                self.dead = vocab.dead_prefixes([tid], base=self.dead)
                self.prefix, self.pending_close = None, True
            elif vocab.trie.allowed(prefix):
                self.prefix = prefix
            else:  # left the trie (a token written without this rule): close the span
                self.prefix, self.pending_close = None, True
        self.pos = len(output_ids)

    def can_open(self) -> bool:
        """Whether a new music span may start: under ``max_tracks`` and some track left."""
        under = self.max_tracks is None or len(self.written) < self.max_tracks
        return under and self.gone < len(self.vocab.sequences)

    def only(self) -> list[int] | None:
        """The ids allowed next, or None outside a span (then the music vocabulary is banned)."""
        vocab = self.vocab
        if self.pending_close:
            return [vocab.close_id]
        if self.prefix is not None:
            return vocab.allowed(self.prefix, self.dead) or [vocab.close_id]
        if self.music_first and self.pos == 0 and self.can_open():
            return [vocab.open_id]
        return None

    def rule(self) -> tuple[str, list[int]]:
        """``("only", ids)`` or ``("ban", ids)`` for the next token, after what was fed."""
        only = self.only()
        if only is not None:
            return "only", only
        vocab = self.vocab
        return "ban", [*vocab.code_ids, vocab.close_id] + ([] if self.can_open() else [vocab.open_id])

    def next_rule(self, output_ids: Sequence[int]) -> tuple[str, list[int]]:
        """``feed(output_ids)`` then ``rule()``."""
        self.feed(output_ids)
        return self.rule()

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        """``logits`` (the last dimension is the vocabulary) with the next-token rule applied;
        changed in place when only bans apply."""
        only = self.only()
        if only is None:
            banned = self.vocab.ban_ids(not self.can_open(), logits.shape[-1], logits.device)
            logits[..., banned] = float("-inf")
            return logits
        keep = torch.tensor(only, dtype=torch.long, device=logits.device)
        out = torch.full_like(logits, float("-inf"))
        out[..., keep] = logits[..., keep]
        return out

    def __call__(self, output_ids: Sequence[int], logits: torch.Tensor) -> torch.Tensor:
        self.feed(output_ids)
        return self.apply(logits)


class TrieConstraint:
    """``LogitsProcessor`` keeping generation inside the catalog (see the module docstring).

    Call as ``model.generate(ids, logits_processor=LogitsProcessorList([TrieConstraint(vocab)]))``.
    The first call marks where the prompt ends (a prompt ending inside an open music span
    continues it); use one instance per generation. ``allow_open=False`` is reply mode.
    """

    def __init__(self, vocab: MusicVocab, exclude: Iterable[str] = (), allow_open: bool = True) -> None:
        self.vocab = vocab
        self.exclude = set(exclude)
        self.dead = vocab.dead_prefixes(self.exclude)
        self.max_tracks = None if allow_open else 0
        self.prompt_len: int | None = None

    def _start(self, row: list[int], prompt_len: int) -> int:
        start = span_start(self.vocab, row[:prompt_len])
        return prompt_len if start is None else start

    def state(self, row: list[int]) -> ConstraintState:
        """The rule's state after ``row`` (prompt and what was generated after it)."""
        prompt_len = len(row) if self.prompt_len is None else self.prompt_len
        # rebuilt from the row on every call, so batch rows and reordered beams stay right
        st = ConstraintState(self.vocab, self.exclude, self.max_tracks, dead=self.dead)
        st.feed(row[self._start(row, prompt_len):])
        return st

    def allowed_next(self, row: list[int]) -> list[int] | None:
        """Allowed next ids for one row inside a span; None means "outside a span"."""
        kind, ids = self.state(row).rule()
        return ids if kind == "only" else None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.prompt_len is None or input_ids.shape[1] <= self.prompt_len:
            self.prompt_len = input_ids.shape[1]  # a new generation starts here
        out = scores.clone()
        for b, row in enumerate(input_ids.tolist()):
            out[b] = self.state(row).apply(out[b])
        return out
