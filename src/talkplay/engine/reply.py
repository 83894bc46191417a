"""Writing a reply token by token, never naming a track the answer did not bring.

``for chunk in ReplyWriter(engine, guard).stream(logits, cache): ...`` continues a KV-cached
prompt that ends after the answer's music blocks and cards. Each token is picked by the
engine's picker (greedy or top-p) with music markup masked. With a ``ReplyGuard``, a reply
that names a catalog title or artist outside the allowed tracks is rolled back to the
token where that name began and *steered*: from there it must write one of the answer's own
names (its cards' artists and titles; the model picks which), then goes on freely. A
reply that once reached for "by Queen" beside three Adele songs says "by Adele", not "by
songs by songs". No token trigram is written twice, and a reply cut by the token budget or
by ``MAX_ROLLBACKS`` ends as a sentence (``finish_sentence``). Text is streamed with a name,
a quotation or a phrase still being written held back, so nothing shown is ever taken back.
"""

from __future__ import annotations

import re
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import torch

from talkplay.catalog import Conversation
from talkplay.engine.lm import lm_forward
from talkplay.exclusion import session_exclude
from talkplay.names import CatalogNames, Mention, occurs

MAX_ROLLBACKS = 24
NO_REPEAT_NGRAM = 3  # no token trigram twice in one reply
# A sentence end, then optionally closing quotes/brackets and emoji, then nothing
_END = re.compile(r"[.!?…]+[\"'”’)\]»]*[\s\U0001F000-\U0001FAFF\u2600-\u27BF\uFE0F\u200D]*$")
# words no sentence ends on ("songs by."); not "like" or "for": "songs you might like." and
# "what you were looking for." are whole sentences, and common replies
DANGLING = frozenset("by the a an of and or to with from in on your my our their".split())
_PUNCT = ",;:-–—(\"'“"  # what a cut phrase may trail
_RAW_MUSIC = re.compile(r"<\|/?music\|>|<\|track\|>|<[a-z]+_\d{3,}>")


def clean_reply(text: str) -> str:
    """Reply text with any raw music-token markup removed and whitespace tidied."""
    return " ".join(_RAW_MUSIC.sub(" ", text).split())


class ReplyGuard:
    """What a reply may name: ``ReplyGuard(names, conversation, answer_ids)``.

    Allowed are the tracks of this answer and of the conversation so far (recommended,
    liked, rejected or shown by the user), their artists, and anything the user wrote.
    ``sayable`` lists the names a rolled-back reply is steered to: this answer's artists
    and titles, the names on its cards; ``asked``, the artists on them that the request
    names, come first: the first artist a reply names should be the one asked for, and the
    first name it makes one of this answer's (``redirects``).
    """

    def __init__(self, names: CatalogNames, conversation: Conversation, answer_ids: Iterable[str]) -> None:
        self.names = names
        answer = list(answer_ids)
        shown = [x for t in conversation.turns for x in t.extra.get("user_tracks") or ()]
        seen = session_exclude(conversation, answer, shown)  # every track seen so far
        # built once: the guard checks the reply after every token
        self.allowance = names.allowance(seen, "\n".join(t.user for t in conversation.turns))
        tracks = [names.catalog.get(t) for t in answer if t in names.catalog.index]
        artists = [a for tr in tracks for a in tr.artists]
        self.sayable = list(dict.fromkeys(artists + [tr.title for tr in tracks]))
        self.answer = frozenset(answer)
        self.request = conversation.turns[-1].user.lower() if conversation.turns else ""
        self.asked = list(dict.fromkeys(a for a in artists if occurs(a.lower(), self.request)))
        self._asked = frozenset(a.lower() for a in self.asked)

    def violations(self, text: str, final: bool) -> list[Mention]:
        """Names ``text`` may not make; before the end only those a word boundary closes."""
        bad = self.names.unfaithful(text, self.allowance, final=final)
        return bad if final else [m for m in bad if m.end < len(text)]

    def redirects(self, text: str, final: bool) -> list[Mention]:
        """``violations``, and a first name that is faithful but not about this answer: one
        the cards do not have (an earlier turn's artist) and the request does not say, or,
        when the request asked for an artist on the cards, another artist. Both are steered."""
        bad = self.violations(text, final)
        if bad:
            return bad
        asked = self._asked
        for m in self.names.find(text):
            if m.end >= len(text) and not final:
                break  # still being written
            name = m.name.lower()
            if m.kind == "artist" and asked:
                ok = name in asked
            else:
                ok = bool(m.track_ids & self.answer) or occurs(name, self.request)
            return [] if ok else [replace(m, kind="redirect")]
        return []


