"""Render a conversation through the base model's chat template, with a loss mask.

``r = render(conv, hf_tokenizer, music)`` gives ``r.input_ids`` and ``r.loss_mask`` (1 where
the model is trained: the assistant's music tokens, its reply text and its end-of-turn
token; 0 for the system prompt, user turns and template markup). ``render_prompt(conv,
hf_tokenizer, music)`` renders the history plus the last user message and stops where the
assistant's answer starts; the model then writes ``<|music|>`` codes ``<|/music|>`` reply.

An assistant turn is written as one ``<|music|> … <|/music|>`` block per recommended track
(tracks before the reply by default, as in the paper), then ``reply_sep``, then the reply.
The mask is built here from the template's own text, not from ``{% generation %}``
markers (most templates have none and would silently give an all-zero mask).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from talkplay.catalog import Conversation, Turn
from talkplay.errors import TalkPlayError
from talkplay.modalities import MUSIC_CLOSE, MUSIC_OPEN

DEFAULT_SYSTEM = "You are TalkPlay, a music recommender. Recommend tracks, then say why."


class RenderError(TalkPlayError):
    """A conversation could not be rendered with this tokenizer (template or vocabulary)."""


@dataclass
class RenderConfig:
    """How conversations become token ids: ``RenderConfig(max_length=512, tracks_first=True)``.

    - ``system``: system prompt (None: none; the template may then insert its own default).
    - ``profile``: write the listener profile (its plain values) into the system message.
    - ``tracks_first``: music blocks before the reply (the paper) or after it.
    - ``max_tracks``: at most this many tracks per assistant turn (None: all).
    - ``supervise_disliked``: train on tracks the user rejected (off: they stay visible in
      the history but are not targets).
    - ``feedback``: start the next user message with ``Liked: #1, #3.`` / ``Disliked: #2.``
      lines, numbering the previous answer's tracks in order (a track it did not show is
      written as a music block), so the model sees the listener's feedback.
    - ``max_length``: drop whole oldest turns until the sequence fits (the last turn stays).
    - ``cards``: ``track id -> text`` written after every music block, never trained on
      (``talkplay.cards.Cards``); the reply then follows the cards, so a model can copy
      what it names from them. None: no cards (`talkplay train` without `--cards`).
    - ``cards_history``: cards after the tracks of every answer, or (False) of the last
      answer only: the one the reply being written talks about. Earlier tracks are still
      their rows, and the window keeps more earlier turns.

    A turn's ``extra["user_tracks"]`` (track ids) are written as music blocks after the
    user's text, unsupervised: "what is this track? <|music|>…<|/music|>".
    """

    system: str | None = DEFAULT_SYSTEM
    profile: bool = True
    tracks_first: bool = True
    max_tracks: int | None = None
    supervise_disliked: bool = False
    feedback: bool = True
    reply_sep: str = " "
    max_length: int | None = None
    cards: Callable[[str], str] | None = None
    cards_history: bool = True


@dataclass
class Rendered:
    """A rendered conversation: ``input_ids`` and ``loss_mask`` (same length, 1 = trained on)."""

    input_ids: list[int]
    loss_mask: list[int]
    dropped_turns: int = 0
    music_positions: list[int] = field(default_factory=list)  # where music tokens sit
    # one entry per music block, in order: (track id, turn index, written by the assistant)
    blocks: list[tuple[str, int, bool]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.input_ids)

    def labels(self, ignore_index: int = -100) -> list[int]:
        """Labels for a causal LM loss: the ids where the mask is 1, ``ignore_index`` elsewhere."""
        return [i if m else ignore_index for i, m in zip(self.input_ids, self.loss_mask, strict=True)]


def _music_block(music: Any, track_id: str, blocks: list[tuple[str, int, bool]] | None = None,
                 turn: int = 0, assistant: bool = False) -> str:
    if blocks is not None:  # the caller needs to know which track each block stands for
        blocks.append((track_id, turn, assistant))
    return MUSIC_OPEN + "".join(music.track_tokens(track_id)) + MUSIC_CLOSE


def _known(music: Any) -> set[str]:
    """The tokenizer's track ids as a set, cached on it until its track count changes."""
    ids = music.track_ids
    cached = getattr(music, "_talkplay_known_ids", None)
    if cached is None or cached[0] != len(ids):
        cached = (len(ids), set(ids))
        try:
            music._talkplay_known_ids = cached
        except AttributeError:
            pass
    return cached[1]


