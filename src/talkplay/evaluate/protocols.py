"""Evaluation protocols: which turns are scored, what a system sees, what counts as gold.

``cases = cpcd_cases(conversations)`` or ``next_track_cases(conversations, catalog_ids,
pool=True)`` yield ``EvalCase`` objects; a runner calls
``system.recommend(case.context, k=case.k, exclude=case.exclude)`` and scores the
ranking against ``case.gold`` with ``score_case``.

``cpcd`` follows the dataset's official eval.py: at turn i the system sees the user
queries of turns 0..i, the system responses of turns 0..i-1 and the seed tracks (the
first 3 liked results of each earlier turn); gold = goal playlist minus every seed so
far; seeds are removed from the ranking; a turn with no gold left is skipped; the
ranking holds at least 100 ids.

``next-track`` (TalkPlayData 2 style and synthesized dialogs): gold = the tracks
recommended at turn i; the system sees turns 0..i-1 in full and the current message;
tracks the session already recommended, liked or rejected are excluded (and are no
gold); with ``pool=True`` the ranking is restricted to ``conversation.extra["pool"]``.

Either way ``case.exclude`` is ``talkplay.exclusion.session_exclude(case.context)`` (plus,
with a pool, the tracks outside it): what the system was shown counts as seen.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field

from talkplay.catalog import Conversation, Turn
from talkplay.errors import InputError
from talkplay.evaluate.metrics import K_VALUES, turn_metrics
from talkplay.exclusion import session_exclude

PROTOCOLS = ("cpcd", "next-track")
N_SEEDS = 3  # CPCD: first 3 liked results of each earlier turn
RANK_DEPTH = 100  # CPCD: at least 100 distinct ids per ranking


@dataclass
class EvalCase:
    """One scored turn: what the system sees (``context``), must rank, and is judged on."""

    conversation_id: str
    turn_index: int
    context: Conversation
    gold: list[str]
    exclude: frozenset[str] = frozenset()
    k: int = RANK_DEPTH
    seeds: list[str] = field(default_factory=list)

    @property
    def docid(self) -> str:
        """The CPCD prediction key ``"<dialog_id>:<turn_index>"``."""
        return f"{self.conversation_id}:{self.turn_index}"


def cpcd_cases(conversations: Sequence[Conversation], depth: int = RANK_DEPTH) -> Iterator[EvalCase]:
    """The CPCD multi-turn cases of each conversation (see module docstring)."""
    for conv in conversations:
        seeds: list[str] = []
        goal = list(dict.fromkeys(conv.goal))
        for i, turn in enumerate(conv.turns):
            if i > 0:
                seeds.extend(conv.turns[i - 1].liked[:N_SEEDS])
            # Earlier turns expose only their seeds, as both the system's tracks and the likes.
            history = [Turn(user=t.user, assistant=t.assistant, recommended=t.liked[:N_SEEDS],
                            liked=t.liked[:N_SEEDS]) for t in conv.turns[:i]]
            context = Conversation(id=conv.id, turns=[*history, Turn(user=turn.user)],
                                   profile=dict(conv.profile), source=conv.source)
            seen = frozenset(session_exclude(context))  # the seeds so far
            gold = [t for t in goal if t not in seen]
            if gold:
                yield EvalCase(conv.id, i, context, gold, seen, depth, list(dict.fromkeys(seeds)))


def next_track_cases(conversations: Sequence[Conversation], catalog_ids: Collection[str] = (),
                     pool: bool = False, depth: int = RANK_DEPTH) -> Iterator[EvalCase]:
    """One case per turn that recommended a track not recommended, liked or rejected earlier.

    With ``pool=True`` every conversation needs ``extra["pool"]`` (a list of track ids);
    everything in ``catalog_ids`` outside the pool is excluded and ``k`` is the pool size.
    """
    all_ids = frozenset(catalog_ids)
    for n, conv in enumerate(conversations):
        pool_ids: frozenset[str] | None = None
        if pool:
            raw = conv.extra.get("pool")
            if not isinstance(raw, list) or not raw:
                raise InputError(f"conversation {conv.id!r} has no candidate pool (extra['pool']); "
                                 "evaluate without --pool", row=n, field="extra.pool")
            pool_ids = frozenset(raw)
        for i, turn in enumerate(conv.turns):
            extra = {"pool": list(pool_ids)} if pool_ids is not None else {}
            context = Conversation(id=conv.id, turns=[*conv.turns[:i], Turn(user=turn.user)],
                                   profile=dict(conv.profile), source=conv.source, extra=extra)
            seen = frozenset(session_exclude(context))
            gold = [t for t in dict.fromkeys(turn.recommended) if t not in seen]
            if gold:
                exclude, k = seen, depth
                if pool_ids is not None:
                    exclude = exclude | (all_ids - pool_ids)
                    k = len(pool_ids - exclude)
                yield EvalCase(conv.id, i, context, gold, exclude, k, [])


def make_cases(protocol: str, conversations: Sequence[Conversation], catalog_ids: Collection[str] = (),
               pool: bool = False) -> list[EvalCase]:
    """``make_cases("cpcd", convs)``; ``InputError`` for an unknown protocol."""
    if protocol == "cpcd":
        if pool:
            raise InputError("--pool applies to the next-track protocol only", field="--pool")
        return list(cpcd_cases(conversations))
    if protocol == "next-track":
        return list(next_track_cases(conversations, catalog_ids, pool))
    raise InputError(f"unknown protocol {protocol!r} (known: {', '.join(PROTOCOLS)})", field="--protocol")


def clean_ranking(ranked: Sequence[str], exclude: Collection[str]) -> list[str]:
    """Drop excluded ids (CPCD removes seeds before scoring) and repeats, keeping order."""
    ex = set(exclude)
    return [t for t in dict.fromkeys(ranked) if t not in ex]


def score_case(case: EvalCase, ranked: Sequence[str], gold: Sequence[str] | None = None,
               ks: Sequence[int] = K_VALUES) -> dict[str, float]:
    """Metrics of one ranking for ``case`` (against ``gold`` if given, e.g. the cold part)."""
    return turn_metrics(clean_ranking(ranked, case.exclude), case.gold if gold is None else gold, ks)
