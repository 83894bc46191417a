"""The words modality: a track's own words and the request's, as vectors the head can match."""

from __future__ import annotations

import json
import math

import numpy as np

from synth_run import build_synth_run
from talkplay.catalog import Conversation, Turn
from talkplay.engine import Engine
from talkplay.tracks import TrackFeatures
from talkplay.tracks.words import DIM, WORDS, WordVectors, direction, tokenize
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