def turn_tracks(turn: Turn, music: Any, cfg: RenderConfig) -> list[str]:
    """The tracks an assistant turn writes: recommended (then liked) ids the tokenizer knows."""
    known = _known(music)
    seen: set[str] = set()
    out = []
    for t in [*turn.recommended, *turn.liked, *turn.disliked]:
        if t in known and t not in seen:
            seen.add(t)
            out.append(t)
    if cfg.max_tracks is not None:
        disliked = set(turn.disliked)
        # prefer tracks the user did not reject when only some fit
        out = sorted(out, key=lambda t: t in disliked)[: cfg.max_tracks]
    return out


def _profile_value(v: Any) -> str:
    """Scalars and lists of scalars only: nested records (e.g. a dataset's hidden
    conversation goal) describe the simulated listener, not what a recommender may see."""
    if isinstance(v, (str, int, float)) and not isinstance(v, bool):
        return str(v).strip()
    if isinstance(v, (list, tuple)) and v and all(isinstance(x, (str, int, float)) for x in v):
        return ", ".join(str(x) for x in v)
    return ""


def _system_text(conv: Conversation, cfg: RenderConfig) -> str | None:
    parts = [cfg.system] if cfg.system else []
    if cfg.profile and conv.profile:
        items = "; ".join(f"{k}: {_profile_value(v)}" for k, v in conv.profile.items()
                          if _profile_value(v) and not k.startswith("_"))
        if items:
            parts.append(f"Listener profile: {items}")
    return "\n".join(parts) or None


def _user_text(conv: Conversation, i: int, music: Any, cfg: RenderConfig,
               blocks: list[tuple[str, int, bool]] | None = None) -> str:
    text = conv.turns[i].user.strip()
    if cfg.feedback and i > 0:
        prev = conv.turns[i - 1]
        known = _known(music)
        shown = {t: n for n, t in enumerate(turn_tracks(prev, music, cfg), start=1)}
        lines = []
        for label, ids in (("Liked", prev.liked), ("Disliked", prev.disliked)):
            # tracks the last answer showed are referred to by number (no repeated tokens)
            refs = [f"#{shown[t]}" if t in shown else _music_block(music, t, blocks, i) + _card(cfg, t)
                    for t in ids if t in shown or t in known]
            if refs:
                lines.append(f"{label}: {', '.join(refs)}.")
        if lines:
            text = "\n".join([*lines, text])
    # tracks the user refers to ("what is this track? <|music|>…"), e.g. alignment examples
    shown = [t for t in conv.turns[i].extra.get("user_tracks") or () if t in _known(music)]
    if shown:
        text = text + " " + "".join(_music_block(music, t, blocks, i) + _card(cfg, t) for t in shown)
    return text


def _card(cfg: RenderConfig, track_id: str) -> str:
    """The card of a track the user's message refers to, inline in the message."""
    return cfg.cards(track_id).rstrip("\n") if cfg.cards is not None else ""


def _assistant_parts(turn: Turn, music: Any, cfg: RenderConfig,
                     record: list[tuple[str, int, bool]] | None = None,
                     index: int = 0, last: bool = True) -> list[tuple[str, bool]]:
    """The assistant content as (text, supervised) pieces; joined, they are the content.
    ``last``: the conversation's last answer (the one that has cards without ``cards_history``)."""
    if cfg.cards is not None and not (last or cfg.cards_history):
        cfg = replace(cfg, cards=None)
    disliked = set(turn.disliked)
    blocks: list[tuple[str, bool]] = []
    for t in turn_tracks(turn, music, cfg):
        target = cfg.supervise_disliked or t not in disliked
        blocks.append((_music_block(music, t, record, index, True), target))
        if cfg.cards is not None:  # written by the engine at inference, so never a target
            blocks.append((cfg.cards(t), False))
    reply = turn.assistant.strip()
    if not blocks:
        return [(reply, True)]
    if not reply:
        return blocks
    if cfg.tracks_first:  # a card ends its line: the reply needs no separator after it
        return [*blocks, (reply if cfg.cards is not None else cfg.reply_sep + reply, True)]
    return [(reply + cfg.reply_sep, True), *blocks]


