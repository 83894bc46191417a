"""The words modality: a track's own words and the request's, as vectors the head can match."""

from __future__ import annotations

import json
import math

import numpy as np

from synth_run import build_synth_run
from talkplay.catalog import Conversation, Turn
from talkplay.engine import Engine
from talkplay.tracks import TrackFeatures
from talkplay.tracks.words import DIM, WORDS, WordVectors, direction, tokenize, word_weights
from talkplay.train import TrainConfig, train_run

DOCS = ["Vossi Bop Stormzy", "Clash Dave Stormzy", "Bohemian Rhapsody Queen", "Don't Stop Me Now Queen",
        "Clair de Lune Claude Debussy", "Hey Jude The Beatles", "Black Dog Led Zeppelin rock"]


def tfidf_cosine(wv: WordVectors, a: str, b: str) -> float:
    """The exact idf-weighted word-overlap cosine the random directions approximate."""
    def vec(text: str) -> dict[str, float]:
        counts: dict[str, int] = {}
        for w in tokenize([text])[0]:
            if w in wv.idf:
                counts[w] = counts.get(w, 0) + 1
        return {w: math.log1p(c) * wv.idf[w] for w, c in counts.items()}

    va, vb = vec(a), vec(b)
    dot = sum(va[w] * vb.get(w, 0.0) for w in va)
    na, nb = math.sqrt(sum(x * x for x in va.values())), math.sqrt(sum(x * x for x in vb.values()))
    return dot / (na * nb) if na and nb else 0.0


def test_named_words_find_their_tracks_and_inner_products_approximate_tfidf():
    wv = WordVectors.fit(DOCS)
    rows = wv.encode(DOCS)
    assert rows.shape == (len(DOCS), DIM) and np.allclose(np.linalg.norm(rows, axis=1), 1, atol=1e-5)
    asks = [("some stormzy and dave please", 1), ("play Clair de Lune", 4), ("queen, don't stop", 3)]
    for query, best in asks:
        assert int(np.argmax(rows @ wv.encode([query])[0])) == best, query
    # common words weigh less: "queen" is in two documents, "rhapsody" in one
    assert wv.idf["rhapsody"] > wv.idf["queen"]
    queries = ["stormzy", "queen rhapsody", "led zeppelin", "the beatles jude", "claude"]
    approx = (wv.encode(queries) @ rows.T).ravel()
    exact = np.array([tfidf_cosine(wv, q, d) for q in queries for d in DOCS])
    assert np.corrcoef(approx, exact)[0, 1] > 0.95 and np.abs(approx - exact).max() < 0.25


def test_unknown_words_are_zero_and_directions_need_nothing_stored():
    wv = WordVectors.fit(DOCS)
    assert not wv.encode(["zzzz qqqq", ""]).any()  # no catalog word: nothing to match on
    assert np.array_equal(direction("stormzy"), direction("stormzy"))
    assert abs(float(direction("stormzy") @ direction("dave"))) < 0.25
    # a word first seen after fitting (a track added later) gets its direction from the word alone
    later = WordVectors.fit([*DOCS, "Paranoid Android Radiohead"])
    assert np.allclose(later.encode(["stormzy"]), wv.encode(["stormzy"]))
    assert float(later.encode(["radiohead"])[0] @ later.encode(["Paranoid Android Radiohead"])[0]) > 0.5


def test_models_train_with_words_by_default_and_without_on_request(tmp_path):
    tiny = dict(base_model="tiny", track_repr="content", lora=False, init="mean_cov", batch_size=16,
                lr=3e-3, max_length=256, save_every=1000, max_steps=2)
    request = Conversation(id="c", turns=[Turn(user="something to play")])
    for words in (True, False):
        run = build_synth_run(tmp_path / f"run-{words}", n_train=48)
        train_run(run, TrainConfig(**tiny, words=words))
        dims = json.loads((run.model_dir / "tracks.json").read_text())["dims"]
        assert (WORDS in dims) is words
        feats = TrackFeatures.from_run(run, dims=dims)
        assert (feats.words is not None) is words
        assert feats.requests(np.zeros((1, 8), np.float32), ["x"]).shape == (1, 8 + DIM * words)
        engine = Engine.load(run.path)
        assert len(engine.recommend(request, k=5)) == 5


