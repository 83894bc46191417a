"""The follow-up probe: what a system does when the user only says "thanks, more please".

``report = follow_up_probe(rec, probe_cases(cases, catalog), catalog)`` for a fitted
``Recommender`` and the eval cases of held-out conversations (the probe's cases are built
once and serve every system). For every case after a conversation's first turn, one
generic follow-up (``FOLLOW_UPS``, taken in turn) is tried two ways:

- **alone**: the conversation so far, then the follow-up as the user's message instead of the
  real one. The *echo rate* is the share of the top 10 whose title or artists share a
  content word with a follow-up that names no music ("thank you!" -> "Thank You"); a curator
  goes on from the playlist so far and echoes nothing. ``go_on`` scores the same top 10
  against what the curator actually brought next.
- **prefixed**: the real message with the follow-up before it ("Thanks, these are great.
  Now some reggae from the 90s"), scored against the real answer beside the same turns
  without it: chit-chat around a request should not change what it gets.

Each follow-up is of a kind (``KINDS``): chit-chat ("Thank you!", "More please"), one that
names an artist of the answer before ("More like Bob Marley, please"; ranked but not counted
in the echo rate), or one that asks for a change ("Something different now, please"). The
last two change the request ("More like Drake, please. Can I get more by Future?" asks for
both), so a different ranking with them is no fault; ``by_kind`` reports with / without for
each kind, and chit-chat is where the two should match.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any

import numpy as np

from talkplay.catalog import Catalog, Conversation
from talkplay.evaluate.metrics import turn_metrics
from talkplay.evaluate.protocols import EvalCase, clean_ranking
from talkplay.log import progress
from talkplay.recommender import Recommender
from talkplay.tracks.words import tokenize

CHIT_CHAT, NAMES_ARTIST, CHANGE = "chit-chat", "names an artist", "asks for a change"
KINDS = (CHIT_CHAT, NAMES_ARTIST, CHANGE)
# (text, kind): "{artist}" is an artist of the conversation's previous answer
FOLLOW_UPS: tuple[tuple[str, str], ...] = (
    ("Thank you!", CHIT_CHAT),
    ("Thanks, these are great.", CHIT_CHAT),
    ("I love it! More please.", CHIT_CHAT),
    ("Yes, a couple more.", CHIT_CHAT),
    ("I liked that. More in the same vein?", CHIT_CHAT),
    ("Something different now, please.", CHANGE),
    ("Perfect, keep them coming.", CHIT_CHAT),
    ("Nice! What else have you got?", CHIT_CHAT),
    ("Hmm, not really my thing. Can we try something else?", CHANGE),
    ("Thanks! More like {artist}, please.", NAMES_ARTIST),
    ("Great, add a few more by {artist}.", NAMES_ARTIST),
)
ECHO_DEPTH = 10
METRICS = ("hit@10", "mrr@100")


def content_words(text: str) -> set[str]:
    """Lower-case words of ``text`` without English stop words, plurals folded ("thanks" ->
    "thank"), as the BM25 baseline and the words vectors tokenize."""
    return {w[:-1] if len(w) > 3 and w.endswith("s") else w for w in tokenize([text])[0]}


@dataclass
class ProbeCase:
    """One case of the probe: the follow-up and the two conversations it is tried in."""

    case: EvalCase
    follow_up: str
    kind: str  # one of KINDS
    alone: Conversation
    prefixed: Conversation


def _previous_artist(case: EvalCase, catalog: Catalog) -> str | None:
    for turn in reversed(case.context.turns[:-1]):
        for tid in (*turn.liked, *turn.recommended):
            if tid in catalog.index and catalog.get(tid).artists:
                return catalog.get(tid).artists[0]
    return None


def probe_cases(cases: list[EvalCase], catalog: Catalog) -> list[ProbeCase]:
    """One ``ProbeCase`` per case after a conversation's first turn (follow-ups in turn)."""
    out = []
    for case in cases:
        turns = case.context.turns
        if len(turns) < 2:
            continue
        text, kind = FOLLOW_UPS[len(out) % len(FOLLOW_UPS)]
        if kind == NAMES_ARTIST:
            artist = _previous_artist(case, catalog)
            if artist is None:  # nothing to name: the first follow-up, which names nothing
                text, kind = FOLLOW_UPS[0]
            else:
                text = text.format(artist=artist)
        real = turns[-1].user
        out.append(ProbeCase(case, text, kind, _ending(case.context, text),
                             _ending(case.context, f"{text} {real}".strip())))
    return out