def _template(tok: Any, messages: list[dict[str, str]], gen: bool = False) -> str:
    if not messages:
        return ""
    return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen)


def _eot(tok: Any) -> str | None:
    """The end-of-turn marker the template writes after an assistant message."""
    unk = tok.unk_token_id
    for cand in ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", tok.eos_token):
        if cand:  # convert_tokens_to_ids, not get_vocab(): that builds a 50k-entry dict per call
            i = tok.convert_tokens_to_ids(cand)
            if i is not None and (i != unk or cand == tok.unk_token):
                return cand
    return tok.eos_token


def _encode(tok: Any, text: str) -> list[int]:
    return tok(text, add_special_tokens=False)["input_ids"] if text else []


def _segments(conv: Conversation, turns: range, tok: Any, music: Any, cfg: RenderConfig,
              prompt: bool, blocks: list[tuple[str, int, bool]] | None = None) -> list[tuple[str, bool]]:
    """Template text cut into (text, supervised) segments, in order."""
    messages: list[dict[str, str]] = []
    system = _system_text(conv, cfg)
    if system:
        messages.append({"role": "system", "content": system})
    segs: list[tuple[str, bool]] = []
    done = ""
    last = turns[-1] if len(turns) else None
    eot = _eot(tok)
    for i in turns:
        messages.append({"role": "user", "content": _user_text(conv, i, music, cfg, blocks)})
        if prompt and i == last:
            text = _template(tok, messages, gen=True)
            segs.append((_delta(done, text), False))
            return segs
        head = _template(tok, messages, gen=True)
        segs.append((_delta(done, head), False))
        parts = _assistant_parts(conv.turns[i], music, cfg, blocks, i, last=i == last)
        content = "".join(p for p, _ in parts)
        messages.append({"role": "assistant", "content": content})
        full = _template(tok, messages)
        seg_all = _delta(done, full)
        if full.startswith(head):
            pos = len(head) - len(done)
            if not seg_all.startswith(content, pos):
                raise RenderError("the chat template does not render the assistant text verbatim")
        else:
            # a template that renders past assistant turns unlike its generation prompt:
            # cut at the content instead
            pos = seg_all.rfind(content)
            if pos < 0:
                raise RenderError("the chat template does not render the assistant text verbatim")
            segs[-1] = (seg_all[:pos], False)
        rest = seg_all[pos + len(content):]
        segs.extend(parts)
        cut = rest.find(eot) + len(eot) if eot and eot in rest else 0
        # an empty answer (no known track, no reply) teaches nothing worth learning
        segs.append((rest[:cut], bool(content.strip())))
        segs.append((rest[cut:], False))
        done = full
    return segs


def _delta(done: str, text: str) -> str:
    if not text.startswith(done):
        raise RenderError("the chat template re-renders earlier turns differently as turns are added")
    return text[len(done):]


def music_id_set(tok: Any, music: Any) -> set[int]:
    """Ids of ``MUSIC_OPEN``, ``MUSIC_CLOSE`` and every music token in ``tok``'s vocabulary."""
    cache = getattr(music, "_talkplay_id_sets", None)
    if cache is None:
        cache = {}
        try:
            music._talkplay_id_sets = cache
        except AttributeError:
            pass
    key = (id(tok), len(tok), tok.convert_tokens_to_ids(MUSIC_OPEN))
    if key not in cache:
        vocab = tok.get_vocab()
        missing = [s for s in (MUSIC_OPEN, MUSIC_CLOSE, *music.vocab) if s not in vocab]
        if missing:
            raise RenderError(f"the tokenizer lacks {len(missing)} music tokens (e.g. {missing[0]}); "
                              "call talkplay.model.expand_vocab first")
        cache[key] = {vocab[s] for s in (MUSIC_OPEN, MUSIC_CLOSE, *music.vocab)}
    return cache[key]


def _count_music(text: str, music: Any) -> int:
    """How many music tokens ``text`` holds, counting whole blocks written by this module."""
    n = 0
    start = text.find(MUSIC_OPEN)
    while start >= 0:
        end = text.find(MUSIC_CLOSE, start)
        if end < 0:
            break
        inner = text[start + len(MUSIC_OPEN): end]
        n += 2 + inner.count("<")
        start = text.find(MUSIC_OPEN, end)
    return n


