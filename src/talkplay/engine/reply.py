"""Writing a reply token by token, never naming a track the answer did not bring.

``for chunk in ReplyWriter(engine, guard).stream(logits, cache): ...`` continues a KV-cached
prompt that ends after the answer's music blocks and cards. Each token is picked by the
engine's picker (greedy or top-p) with music markup masked. With a ``ReplyGuard``, a reply
that names a catalog title or artist outside the allowed tracks is rolled back to the
token where that name began; that token is banned at that position and writing goes on.
After ``MAX_ROLLBACKS`` the reply is cut before the name instead. Text is streamed with a
name or quotation still being written held back, so nothing a rollback removes was ever
shown.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Any

import torch

from talkplay.catalog import Conversation
from talkplay.engine.ranking import lm_forward
from talkplay.exclusion import session_exclude
from talkplay.names import CatalogNames, Mention

MAX_ROLLBACKS = 24
_RAW_MUSIC = re.compile(r"<\|/?music\|>|<\|track\|>|<[a-z]+_\d{3,}>")


def clean_reply(text: str) -> str:
    """Reply text with any raw music-token markup removed and whitespace tidied."""
    return " ".join(_RAW_MUSIC.sub(" ", text).split())


class ReplyGuard:
    """What a reply may name: ``ReplyGuard(names, conversation, answer_ids)``.

    Allowed are the tracks of this answer and of the conversation so far (recommended,
    liked, rejected or shown by the user), their artists, and anything the user wrote.
    """

    def __init__(self, names: CatalogNames, conversation: Conversation, answer_ids: Iterable[str]) -> None:
        self.names = names
        shown = [x for t in conversation.turns for x in t.extra.get("user_tracks") or ()]
        seen = session_exclude(conversation, answer_ids, shown)  # every track seen so far
        # built once: the guard checks the reply after every token
        self.allowance = names.allowance(seen, "\n".join(t.user for t in conversation.turns))

    def violations(self, text: str, final: bool) -> list[Mention]:
        """Names ``text`` may not make; before the end only those a word boundary closes."""
        bad = self.names.unfaithful(text, self.allowance, final=final)
        return bad if final else [m for m in bad if m.end < len(text)]


class ReplyWriter:
    """Decode a reply for ``engine`` (an ``Engine``): ``ReplyWriter(engine, guard).stream(logits, cache)``."""

    def __init__(self, engine: Any, guard: ReplyGuard | None = None) -> None:
        self.engine = engine
        self.guard = guard
        self.rollbacks = 0

    def _text(self, ids: list[int]) -> str:
        return clean_reply(self.engine.tokenizer.decode(ids, skip_special_tokens=True))

    def _token_at(self, reply: list[int], char: int) -> int:
        """Index of the token whose text reaches past character ``char`` of the reply."""
        for i in range(len(reply)):
            if len(self._text(reply[: i + 1])) > char:
                return i
        return len(reply) - 1

    @torch.inference_mode()
    def stream(self, logits: torch.Tensor, cache: Any) -> Iterator[str]:
        """Yield the reply as text chunks; ``logits`` [V] predict its first token after ``cache``."""
        eng = self.engine
        base = cache.get_seq_length()
        gen = torch.Generator().manual_seed(eng.cfg.seed)
        reply: list[int] = []
        history = [logits.float()]  # history[i]: the scores that pick reply[i]
        banned: dict[int, set[int]] = {}
        sent = ""
        final = False
        while True:
            scores = history[len(reply)].clone()
            scores[eng.music_ids] = float("-inf")  # the reply is text: no music markup
            for tok in banned.get(len(reply), ()):
                scores[tok] = float("-inf")
            tok = eng.pick(scores, gen)
            final = tok in eng.stop_ids or len(reply) + 1 >= eng.cfg.reply_tokens
            if tok not in eng.stop_ids:
                reply.append(tok)
            text = self._text(reply)
            bad = self.guard.violations(text, final) if self.guard else []
            if bad:
                start = min(m.start for m in bad)
                if self.rollbacks >= MAX_ROLLBACKS:
                    text = text[:start].rstrip(" ,;:-(\"'“")
                    final = True
                else:
                    self.rollbacks += 1
                    j = self._token_at(reply, start)
                    banned.setdefault(j, set()).add(reply[j])
                    reply, history = reply[:j], history[: j + 1]
                    drop = cache.get_seq_length() - (base + j)
                    if drop > 0:  # a negative count removes tokens in every transformers version
                        cache.crop(-drop)
                    continue
            if final:
                break
            safe = self._safe(text)
            if len(safe) > len(sent) and safe.startswith(sent):
                yield safe[len(sent):] if sent else safe
                sent = safe
            out, cache = lm_forward(eng.model, cache, input_ids=torch.tensor([[tok]], device=eng.device),
                                    logits_to_keep=1)
            history.append(out.logits[0, -1].float())
        # the guarantee, whatever the rollbacks did: cut before anything still unfaithful
        while self.guard and (bad := self.guard.violations(text, True)):
            text = text[: min(m.start for m in bad)].rstrip(" ,;:-(\"'“")
        if text.startswith(sent) and len(text) > len(sent):
            yield text[len(sent):] if sent else text

    def _safe(self, text: str) -> str:
        """The part of ``text`` no later rollback can touch: all but a name being written."""
        if text.endswith("\ufffd"):  # a multi-byte character is not complete yet
            return ""
        return text[: self.guard.names.pending(text)].rstrip() if self.guard else text