def test_word_weights_quiet_the_words_answers_never_hold_and_keep_named_ones():
    docs = [*DOCS, "Thank You Dido", "Thank U Next Ariana Grande"]
    wv = WordVectors.fit(docs)
    turns = [("thank you, more stormzy", ["Vossi Bop Stormzy"]),
             ("thank you! some queen", ["Hey Jude The Beatles"]),
             ("stormzy again", ["Clash Dave Stormzy"]), ("", ["Hey Jude The Beatles"])]
    weights = word_weights(turns)
    # no answer but its own holds "stormzy"; none holds "thank" or "queen": their lift is the
    # smoothed share of their messages answered with them, (0 + 1) / (turns + 1), and their
    # weight its square (a word a little above chance counts for little)
    lifts = word_weights(turns, power=1.0)
    assert lifts["thank"] == round(1 / 3, 4) and lifts["stormzy"] == 1.0 and lifts["queen"] == 0.5
    assert weights["thank"] == round(1 / 9, 4) and weights["stormzy"] == 1.0 and weights["queen"] == 0.25
    assert "dave" not in weights  # no message used it: full weight in encode
    # a word most answers hold whatever the message says is worth little, even when it matches
    love = word_weights([("i love it", ["Love Story"]), ("more love songs", ["Crazy in Love"]),
                         ("some jazz", ["Love for Sale"]), ("calm piano", ["Clair de Lune"])])
    assert love["love"] == round((3 / 3 - 3 / 4) / (1 - 3 / 4), 4) == 1.0
    love = word_weights([("i love it", ["Love Story"]), ("more love songs", ["Sad Song"]),
                         ("some jazz", ["Love for Sale"]), ("calm piano", ["Love Me Do"])])
    assert love["love"] == 0.0  # in half its answers, three quarters of all: below chance
    # weights that hold none of the text's words: the unit vector as before
    for text in ("thank you", "dave please", "thank you, more stormzy"):
        assert np.allclose(wv.encode([text], {"zzzz": 0.1}), wv.encode([text]))
    # chit-chat alone comes out short, not rescaled to unit length ("thank" and "you" weigh 1/9)
    assert abs(float(np.linalg.norm(wv.encode(["thank you!"], weights)[0])) - weights["thank"]) < 1e-5
    # beside a named artist it leaves the artist at full strength
    assert abs(float(np.linalg.norm(wv.encode(["thank you, more stormzy"], weights)[0])) - 1) < 1e-5
    # beside a named artist the echoed word goes quiet: unweighed, "thank" is the rarer word and
    # a title holding it comes first; weighed, Stormzy's two tracks lead
    rows = wv.encode(docs)
    ask = "thank you, more stormzy"
    plain, weighed = rows @ wv.encode([ask])[0], rows @ wv.encode([ask], weights)[0]
    thanks = [docs.index("Thank You Dido"), docs.index("Thank U Next Ariana Grande")]
    assert int(np.argmax(plain)) in thanks
    assert set(np.argsort(-weighed)[:2]) == {0, 1}


def test_training_learns_word_weights_the_engine_reads_and_the_untrained_start_does_not(tmp_path):
    from talkplay.baselines.untrained import UntrainedRecommender

    tiny = dict(base_model="tiny", track_repr="content", lora=False, init="mean_cov", batch_size=16,
                lr=3e-3, max_length=256, save_every=1000, max_steps=2)
    run = build_synth_run(tmp_path / "run", n_train=48)
    train_run(run, TrainConfig(**tiny))  # on by default
    saved = json.loads((run.model_dir / "tracks.json").read_text())["word_weights"]
    assert saved and all(0 <= w <= 1 for w in saved.values()) and min(saved.values()) < 1
    engine = Engine.load(run.path)
    assert engine.content.features.word_weights == saved
    untrained = UntrainedRecommender()
    untrained.fit(run)
    assert untrained.features.word_weights is None  # the start training begins from weighs none
    train_run(run, TrainConfig(**tiny, word_weights=False))  # off: nothing saved, nothing weighed
    assert json.loads((run.model_dir / "tracks.json").read_text())["word_weights"] == {}
    assert Engine.load(run.path).content.features.word_weights is None
