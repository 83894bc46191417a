"""Shared builders for the dialogs and model tests: a small real run (catalog, playlists,
embeddings, a fitted music tokenizer). Holds no tests itself."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np

from talkplay.atomic import save_npy_atomic
from talkplay.catalog import Catalog, Playlist, Track
from talkplay.run import Run

GENRES = ["rock", "jazz", "folk", "reel", "blues", "pop"]
MOODS = ["chill", "happy", "sad"]
THEMES = ["river", "mountain", "winter", "train"]


def make_catalog(n: int = 48, seed: int = 0) -> Catalog:
    """``n`` tracks with artists, albums, years, genre and mood tags, some lyrics and tempi."""
    rng = random.Random(seed)
    tracks = []
    for i in range(n):
        theme = THEMES[i % len(THEMES)]
        tracks.append(Track(
            id=f"t{i:03d}", title=f"Song {i}", artists=[f"Artist {i % 8}"], album=f"Album {i % 6}",
            year=1970 + (i * 7) % 50, tags=[GENRES[i % len(GENRES)], MOODS[i % len(MOODS)]],
            lyrics=f"down by the {theme}, the {theme} calls me home to the {theme}" if i % 2 == 0 else None,
            extra={"tempo": 70 + (i * 13) % 90} if i % 3 else {},
        ))
    playlists = [Playlist(id=f"p{j}", name=f"{GENRES[j]} mix", track_ids=[t.id for t in tracks[j::6]][:8])
                 for j in range(6)]
    rng.shuffle(playlists)
    return Catalog(tracks, playlists)


def fit_tokenizer(run: Run, seed: int = 0) -> None:
    """What ``tokenize_run`` does (fit, describe clusters, save) minus its diagnostics plot,
    which costs more than the rest together on a small catalog."""
    from talkplay.tokenizer import MusicTokenizer, TokenizerConfig, load_embeddings
    from talkplay.tokenizer.diagnostics import describe_clusters

    catalog = run.load_catalog()
    tok = MusicTokenizer.fit(catalog.ids(), load_embeddings(run, len(catalog)),
                             TokenizerConfig(k=8, seed=seed, min_dup_tokens=4))
    tok.descriptions = describe_clusters(tok, catalog, tok.fit_distances)
    tok.save(run.tokenizer_dir)


def embed_and_tokenize(run: Run, seed: int = 0) -> Run:
    """Random embeddings for a run's existing catalog, then a fitted music tokenizer."""
    n = len(run.load_catalog())
    rng = np.random.default_rng(seed)
    for name in ("tags", "metadata"):
        save_npy_atomic(run.embeddings_dir / f"{name}.npy", rng.normal(size=(n, 16)).astype(np.float32))
        save_npy_atomic(run.embeddings_dir / f"{name}.mask.npy", np.ones(n, bool))
    fit_tokenizer(run, seed)
    return run


def make_run(path: Path, n: int = 48, seed: int = 0, tokenize: bool = True) -> Run:
    """A run directory with a catalog, two embedding modalities that follow the tags and
    artists, and (``tokenize``) a fitted music tokenizer."""
    run = Run(path)
    cat = make_catalog(n, seed)
    cat.save(path)
    rng = np.random.default_rng(seed)
    genre_vec = rng.normal(size=(len(GENRES), 16))
    artist_vec = rng.normal(size=(8, 16))
    tags = np.stack([genre_vec[GENRES.index(t.tags[0])] for t in cat.tracks]) + 0.1 * rng.normal(size=(n, 16))
    meta = np.stack([artist_vec[int(t.artists[0].split()[-1])] for t in cat.tracks])
    meta = meta + 0.1 * rng.normal(size=(n, 16))
    for name, x in (("tags", tags), ("metadata", meta)):
        save_npy_atomic(run.embeddings_dir / f"{name}.npy", x.astype(np.float32))
        save_npy_atomic(run.embeddings_dir / f"{name}.mask.npy", np.ones(n, bool))
    if tokenize:
        fit_tokenizer(run, seed)
    return run
