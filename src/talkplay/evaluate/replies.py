"""How truthful and how varied TalkPlay's replies are: ``reply_report(engine, cases, catalog)``.

For the last scored turn of each conversation (at most ``limit`` of them) the engine
answers as in a chat (``engine.respond(context, k)``), and the reply is checked:

- ``reply_faithfulness``: the share of replies in which every catalog title named is one of
  the tracks recommended so far (this answer's and the conversation's) and every artist
  named is an artist of those tracks (``talkplay.names`` says what counts as naming);
- ``distinct_2``: distinct word bigrams over all bigrams of all replies (1.0: no phrase
  repeats; a model that says the same thing to everyone scores near 0);
- ``request_mention``: among requests that name a catalog tag or artist, the share of
  replies that mention one of them.

Every answer is kept in the report (``replies``: request, cards, reply and what it named
that it should not have), so the figures can be read, not only trusted.
"""

from __future__ import annotations

from typing import Any

from talkplay.catalog import Catalog
from talkplay.engine.reply import ReplyGuard
from talkplay.evaluate.protocols import EvalCase
from talkplay.log import progress
from talkplay.names import CatalogNames, occurs

REPLY_K = 3  # tracks per answer, as in a chat


def distinct_2(replies: list[str]) -> float:
    """Distinct word bigrams / all word bigrams over ``replies`` (0.0 when there are none)."""
    grams = [tuple(ws[i: i + 2]) for r in replies for ws in [r.lower().split()] for i in range(len(ws) - 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def request_terms(request: str, names: CatalogNames, tags: set[str]) -> set[str]:
    """The catalog tags and artists ``request`` names, lower-cased."""
    low = request.lower()
    found = {t for t in tags if occurs(t, low)}
    found.update(m.name.lower() for m in names.find(request) if m.kind == "artist")
    return found


def last_turns(cases: list[EvalCase], limit: int) -> list[EvalCase]:
    """The last scored turn of each conversation, in order, at most ``limit``."""
    last: dict[str, EvalCase] = {}
    for c in cases:
        last[c.conversation_id] = c
    return list(last.values())[:limit]


def reply_report(engine: Any, cases: list[EvalCase], catalog: Catalog, limit: int = 60) -> dict[str, Any]:
    """Reply metrics of ``engine`` (an ``Engine``) on one turn per conversation; see the module doc."""
    names = getattr(engine, "names", None) or CatalogNames(catalog)  # the engine's own index if it has one
    tags = {t.strip().lower() for tr in catalog.tracks for t in tr.tags if len(t.strip()) >= 3}
    replies, faithful, named, mentioned, records = [], 0, 0, 0, []
    picked = last_turns(cases, limit)
    for case in progress(picked, total=len(picked), desc="replies"):
        resp = engine.respond(case.context, k=REPLY_K, exclude=case.exclude)
        ids = [r.track_id for r in resp.recommendations]
        bad = ReplyGuard(names, case.context, ids).violations(resp.reply, final=True)
        replies.append(resp.reply)
        faithful += not bad
        records.append({"conversation": case.conversation_id, "turn": case.turn_index,
                        "request": case.context.turns[-1].user, "cards": [catalog.get(t).text() for t in ids],
                        "reply": resp.reply, "unfaithful": [m.name for m in bad]})
        terms = request_terms(case.context.turns[-1].user, names, tags)
        if terms:
            named += 1
            low = resp.reply.lower()
            mentioned += any(occurs(t, low) for t in terms)
    n = len(replies)
    return {
        "n_replies": n,
        "reply_faithfulness": round(faithful / n, 4) if n else None,
        "distinct_2": round(distinct_2(replies), 4),
        "request_mention": round(mentioned / named, 4) if named else None,
        "requests_naming": named,
        "guarded": engine.guards_replies,
        "replies": records,  # every answer, to read; "unfaithful" lists what each named wrongly
    }
