"""How truthful, well-formed and varied TalkPlay's replies are: ``reply_report(engine, cases, catalog)``.

For the last scored turn of each conversation (at most ``limit`` of them) the engine
answers as in a chat (``engine.respond(context, k)``), and the reply is checked:

- ``reply_faithfulness``: the share of replies in which every catalog title named is one of
  the tracks recommended so far (this answer's and the conversation's) and every artist
  named is an artist of those tracks (``talkplay.names`` says what counts as naming);
  ``reply_faithfulness_unguarded``: the same for the replies written with the engine's
  guard off (a second pass, only when the engine guards replies; None otherwise), so the
  figure shows what the guard hides. Every other figure reads the guarded replies, which
  are what users see;
- ``distinct_2``: distinct word bigrams over all bigrams of all replies (1.0: no phrase
  repeats; a model that says the same thing to everyone scores near 0);
- ``repeated_trigram_rate``: the share of replies in which a word trigram occurs twice
  (``repeats_trigram``: a model stuck in a loop);
- ``cut_off_rate``: the share of replies that are empty or stop mid-sentence (``is_cut_off``);
- ``request_mention``: among requests that name a catalog tag or artist, the share of
  replies that mention one of them;
- ``artist_grounding``: among requests that name an artist of one of the answer's tracks
  (``requests_naming_card_artist`` of them), the share of replies that name that artist;
- ``fluency`` / ``fluency_human``: mean NLL per token (nats) of the replies / of the human
  replies of the same turns (where the conversation has them), given the request, under the
  untuned base model ``base_model`` (``talkplay.evaluate.fluency``; None without one).

Every answer is kept in the report (``replies``: request, cards, reply, the human's reply,
their NLLs, the flags above and what the reply named that it should not have), so the
figures can be read, not only trusted.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from talkplay.catalog import Catalog, Conversation
from talkplay.engine.reply import ReplyGuard, is_cut_off, plain_words
from talkplay.errors import TalkPlayError
from talkplay.evaluate.protocols import EvalCase
from talkplay.log import get_logger, progress
from talkplay.names import CatalogNames, occurs

log = get_logger(__name__)

REPLY_K = 3  # tracks per answer, as in a chat

def repeats_trigram(text: str) -> bool:
    """``repeats_trigram("songs by songs by songs")`` -> True: some word trigram occurs twice."""
    ws = plain_words(text)
    grams = Counter(zip(ws, ws[1:], ws[2:], strict=False))
    return any(n > 1 for n in grams.values())


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


def card_artists(request: str, names: CatalogNames, catalog: Catalog, ids: Sequence[str]) -> set[str]:
    """The artists ``request`` names that are artists of the tracks ``ids``, lower-cased."""
    theirs = {a.lower() for t in ids for a in catalog.get(t).artists}
    return {m.name.lower() for m in names.find(request) if m.kind == "artist"} & theirs


def card_line(catalog: Catalog, track_id: str) -> str:
    """``'"Love Me Do" by The Beatles'``: a recommended track as the side-by-side file shows it."""
    t = catalog.get(track_id)
    return f'"{t.title}"' + (f" by {', '.join(t.artists)}" if t.artists else "")


def last_turns(cases: list[EvalCase], limit: int) -> list[EvalCase]:
    """The last scored turn of each conversation, in order, at most ``limit``."""
    last: dict[str, EvalCase] = {}
    for c in cases:
        last[c.conversation_id] = c
    return list(last.values())[:limit]


def _unguarded(engine: Any, case: EvalCase) -> Any:
    """The engine's answer to ``case`` with its reply guard off (restored afterwards)."""
    was, engine.cfg.guard_replies = engine.cfg.guard_replies, False
    try:
        return engine.respond(case.context, k=REPLY_K, exclude=case.exclude)
    finally:
        engine.cfg.guard_replies = was


def _mean(xs: list[float | None]) -> float | None:
    xs = [x for x in xs if x is not None]
    return round(sum(xs) / len(xs), 4) if xs else None


def _fluency(base_model: str | None, device: Any, records: list[dict[str, Any]]) -> str | None:
    """Fill each record's ``nll`` and ``nll_human``; returns the base model used (None: none)."""
    for r in records:
        r["nll"] = r["nll_human"] = None
    if not base_model or not records:
        return None
    from talkplay.evaluate.fluency import Fluency

    try:
        scorer = Fluency.load(base_model, device=device or "cpu")
    except (TalkPlayError, OSError) as e:  # a metric, not the evaluation: say so and go on
        log.warning("no fluency scores: cannot load base model %r (%s)", base_model, e)
        return None
    nll = scorer.nll([(r["request"], r["reply"]) for r in records])
    human = scorer.nll([(r["request"], r["human_reply"]) for r in records])
    for r, a, b in zip(records, nll, human, strict=True):
        r["nll"], r["nll_human"] = a, b
    return base_model