def repeats_ngram(ids: list[Any], tok: Any, n: int = NO_REPEAT_NGRAM) -> bool:
    """Whether appending ``tok`` to ``ids`` repeats an n-gram ``ids`` already holds."""
    if len(ids) < n - 1:
        return False
    gram = (*ids[len(ids) - n + 1:], tok)
    return any(tuple(ids[i: i + n]) == gram for i in range(len(ids) - n + 1))


def plain_words(text: str) -> list[str]:
    """Lower-cased words with punctuation stripped (``"you'll"`` -> ``"youll"``)."""
    return re.sub(r"[^\w\s]", "", text.lower()).split()


def is_cut_off(text: str) -> bool:
    """``is_cut_off("Here are some songs by.")`` -> True: the text is empty, has no sentence
    end (., !, ?, … optionally followed by closing quotes, brackets or emoji), or ends on a
    word no sentence ends with (``DANGLING``). The writer's rule and ``talkplay eval``'s."""
    end = _END.search(text.strip())
    if end is None:
        return True
    words = plain_words(text.strip()[: end.start()])
    return not words or words[-1] in DANGLING


def finish_sentence(text: str) -> str:
    """``text`` ending as a sentence (``is_cut_off`` false): words a phrase cannot end on
    dropped, a period added.

    ``finish_sentence("Here are some songs by")`` -> ``"Here are some songs."``
    """
    text = text.rstrip()
    if not text or not is_cut_off(text):
        return text
    end = _END.search(text)  # "songs by." ends on a word no sentence ends with: drop its end too
    ws = (text[: end.start()] if end else text).split()
    while ws and (ws[-1].lower().strip(_PUNCT) in DANGLING or not ws[-1].strip(_PUNCT)):
        ws.pop()
    text = " ".join(ws).rstrip(",;:-–—( ")
    if text[-1:] in "\"“" and (text.count('"') + text.count("“") + text.count("”")) % 2:
        text = text[:-1].rstrip()  # a quotation opened and never written
    return text + "." if text else ""


@dataclass
class Feed:
    """What ``ReplyWriter.steps`` asks the model for: run ``token`` after the first ``keep``
    reply tokens (the model state past them is rolled back first) and send back its logits."""

    token: int
    keep: int


