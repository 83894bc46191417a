"""Replies that name only their own cards: the card text, the naming rule, the guard, eval.

The "liar" model is trained on answers that always say "Song 0" whatever they recommend, so
left to itself it names a track it did not bring; the tests show the rule catches that and
the engine's guard stops it, through the engine, chat, `talkplay recommend` and `talkplay eval`.
"""

from __future__ import annotations

import io
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from synth_run import KEYWORDS, build_synth_run
from talkplay.cards import Cards, card_text
from talkplay.catalog import Catalog, Conversation, Track, Turn
from talkplay.cli import app
from talkplay.dialogs import RenderConfig, load_dialogs, render
from talkplay.engine import Engine, EngineConfig
from talkplay.engine.reply import ReplyGuard, finish_sentence, repeats_ngram
from talkplay.evaluate.protocols import make_cases
from talkplay.evaluate.replies import distinct_2, is_cut_off, repeats_trigram, reply_report
from talkplay.model import add_music_tokens, load_tokenizer
from talkplay.names import CatalogNames
from talkplay.tracks.features import TrackSlots
from talkplay.train import TrainConfig, train_run

# net_lr 0.1: the rate these tiny runs were sized at (at lr 3e-3 the CPCD default's 0.3 moves the
# tiny track network so far in 150 steps that the chat test's jazz turn no longer ranks Song 0)
TINY = dict(base_model="tiny", track_repr="content", lora=False, init="mean_cov", batch_size=16,
            lr=3e-3, max_length=256, save_every=1000, max_steps=150, cards=True, net_lr=0.1)


def liar(kw: str, i: int) -> str:
    return f'Try "Song 0" now, pure {kw}.'


@pytest.fixture(scope="module")
def liar_run(tmp_path_factory):
    run = build_synth_run(tmp_path_factory.mktemp("liar") / "run", reply=liar)
    train_run(run, TrainConfig(**TINY))
    return run


def names_of(run) -> CatalogNames:
    return CatalogNames(run.load_catalog(validate=False))


# -- the naming rule ------------------------------------------------------------------------
CATALOG = Catalog([Track(id="a", title="Love Me Do", artists=["The Beatles"], album="Please Please Me"),
                   Track(id="b", title="Love", artists=["John Lennon"]),
                   Track(id="c", title="Stay", artists=["Rihanna"]),
                   Track(id="d", title="Yesterday - Remastered 2009", artists=["The Beatles"]),
                   Track(id="e", title="Hey Jude", artists=["The Beatles"])], [])


def test_names_are_found_whole_longest_first_and_not_as_sentence_openers():
    names = CatalogNames(CATALOG)
    found = [(m.kind, m.name) for m in names.find('Love Me Do is great. Stay calm; I also like "Stay" '
                                                  "and Yesterday by The Beatles, and Rihanna.")]
    assert found == [("title", "Love Me Do"), ("title", "Stay"), ("title", "Yesterday"),
                     ("artist", "The Beatles"), ("artist", "Rihanna")]
    assert names.find("lovely love and stay") == []  # case-sensitive, whole words only
    # streaming holds back what may still become a name or a quotation
    assert names.pending("I like Love Me") == len("I like ")
    assert names.pending('Try "Some long title that is not') == len("Try ")
    assert names.pending('Try "Song 0"') == len("Try ")
    assert names.pending('So "Love Me') == len("So ")  # a name begun inside an open quotation
    assert names.pending("Nothing here at all") == len("Nothing here at ")


def test_unfaithful_allows_own_tracks_their_artists_and_the_users_words():
    names = CatalogNames(CATALOG)
    assert names.unfaithful("Here is Love Me Do by The Beatles.", ["a"]) == []
    assert [(m.kind, m.name) for m in names.unfaithful('Here is "Stay" by Rihanna.', ["a"])] == [
        ("quoted", "Stay"), ("title", "Stay"), ("artist", "Rihanna")]
    # Hey Jude's artist is the allowed track's artist; Hey Jude itself is not allowed
    assert [m.name for m in names.unfaithful("The Beatles again, like Hey Jude.", ["a"])] == ["Hey Jude"]
    # a quoted title is a claim even when the catalog has no such track; quoting a card is not
    bad = names.unfaithful('Try "Moonlight Serenade" tonight.', ["a"])
    assert [(m.kind, m.name) for m in bad] == [("quoted", "Moonlight Serenade")]
    assert names.unfaithful('Try "Love Me Do", from "Please Please Me".', ["a"]) == []
    assert [m.name for m in names.unfaithful('How about "Für Elise', ["a"])] == ["Für Elise"]  # left open
    # echoing what the user asked for is not a claim about the cards
    assert names.unfaithful("You asked for Rihanna; try this.", ["a"], context="something like rihanna") == []