def _ending(conversation: Conversation, user: str) -> Conversation:
    """``conversation`` with its last user message replaced by ``user``."""
    turns = conversation.turns
    return replace(conversation, turns=[*turns[:-1], replace(turns[-1], user=user)])


def _ranked(rec: Recommender, conversation: Conversation, case: EvalCase) -> list[str]:
    got = rec.recommend(conversation, k=case.k, exclude=case.exclude)
    return clean_ranking([t for t, _ in got], case.exclude)


@lru_cache(maxsize=65536)
def _name_words(title: str, artists: tuple[str, ...]) -> frozenset[str]:
    """A track's title and artists as content words (the same tracks recur in every top 10)."""
    return frozenset(content_words(" ".join([title, *artists])))


def echoes(track_ids: list[str], words: set[str], catalog: Catalog) -> float:
    """Share of ``track_ids`` whose title or artists share a word with ``words``."""
    if not track_ids:
        return 0.0
    tracks = [catalog.get(tid) for tid in track_ids]
    return sum(bool(_name_words(t.title, tuple(t.artists)) & words) for t in tracks) / len(tracks)


def _mean(rows: list[dict[str, float]]) -> dict[str, float]:
    return {m: round(float(np.mean([r[m] for r in rows])), 4) if rows else 0.0 for m in METRICS}


def follow_up_probe(rec: Recommender, pcs: list[ProbeCase], catalog: Catalog, name: str = "probe",
                    ranked: dict[str, list[str]] | None = None) -> dict[str, Any]:
    """The probe's report for ``rec`` on ``pcs`` (``probe_cases``; see the module docstring);
    ``{"n": 0}`` without cases. ``ranked``: the system's rankings of the unchanged cases by
    ``docid``, when already made. ``by_kind``: ``n``, ``with_follow_up`` and ``without`` over
    the cases of each kind of follow-up (``KINDS``)."""
    if not pcs:
        return {"n": 0}
    prefetch = getattr(rec, "prefetch", None)
    if callable(prefetch):
        prefetch([c for pc in pcs for c in (pc.alone, pc.prefixed)])
    echo, go_on, with_f, without = [], [], [], []
    for pc in progress(pcs, total=len(pcs), desc=f"{name} follow-ups"):
        alone = _ranked(rec, pc.alone, pc.case)
        if pc.kind != NAMES_ARTIST:
            echo.append(echoes(alone[:ECHO_DEPTH], content_words(pc.follow_up), catalog))
        go_on.append(turn_metrics(alone, pc.case.gold))
        with_f.append(turn_metrics(_ranked(rec, pc.prefixed, pc.case), pc.case.gold))
        plain = (ranked or {}).get(pc.case.docid)
        without.append(turn_metrics(plain if plain is not None else _ranked(rec, pc.case.context, pc.case),
                                    pc.case.gold))
    by_kind = {}
    for kind in KINDS:
        idx = [i for i, pc in enumerate(pcs) if pc.kind == kind]
        if idx:
            by_kind[kind] = {"n": len(idx), "with_follow_up": _mean([with_f[i] for i in idx]),
                             "without": _mean([without[i] for i in idx])}
    return {"n": len(pcs), "n_echo": len(echo),
            "echo_rate": round(float(np.mean(echo)), 4) if echo else 0.0,
            "go_on": _mean(go_on), "with_follow_up": _mean(with_f), "without": _mean(without),
            "by_kind": by_kind}