class ReplyWriter:
    """Decode a reply for a ``ContentEngine``: ``ReplyWriter(engine, guard).stream(logits, cache)``."""

    def __init__(self, engine: Any, guard: ReplyGuard | None = None) -> None:
        self.engine = engine
        self.guard = guard
        self.rollbacks = 0
        self.written = 0  # reply tokens written (rolled-back ones not counted)
        self._sayable: list[str] = (guard.asked or guard.sayable) if guard else []
        self._keys: dict[int, str] = {}

    def _key(self, tok: int) -> str:
        """A token as a word piece, case and leading space aside (" I" and "I" are one)."""
        key = self._keys.get(tok)
        if key is None:
            key = self._keys[tok] = self.engine.tokenizer.decode([tok]).strip().lower()
        return key

    def _text(self, ids: list[int]) -> str:
        return clean_reply(self.engine.tokenizer.decode(ids, skip_special_tokens=True))

    def _token_at(self, reply: list[int], char: int) -> int:
        """Index of the token whose text reaches past character ``char`` of the reply."""
        for i in range(len(reply)):
            if len(self._text(reply[: i + 1])) > char:
                return i
        return len(reply) - 1

    def _steer(self, reply: list[int], j: int, start: int) -> list[list[int]]:
        """Token sequences that write one of the answer's own names where ``reply[j]`` began a
        name it may not make (whatever ``reply[j]`` held before the name, a space or a quote,
        is kept in front of it)."""
        full = self._text(reply[: j + 1])
        lead = full[min(len(self._text(reply[:j])), start): start]
        tok = self.engine.tokenizer
        return [ids for name in self._sayable
                if (ids := tok(lead + name, add_special_tokens=False)["input_ids"])]

    @torch.inference_mode()
    def stream(self, logits: torch.Tensor, cache: Any) -> Iterator[str]:
        """Yield the reply as text chunks; ``logits`` [V] predict its first token after ``cache``."""
        base = cache.get_seq_length()
        steps = self.steps(logits)
        item = next(steps, None)
        while item is not None:
            if isinstance(item, str):
                yield item
                item = next(steps, None)
                continue
            drop = cache.get_seq_length() - (base + item.keep)
            if drop > 0:  # a negative count removes tokens in every transformers version
                cache.crop(-drop)
            out, cache = lm_forward(self.engine.model, cache, logits_to_keep=1,
                                    input_ids=torch.tensor([[item.token]], device=self.engine.device))
            try:
                item = steps.send(out.logits[0, -1])
            except StopIteration:
                item = None

    def steps(self, logits: torch.Tensor) -> Generator[str | Feed, torch.Tensor, None]:
        """The writer without a model: yields text chunks and ``Feed``s; after a ``Feed`` the
        caller sends the logits [V] that follow it (``stream`` runs one KV cache; the batch
        runner, ``talkplay.engine.batch``, feeds many replies in one forward).

        ``logits`` [V] predict the reply's first token."""
        eng = self.engine
        gen = torch.Generator().manual_seed(eng.cfg.seed)
        reply: list[int] = []
        history = [logits.float()]  # history[i]: the scores that pick reply[i]
        banned: dict[int, set[int]] = {}
        steering: list[list[int]] = []  # the rest of each name the reply is being steered to
        steered: set[int] = set()  # positions already steered once (a second time: ban instead)
        sent = ""
        final = False
        while True:
            scores = history[len(reply)].clone()
            scores[eng.music_ids] = float("-inf")  # the reply is text: no music markup
            for tok in banned.get(len(reply), ()):
                scores[tok] = float("-inf")
            if not reply:  # an answer always says something: a reply is what a person reads first
                scores[list(eng.stop_ids)] = float("-inf")
            if steering:
                keep = torch.full_like(scores, float("-inf"))
                firsts = torch.tensor(sorted({seq[0] for seq in steering}), device=scores.device)
                keep[firsts] = scores[firsts]
                scores = keep
            tok = eng.pick(scores, gen)
            # no phrase twice: a reply that loops is not one a person keeps reading
            keys = [self._key(t) for t in reply]
            while (not steering and repeats_ngram(keys, self._key(tok))
                   and int(torch.isfinite(scores).sum()) > 1):
                scores[tok] = float("-inf")
                tok = eng.pick(scores, gen)
            if steering:
                steering = [seq[1:] for seq in steering if seq[0] == tok]
                if any(not seq for seq in steering):  # a whole name is written
                    steering = []
            final = (tok in eng.stop_ids or len(reply) + 1 >= eng.cfg.reply_tokens) and not steering
            if tok not in eng.stop_ids:
                reply.append(tok)
            text = self._text(reply)
            bad = self.guard.redirects(text, final) if self.guard else []
            if bad:
                start = min(m.start for m in bad)
                if self.rollbacks >= MAX_ROLLBACKS:
                    text = text[:start].rstrip(" ,;:-(\"'“")
                    final = True
                else:
                    self.rollbacks += 1
                    j = self._token_at(reply, start)
                    steering = self._steer(reply, j, start) if j not in steered else []
                    if steering:
                        steered.add(j)
                    else:  # steered here before, or nothing to say: the token is banned there
                        banned.setdefault(j, set()).add(reply[j])
                    # the model state is rolled back with the next Feed's `keep`
                    reply, history = reply[:j], history[: j + 1]
                    continue
            if final:
                break
            safe = self._safe(text)
            if len(safe) > len(sent) and safe.startswith(sent):
                yield safe[len(sent):] if sent else safe
                sent = safe
            self.written = len(reply)
            logits = yield Feed(tok, len(reply) - 1)
            history.append(logits.float())
        # the guarantee, whatever the rollbacks did: cut before anything still unfaithful
        while self.guard and (bad := self.guard.violations(text, True)):
            text = text[: min(m.start for m in bad)].rstrip(" ,;:-(\"'“")
        text = finish_sentence(text)
        self.written = len(reply)
        if text.startswith(sent) and len(text) > len(sent):
            yield text[len(sent):] if sent else text

    def _safe(self, text: str) -> str:
        """The part of ``text`` no later change can touch: all but a name being written and
        the words a sentence cut here would lose (``finish_sentence``)."""
        if text.endswith("\ufffd"):  # a multi-byte character is not complete yet
            return ""
        if self.guard:
            text = text[: self.guard.names.pending(text)].rstrip()
        return text if not is_cut_off(text) else text[: _phrase_end(text)]


def _phrase_end(text: str) -> int:
    """Where ``finish_sentence`` could cut ``text``: before its last word and the words a
    phrase cannot end on before that (the last word may still be growing)."""
    ws = list(re.finditer(r"\S+", text))[:-1]
    while ws and ws[-1].group().lower().strip(_PUNCT) in DANGLING:
        ws.pop()
    return ws[-1].start() + len(ws[-1].group().rstrip(_PUNCT)) if ws else 0