def test_card_text_and_render_put_cards_after_tracks_never_as_targets(tmp_path):
    tr = CATALOG.get("a")
    assert card_text(tr) == '"Love Me Do" by The Beatles | album: Please Please Me'
    run = build_synth_run(tmp_path / "run")
    catalog = run.load_catalog(validate=False)
    music = TrackSlots(catalog.ids())
    tok = load_tokenizer("tiny")
    add_music_tokens(tok, music)
    conv = Conversation(id="c", turns=[Turn(user="play some jazz music", assistant="Here is Song 0.",
                                            recommended=["t0"])])
    plain = render(conv, tok, music, RenderConfig())
    carded = render(conv, tok, music, RenderConfig(cards=Cards(catalog)))
    card = Cards(catalog)("t0")
    text = tok.decode(carded.input_ids)
    assert card.strip() in text and text.index(card.strip()) < text.index("Here is Song 0.")
    trained = tok.decode([i for i, m in zip(carded.input_ids, carded.loss_mask, strict=True) if m])
    assert "Here is Song 0." in trained and "Synth" not in trained  # the engine writes cards: no loss
    assert "Synth" not in tok.decode(plain.input_ids)


# -- the guard --------------------------------------------------------------------------------
def test_the_liar_names_a_track_it_did_not_bring_unless_guarded(liar_run):
    names = names_of(liar_run)
    conv = Conversation(id="c", turns=[Turn(user="i want tango")])
    raw = Engine.load(liar_run.path, EngineConfig(guard_replies=False)).respond(conv, k=2)
    assert "t0" not in [r.track_id for r in raw.recommendations]
    assert "Song 0" in raw.reply  # what it learnt: the metric has something to catch
    assert ReplyGuard(names, conv, [r.track_id for r in raw.recommendations]).violations(raw.reply, True)
    guarded = Engine.load(liar_run.path).respond(conv, k=2)
    assert [r.track_id for r in guarded.recommendations] == [r.track_id for r in raw.recommendations]
    assert guarded.reply and "Song 0" not in guarded.reply
    assert not ReplyGuard(names, conv, [r.track_id for r in guarded.recommendations]).violations(
        guarded.reply, True)


def test_chat_replies_name_only_the_cards_shown_so_far(liar_run):
    from rich.console import Console

    from talkplay.engine.chat import chat_loop

    engine = Engine.load(liar_run.path)
    names = names_of(liar_run)
    lines = ["play some tango music", "/like 1", "/reject 2", "now some disco", "switch to jazz",
             "more opera now", "/quit"]
    session = chat_loop(engine, lines, Console(file=io.StringIO(), width=120), k=2)
    turns = session.conversation.turns
    assert len(turns) == 4 and turns[0].liked and turns[0].disliked
    for i, turn in enumerate(turns):
        so_far = Conversation(id="c", turns=turns[: i + 1])
        assert turn.assistant, f"turn {i} has no reply"
        bad = ReplyGuard(names, so_far, turn.recommended).violations(turn.assistant, True)
        assert not bad, turn.assistant
    # jazz is Song 0's request: naming it there is the truth, and the guard lets it through
    assert "t0" in turns[2].recommended


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(words=st.lists(st.sampled_from([*KEYWORDS, "Song", "0", "play", "some", "please", "Artist", "1",
                                       "like", "?", "!", "not"]), min_size=1, max_size=8))