def _tokenise(segs: list[tuple[str, bool]], tok: Any, music: Any) -> tuple[list[int], list[int], list[int]]:
    """Encode segments; verify every music token became exactly one music id."""
    music_ids = music_id_set(tok, music)
    ids: list[int] = []
    mask: list[int] = []
    for text, sup in segs:
        piece = _encode(tok, text)
        if MUSIC_OPEN in text and sum(i in music_ids for i in piece) != _count_music(text, music):
            raise RenderError("music tokens were split or merged by the tokenizer; "
                              "they must be added tokens (talkplay.model.expand_vocab)")
        ids.extend(piece)
        mask.extend([int(sup)] * len(piece))
    positions = [p for p, i in enumerate(ids) if i in music_ids]
    return ids, mask, positions


def _render(conv: Conversation, tok: Any, music: Any, cfg: RenderConfig, prompt: bool) -> Rendered:
    n = len(conv.turns)
    if n == 0:
        raise RenderError(f"conversation {conv.id!r} has no turns")
    start = 0
    while True:
        blocks: list[tuple[str, int, bool]] = []
        segs = _segments(conv, range(start, n), tok, music, cfg, prompt, blocks)
        ids, mask, positions = _tokenise(segs, tok, music)
        if cfg.max_length is None or len(ids) <= cfg.max_length or start == n - 1:
            break
        start += 1
    if cfg.max_length is not None and len(ids) > cfg.max_length:
        # even the last turn alone is too long: keep its end (prompt) or its start (training)
        cut = len(ids) - cfg.max_length if prompt else 0
        ids, mask = ids[cut: cut + cfg.max_length], mask[cut: cut + cfg.max_length]
        positions = [p - cut for p in positions if cut <= p < cut + cfg.max_length]
        # blocks cut off with the text go from the record too: from the left, those whose end
        # remains are counted; from the right, those whose start remains
        edge = tok.convert_tokens_to_ids(MUSIC_CLOSE if prompt else MUSIC_OPEN)
        kept = sum(i == edge for i in ids)
        blocks = blocks[len(blocks) - kept:] if prompt else blocks[:kept]
    return Rendered(ids, mask, dropped_turns=start, music_positions=positions, blocks=blocks)


def render(conv: Conversation, hf_tokenizer: Any, music: Any, cfg: RenderConfig | None = None) -> Rendered:
    """Render every turn for training: ``r = render(conv, tok, music, RenderConfig())``.

    ``hf_tokenizer`` must already hold the music tokens (``talkplay.model.expand_vocab``).
    Raises ``RenderError`` if the template or tokenizer cannot give an exact mask.
    """
    return _render(conv, hf_tokenizer, music, cfg or RenderConfig(), prompt=False)


def render_prompt(conv: Conversation, hf_tokenizer: Any, music: Any,
                  cfg: RenderConfig | None = None) -> list[int]:
    """Ids of the history plus the last turn's user message, ending at the assistant's start.

    Call as ``ids = render_prompt(conv, tok, music)``; the last turn's assistant text and
    tracks, if any, are ignored. The model continues with ``<|music|>`` codes ``<|/music|>``.
    """
    return _render(conv, hf_tokenizer, music, cfg or RenderConfig(), prompt=True).input_ids


def render_prompt_blocks(conv: Conversation, hf_tokenizer: Any, music: Any,
                        cfg: RenderConfig | None = None) -> Rendered:
    """``render_prompt`` with its bookkeeping: ``r.input_ids`` and ``r.blocks`` (which track
    each music block stands for), for models that put something of their own at each block."""
    return _render(conv, hf_tokenizer, music, cfg or RenderConfig(), prompt=True)


def render_spans(conv: Conversation, hf_tokenizer: Any, music: Any,
                 cfg: RenderConfig | None = None) -> tuple[list[tuple[str, bool]], Rendered]:
    """``spans, r = render_spans(conv, tok, music)``: the rendering as (text, supervised) runs."""
    r = render(conv, hf_tokenizer, music, cfg)
    spans: list[tuple[str, bool]] = []
    start = 0
    for p in range(1, len(r.input_ids) + 1):
        if p == len(r.input_ids) or r.loss_mask[p] != r.loss_mask[start]:
            spans.append((hf_tokenizer.decode(r.input_ids[start:p]), bool(r.loss_mask[start])))
            start = p
    return spans, r