def _human_scale(human: list[str], named: int, asked: int) -> dict[str, Any] | None:
    said = [h for h in human if h.strip()]
    if not said:
        return None
    return {"n_replies": len(said), "distinct_2": round(distinct_2(said), 4),
            "repeated_trigram_rate": round(sum(map(repeats_trigram, said)) / len(said), 4),
            "cut_off_rate": round(sum(map(is_cut_off, said)) / len(said), 4),
            "artist_grounding": round(named / asked, 4) if asked else None,
            "requests_naming_card_artist": asked}


def reply_report(engine: Any, cases: list[EvalCase], catalog: Catalog, limit: int = 60, *,
                 conversations: Sequence[Conversation] = (), base_model: str | None = None
                 ) -> dict[str, Any]:
    """Reply metrics of ``engine`` (an ``Engine``) on one turn per conversation; see the module doc.

    ``conversations``: the originals of ``cases``, for the human replies of the same turns;
    ``base_model``: the untuned LM that scores fluency (``load_base`` name; None: no fluency).
    """
    names = getattr(engine, "names", None) or CatalogNames(catalog)  # the engine's own index if it has one
    tags = {t.strip().lower() for tr in catalog.tracks for t in tr.tags if len(t.strip()) >= 3}
    by_id = {c.id: c for c in conversations}
    guarded = engine.guards_replies
    replies, records = [], []
    faithful = faithful_raw = named = mentioned = artist_asked = artist_named = human_named = 0
    picked = last_turns(cases, limit)
    for case in progress(picked, total=len(picked), desc="replies"):
        request = case.context.turns[-1].user
        resp = engine.respond(case.context, k=REPLY_K, exclude=case.exclude)
        ids = [r.track_id for r in resp.recommendations]
        bad = ReplyGuard(names, case.context, ids).violations(resp.reply, final=True)
        raw = _unguarded(engine, case) if guarded else None
        if raw is not None:
            raw_ids = [r.track_id for r in raw.recommendations]
            faithful_raw += not ReplyGuard(names, case.context, raw_ids).violations(raw.reply, final=True)
        original = by_id.get(case.conversation_id)
        human = original.turns[case.turn_index].assistant if original else ""
        replies.append(resp.reply)
        faithful += not bad
        records.append({"conversation": case.conversation_id, "turn": case.turn_index,
                        "request": request, "cards": [card_line(catalog, t) for t in ids],
                        "reply": resp.reply, "human_reply": human,
                        "unguarded_reply": raw.reply if raw is not None else None,
                        "unfaithful": [m.name for m in bad], "cut_off": is_cut_off(resp.reply),
                        "repeats_trigram": repeats_trigram(resp.reply)})
        low = resp.reply.lower()
        terms = request_terms(request, names, tags)
        if terms:
            named += 1
            mentioned += any(occurs(t, low) for t in terms)
        asked = card_artists(request, names, catalog, ids)
        if asked:
            artist_asked += 1
            artist_named += any(occurs(a, low) for a in asked)
            human_named += any(occurs(a, human.lower()) for a in asked)  # the curators, for scale
    used = _fluency(base_model, getattr(engine, "device", None), records)
    n = len(replies)

    def share(k: int, of: int) -> float | None:
        return round(k / of, 4) if of else None

    return {
        "n_replies": n,
        "reply_faithfulness": share(faithful, n),
        "reply_faithfulness_unguarded": share(faithful_raw, n) if guarded else None,
        "distinct_2": round(distinct_2(replies), 4),
        "repeated_trigram_rate": share(sum(r["repeats_trigram"] for r in records), n),
        "cut_off_rate": share(sum(r["cut_off"] for r in records), n),
        "request_mention": share(mentioned, named),
        "requests_naming": named,
        "artist_grounding": share(artist_named, artist_asked),
        "requests_naming_card_artist": artist_asked,
        "fluency": _mean([r["nll"] for r in records]),
        # the human curators' replies to the same turns, for scale (when the file has them)
        "human": _human_scale([r["human_reply"] for r in records], human_named, artist_asked),
        "fluency_human": _mean([r["nll_human"] for r in records]),
        "n_human_replies": sum(bool(r["human_reply"].strip()) for r in records),
        "fluency_model": used,
        "guarded": guarded,
        "replies": records,  # every answer, to read; "unfaithful" lists what each named wrongly
    }