def test_recommend_json_names_only_its_own_cards_for_any_request(liar_run, words):
    query = " ".join(words)
    res = CliRunner().invoke(app, ["recommend", str(liar_run.path), query, "--k", "3", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    ids = [t["id"] for t in out["tracks"]]
    conv = Conversation(id="q", turns=[Turn(user=query)])
    assert not ReplyGuard(names_of(liar_run), conv, ids).violations(out["reply"], True), out["reply"]


def test_eval_reports_reply_faithfulness_and_variety(liar_run):
    res = CliRunner().invoke(app, ["eval", str(liar_run.path), "--systems", "talkplay", "--protocol",
                                   "next-track", "--n-boot", "0", "--no-plots", "--replies", "8", "--json"])
    assert res.exit_code == 0, res.output
    tp = json.loads(res.stdout)["systems"]["talkplay"]
    assert tp["n_replies"] == 8 and tp["reply_faithfulness"] == 1.0 and tp["guarded"]
    assert 0 < tp["distinct_2"] <= 1 and tp["request_mention"] is not None
    # the same replies written without the guard, in the same report: the lie shows there
    assert tp["reply_faithfulness_unguarded"] < 0.5
    assert any("Song 0" in r["unguarded_reply"] and "Song 0" not in r["reply"] for r in tp["replies"])
    # the same model without its guard: the metric sees the lie
    convs = load_dialogs(liar_run, "test")
    cases = make_cases("next-track", convs, liar_run.load_catalog(validate=False).ids(), False)
    raw = Engine.load(liar_run.path, EngineConfig(guard_replies=False))
    rep = reply_report(raw, cases, liar_run.load_catalog(validate=False), limit=8)
    assert rep["reply_faithfulness"] < 0.5 and any("Song 0" in r["unfaithful"] for r in rep["replies"])


def test_distinct_2_counts_repeated_phrases():
    assert distinct_2(["a b c", "a b c"]) == 0.5
    assert distinct_2(["a b", "c d"]) == 1.0 and distinct_2([]) == 0.0


# -- steering, not breaking -----------------------------------------------------------------
def test_a_reply_reaching_for_a_name_it_did_not_bring_is_steered_to_its_own(liar_run):
    """The liar always writes "Song 0"; guarded, the same sentence names the answer's own track."""
    engine = Engine.load(liar_run.path)
    catalog = liar_run.load_catalog(validate=False)
    for request in ("i want tango", "something disco please", "any opera tracks?"):
        conv = Conversation(id="c", turns=[Turn(user=request)])
        resp = engine.respond(conv, k=2)
        tracks = [catalog.get(r.track_id) for r in resp.recommendations]
        own = {n for tr in tracks for n in (tr.title, *tr.artists)}
        assert "Song 0" not in resp.reply and any(n in resp.reply for n in own), resp.reply
        assert resp.reply.startswith("Try ") and not is_cut_off(resp.reply), resp.reply


def looper(kw: str, i: int) -> str:
    return f"I added a few more songs by Artist {(i + 2) % 5}."  # never the artist of track i


@pytest.fixture(scope="module")
def looper_run(tmp_path_factory):
    run = build_synth_run(tmp_path_factory.mktemp("looper") / "run", reply=looper)
    train_run(run, TrainConfig(**TINY))
    return run


def test_a_guarded_reply_never_loops_and_ends_as_a_sentence(looper_run):
    """Banning the wrong artist and writing on gave "songs by songs by songs by" before."""
    engine = Engine.load(looper_run.path)
    raw = Engine.load(looper_run.path, EngineConfig(guard_replies=False))
    catalog = looper_run.load_catalog(validate=False)
    for kw in ("tango", "jazz", "metal"):
        conv = Conversation(id="c", turns=[Turn(user=f"play some {kw} music")])
        assert "songs by Artist" in raw.respond(conv, k=1).reply  # what it learnt to reach for
        resp = engine.respond(conv, k=1)
        artist = catalog.get(resp.recommendations[0].track_id).artists[0]
        assert f"songs by {artist}" in resp.reply, resp.reply
        assert not repeats_trigram(resp.reply) and not is_cut_off(resp.reply), resp.reply


def test_unfinished_replies_are_closed_as_sentences_and_streaming_never_takes_text_back():
    assert finish_sentence("Here are some songs by") == "Here are some songs."
    # the writer's rule is the metric's: a sentence end after "by" is still a cut phrase
    assert finish_sentence("Here are some songs by.") == "Here are some songs."
    assert all(not is_cut_off(finish_sentence(t)) for t in ("a b c by", "x, y:", 'so "Yel', "Enjoy! 🎶"))
    assert finish_sentence('How about "Yellow"') == 'How about "Yellow".'
    assert finish_sentence("Songs you might like") == "Songs you might like."
    assert finish_sentence("Enjoy!") == "Enjoy!" and finish_sentence("by the") == ""
    assert repeats_ngram([1, 2, 3, 4, 1, 2], 3) and not repeats_ngram([1, 2, 3, 4, 1, 2], 4)


def test_cards_of_the_latest_answer_only_leave_earlier_answers_as_rows(tmp_path):
    run = build_synth_run(tmp_path / "run")
    catalog = run.load_catalog(validate=False)
    music = TrackSlots(catalog.ids())
    tok = load_tokenizer("tiny")
    add_music_tokens(tok, music)
    conv = Conversation(id="c", turns=[
        Turn(user="play some jazz music", assistant="Here is Song 0.", recommended=["t0"]),
        Turn(user="now some tango", assistant="Here is Song 3.", recommended=["t3"])])
    cards = Cards(catalog)
    every = tok.decode(render(conv, tok, music, RenderConfig(cards=cards)).input_ids)
    latest = render(conv, tok, music, RenderConfig(cards=cards, cards_history=False))
    text = tok.decode(latest.input_ids)
    assert cards("t0").strip() in every and cards("t0").strip() not in text
    assert cards("t3").strip() in text and text.index(cards("t3").strip()) < text.index("Here is Song 3.")
    assert latest.input_ids.count(tok.convert_tokens_to_ids("<|track|>")) == 2  # both tracks, as rows
    # both replies are still trained on
    trained = tok.decode([i for i, m in zip(latest.input_ids, latest.loss_mask, strict=True) if m])
    assert "Here is Song 0." in trained and "Here is Song 3." in trained


# -- many at once -----------------------------------------------------------------------------
def many(engine, convs, k, excludes, more_at=None, extra=()):
    """Answers of ``stream_batch`` by request, with ``extra`` requests joining after
    ``more_at`` decode steps (continuous batching)."""
    from talkplay.engine.batch import BatchRequest, Finished, stream_batch

    reqs = [BatchRequest(c, k, ex) for c, ex in zip(convs, excludes, strict=True)]
    late = [BatchRequest(c, k, ex) for c, ex in extra]
    steps = 0

    def more():
        nonlocal steps
        steps += 1
        return late if steps == more_at else []

    got = {id(r): ([], [], None) for r in reqs + late}
    for req, item in stream_batch(engine, reqs, more if late else None):
        recs, text, _ = got[id(req)]
        if isinstance(item, list):
            recs.extend(item)
        elif isinstance(item, str):
            text.append(item)
        else:
            assert isinstance(item, Finished) and item.prompt_tokens > 0
            got[id(req)] = (recs, text, item)
    return [(got[id(r)][0], "".join(got[id(r)][1]), got[id(r)][2]) for r in reqs + late]


def test_a_batch_answers_as_one_at_a_time_with_guard_and_exclusion_per_row(liar_run, looper_run):
    """Same tracks, scores and replies as unbatched (temperature 0); in one batch a row whose
    answer has Song 0 may say so while the rows beside it are steered off it, and each
    row's exclusions stay its own."""
    names = names_of(liar_run)
    engine = Engine.load(liar_run.path, EngineConfig(reply_tokens=24))
    history = [Turn(user="play some jazz music", assistant="Here.", recommended=["t0"], liked=["t0"])]
    convs = [Conversation(id="a", turns=[Turn(user="i want tango")]),
             Conversation(id="b", turns=[Turn(user="play some jazz music")]),  # t0: Song 0 is the truth
             Conversation(id="c", turns=[*history, Turn(user="now some jazz")]),  # t0 heard already
             Conversation(id="d", turns=[Turn(user="i want tango")]),
             Conversation(id="e", turns=[Turn(user="something opera please")])]
    single = [engine.respond(c, k=2) for c in convs[:3]]
    excludes = [(), (), (), [single[0].recommendations[0].track_id], ["t0"]]
    single += [engine.respond(c, k=2, exclude=ex) for c, ex in zip(convs[3:], excludes[3:], strict=True)]
    batched = many(engine, convs, 2, excludes)
    for one, (recs, reply, done), conv, ex in zip(single, batched, convs, excludes, strict=True):
        ids = [r.track_id for r in recs]
        assert ids == [r.track_id for r in one.recommendations]
        assert [r.score for r in recs] == pytest.approx([r.score for r in one.recommendations], abs=1e-4)
        assert reply == one.reply and done.completion_tokens > 0
        assert not set(ids) & (set(ex) | {x for t in conv.turns[:-1] for x in t.recommended})
        assert not ReplyGuard(names, conv, ids).violations(reply, True), reply
    assert "t0" in [r.track_id for r in batched[1][0]] and "Song 0" in batched[1][1]
    assert "Song 0" not in batched[0][1] + batched[2][1] + batched[3][1]
    assert batched[3][0][0].track_id != batched[0][0][0].track_id  # d excludes what a, beside it, got
    # a guard that bans (not steers) a name rolls back rows by different amounts: still the same
    looper = Engine.load(looper_run.path, EngineConfig(reply_tokens=24))
    convs = [Conversation(id=kw, turns=[Turn(user=f"play some {kw} music")]) for kw in ("tango", "jazz")]
    alone = [looper.respond(c, k=1).reply for c in convs]
    assert [r for _, r, _ in many(looper, convs, 1, [(), ()])] == alone


def test_requests_joining_a_running_batch_are_answered_as_alone(liar_run):
    engine = Engine.load(liar_run.path, EngineConfig(reply_tokens=24))
    first = [Conversation(id="a", turns=[Turn(user="i want tango")])]
    late = [Conversation(id="b", turns=[Turn(user="play some jazz music")]),
            Conversation(id="c", turns=[Turn(user="any disco tracks?"), Turn(user="more opera now")])]
    got = many(engine, first, 2, [()], more_at=3, extra=[(c, ()) for c in late])
    for conv, (recs, reply, _) in zip(first + late, got, strict=True):
        alone = engine.respond(conv, k=2)
        assert [r.track_id for r in recs] == [r.track_id for r in alone.recommendations]
        assert reply == alone.reply
