"""The shared Recommender contract, run over every baseline, plus each baseline's own behaviour.

``make_synthetic_run(tmp_path)`` builds a small run whose right answers are known: genre
words in titles and tags, playlists that group each genre, and conversations that like
tracks of one genre. Other eval tests import it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from talkplay.baselines import BASELINES, make_baseline
from talkplay.catalog import Catalog, Conversation, Playlist, Track, Turn
from talkplay.errors import InputError
from talkplay.recommender import Recommender
from talkplay.run import Run

GENRES = ["jazz", "metal", "reggae", "techno", "folk", "blues"]
MOODS = ["sunny", "rainy", "midnight", "electric", "quiet"]


def make_catalog(n_per_genre: int = 10, n_conversations: int = 24) -> Catalog:
    tracks = []
    for g in GENRES:
        for i in range(n_per_genre):
            mood = MOODS[i % len(MOODS)]
            tracks.append(Track(id=f"{g}-{i}", title=f"{mood.title()} {g.title()} Song {i}",
                                artists=[f"The {g.title()} Band {i % 3}"], album=f"{g.title()} Album",
                                tags=[g, mood]))
    playlists = [Playlist(id=f"pl-{g}-{j}", name=f"{g} mix {j}",
                          track_ids=[f"{g}-{i}" for i in range(j, n_per_genre, 2)])
                 for g in GENRES for j in range(2)]
    convs = []
    for c in range(n_conversations):
        g = GENRES[c % len(GENRES)]
        goal = [f"{g}-{(c + j) % n_per_genre}" for j in range(6)]
        turns = [Turn(user=f"I want some {g} for a party", assistant="Here you go.",
                      recommended=goal[:3], liked=goal[:2]),
                 Turn(user=f"More {g} please, something {MOODS[c % len(MOODS)]}", assistant="Sure.",
                      recommended=goal[2:5], liked=goal[2:4]),
                 Turn(user=f"One more {g} track", assistant="Enjoy.", recommended=goal[4:6], liked=goal[4:6])]
        convs.append(Conversation(id=f"conv-{c:02d}", turns=turns, goal=goal, source="synthetic"))
    return Catalog(tracks, playlists, convs)


def make_synthetic_run(path: Path, **kw) -> Run:
    make_catalog(**kw).save(path)
    return Run(path)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Run:
    return make_synthetic_run(tmp_path_factory.mktemp("synthetic-run"))


@pytest.fixture(scope="module")
def fitted(run):
    """Every baseline, fitted once (the dense one loads the real MiniLM)."""
    out = {}
    for name in BASELINES:
        rec = make_baseline(name, seed=3)
        rec.fit(run)
        out[name] = rec
    return out


def conv(*users: str, liked: tuple[list[str], ...] = ()) -> Conversation:
    turns = [Turn(user=u) for u in users]
    for t, ids in zip(turns, liked, strict=False):
        t.liked = list(ids)
        t.recommended = list(ids)
    return Conversation(id="probe", turns=turns)


# --- the contract every implementation keeps -------------------------------------------


@pytest.mark.parametrize("name", BASELINES)
def test_contract_k_distinct_catalog_ids(fitted, run, name):
    rec = fitted[name]
    assert isinstance(rec, Recommender)
    catalog = run.load_catalog()
    out = rec.recommend(conv("some jazz for tonight"), k=25)
    ids = [t for t, _ in out]
    assert len(ids) == 25 and len(set(ids)) == 25
    assert all(t in catalog for t in ids)
    scores = [s for _, s in out]
    assert scores == sorted(scores, reverse=True)


@pytest.mark.parametrize("name", BASELINES)
def test_contract_exclude_respected(fitted, name):
    rec = fitted[name]
    first = [t for t, _ in rec.recommend(conv("metal"), k=10)]
    exclude = set(first[:5]) | {"not-in-catalog"}
    again = [t for t, _ in rec.recommend(conv("metal"), k=10, exclude=exclude)]
    assert len(again) == 10 and not exclude & set(again)


@pytest.mark.parametrize("name", BASELINES)
def test_contract_deterministic_given_seed(fitted, run, name):
    c = conv("reggae please", "more like that", liked=(["reggae-1"],))
    a = fitted[name].recommend(c, k=15)
    b = fitted[name].recommend(c, k=15)
    fresh = make_baseline(name, seed=3)
    fresh.fit(run)
    assert a == b == fresh.recommend(c, k=15)


@pytest.mark.parametrize("name", BASELINES)
def test_contract_empty_conversation(fitted, name):
    out = fitted[name].recommend(Conversation(id="empty"), k=7)
    assert len({t for t, _ in out}) == 7
    out = fitted[name].recommend(conv(""), k=7)
    assert len(out) == 7


@pytest.mark.parametrize("name", BASELINES)
def test_contract_k_larger_than_catalog(fitted, run, name):
    n = len(run.load_catalog())
    out = fitted[name].recommend(conv("folk"), k=n + 50, exclude={"folk-0"})
    assert len(out) == n - 1


@pytest.mark.parametrize("name", BASELINES)
def test_contract_a_song_under_two_ids_is_offered_once(tmp_path_factory, name):
    cat = make_catalog()
    jazz = cat.get("jazz-0")  # the same song once more under another id, as video-id catalogs hold
    cat.tracks.append(Track(id="jazz-0-again", title=jazz.title.upper(), artists=list(jazz.artists),
                            tags=list(jazz.tags)))
    cat = Catalog(cat.tracks, cat.playlists, cat.conversations)
    path = tmp_path_factory.mktemp(f"twice-{name}")
    cat.save(path)
    rec = make_baseline(name, seed=3)
    rec.fit(Run(path))
    ranked = [t for t, _ in rec.recommend(conv("I want some sunny jazz"), k=len(cat))]
    assert len(ranked) == len(cat) and ranked[-1] in {"jazz-0", "jazz-0-again"}
    played = conv("I want some sunny jazz", "more", liked=(["jazz-0"],))
    ranked = [t for t, _ in rec.recommend(played, k=len(cat), exclude={"jazz-0"})]
    assert ranked[-1] == "jazz-0-again"  # played as jazz-0: not offered again first


def test_tracks_without_a_title_are_each_their_own_song():
    from talkplay.exclusion import Songs

    cat = Catalog([Track(id="a", title="", artists=[]), Track(id="b", title="", artists=[]),
                   Track(id="c", title="Jolene", artists=["Dolly Parton"]),
                   Track(id="d", title=" jolene", artists=["DOLLY  parton"])], [], [])
    songs = Songs(cat)
    assert songs.repeats == 1
    ranked = [("d", 0.9), ("a", 0.8), ("c", 0.7), ("b", 0.6)]
    assert [t for t, _ in songs.distinct(ranked, [], 4)] == ["d", "a", "b", "c"]
    assert [t for t, _ in songs.distinct(ranked, ["c"], 2)] == ["a", "b"]


def test_recommend_before_fit_is_an_error():
    with pytest.raises(RuntimeError, match="fit"):
        make_baseline("bm25").recommend(conv("x"), k=3)


def test_unknown_baseline_names_the_known_ones():
    with pytest.raises(InputError, match="bm25"):
        make_baseline("bm26")


# --- what each baseline does -----------------------------------------------------------


@pytest.mark.parametrize("name", ["bm25", "bm25-all", "dense", "hybrid"])
def test_text_baselines_find_the_genre_asked_for(fitted, name):
    top = [t for t, _ in fitted[name].recommend(conv("play me some techno"), k=5)]
    assert sum(t.startswith("techno") for t in top) >= 4, top


def test_bm25_query_modes_differ(fitted):
    c = conv("I love jazz", "now something else entirely: blues")
    cur = [t for t, _ in fitted["bm25"].recommend(c, k=10)]
    full = [t for t, _ in fitted["bm25-all"].recommend(c, k=10)]
    assert all(t.startswith("blues") for t in cur)
    assert any(t.startswith("jazz") for t in full)


def test_cooccur_follows_liked_tracks_and_falls_back_to_popularity(fitted):
    rec = fitted["cooccur"]
    top = [t for t, _ in rec.recommend(conv("more like these", liked=(["folk-0", "folk-2"],)), k=5,
                                       exclude={"folk-0", "folk-2"})]
    assert all(t.startswith("folk") for t in top), top
    no_seed = [t for t, _ in rec.recommend(conv("anything"), k=10)]
    assert no_seed == [t for t, _ in fitted["popularity"].recommend(conv("anything"), k=10)]


def test_popularity_ranks_by_training_frequency(fitted):
    rec = fitted["popularity"]
    scores = [s for _, s in rec.recommend(conv("x"), k=60)]
    assert scores[0] > scores[-1] and scores == sorted(scores, reverse=True)


def test_random_depends_on_seed(run):
    a, b = make_baseline("random", seed=1), make_baseline("random", seed=2)
    a.fit(run)
    b.fit(run)
    assert a.recommend(conv("x"), k=20) != b.recommend(conv("x"), k=20)


def test_baselines_do_not_fit_on_held_out_conversations(tmp_path):
    """Held-out goals (and playlists importers derive from them) must not feed any baseline."""
    from talkplay.splits import run_split

    cat = make_catalog()
    cat.add_track(Track(id="secret", title="Secret Song", tags=["jazz"]))
    cat.save(tmp_path)
    run = Run(tmp_path)
    held = run_split(run).test[0]
    held_conv = next(c for c in cat.conversations if c.id == held.id)
    held_conv.goal.append("secret")
    held_conv.turns[0].liked.append("secret")
    cat.playlists.append(Playlist(id=f"demo:goal:{held.id}", name="derived", track_ids=list(held_conv.goal)))
    cat.save(tmp_path)
    for name in ("popularity", "cooccur"):
        rec = make_baseline(name)
        rec.fit(run)
        assert rec.popularity[rec.index["secret"]] == 0
    scores = rec.scores(conv("more", liked=([held_conv.goal[0]],)))
    assert scores[rec.index["secret"]] == 0


def test_dense_reuses_the_runs_metadata_embeddings(tmp_path):
    """When `talkplay encode` embedded every track's metadata with the same model, dense uses
    those rows (planted here: one track's row is the query's own embedding)."""
    import numpy as np

    from talkplay.atomic import save_npy_atomic
    from talkplay.encoders.text import TextEncoder

    run = make_synthetic_run(tmp_path)
    ids = run.load_catalog().ids()
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(len(ids), 384)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    vecs[ids.index("metal-3")] = TextEncoder().encode(["a quiet harp lullaby"])[0]
    save_npy_atomic(run.embeddings_dir / "metadata.npy", vecs)
    save_npy_atomic(run.embeddings_dir / "metadata.mask.npy", np.ones(len(ids), bool))
    run.record("encode", {"modalities": {"metadata": {"model": "all-MiniLM-L6-v2"}}})
    rec = make_baseline("dense")
    rec.fit(run)
    assert rec.recommend(conv("a quiet harp lullaby"), k=1)[0][0] == "metal-3"
