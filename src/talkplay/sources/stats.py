"""Catalog statistics and adding tracks to an existing run.

``catalog_stats(run, StatsConfig()) -> dict`` counts tracks, playlists and conversations
and per-modality coverage, and saves a coverage bar chart as ``run/catalog_stats.png``.
``add_tracks(run, AddConfig(file="new.csv")) -> dict`` adds a file's tracks to the run
(a track table, or with ``source="cpcd"`` etc. the tracks a conversation file describes,
without its conversations) and, when the run already has a music tokenizer, gives the new
tracks codes so they can be recommended. It is the one way tracks join an existing run.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from talkplay.atomic import write_atomic
from talkplay.audio_render import AudioRenderError, is_renderable, render_audio
from talkplay.catalog import Catalog
from talkplay.errors import InputError
from talkplay.log import get_logger
from talkplay.sources.base import ImportConfig, import_tracks_into_run

log = get_logger(__name__)
PLOT_FILE = "catalog_stats.png"
COVERAGE_KEYS = ("title", "artists", "album", "year", "tags", "lyrics", "key", "audio", "playlist")


@dataclass
class StatsConfig:
    """``StatsConfig(plot=True, sample_render=0, seed=0)``: ``sample_render`` renders that many
    randomly chosen score/file tracks to measure how many really produce audio."""

    plot: bool = True
    sample_render: int = 0
    seed: int = 0


def coverage(cat: Catalog) -> dict[str, int]:
    """How many tracks have each kind of information (``audio``: a score or an existing file)."""
    in_playlist = {tid for p in cat.playlists for tid in p.track_ids}
    c = Counter()
    for t in cat.tracks:
        c["title"] += bool(t.title)
        c["artists"] += bool(t.artists)
        c["album"] += bool(t.album)
        c["year"] += t.year is not None
        c["tags"] += bool(t.tags)
        c["lyrics"] += bool(t.lyrics)
        c["key"] += bool(t.extra.get("key"))
        c["audio"] += is_renderable(t)
        c["playlist"] += t.id in in_playlist
    return {k: int(c[k]) for k in COVERAGE_KEYS}


def catalog_stats(run: Any, cfg: StatsConfig | None = None) -> dict[str, Any]:
    """Counts and coverage of ``run``'s catalog; writes the coverage plot unless ``cfg.plot`` is off."""
    cfg = cfg or StatsConfig()
    cat = Catalog.load(run.path)
    n = len(cat.tracks)
    cov = coverage(cat)
    out: dict[str, Any] = {
        "run": str(run.path),
        "tracks": n,
        "playlists": len(cat.playlists),
        "conversations": len(cat.conversations),
        "turns": sum(len(c.turns) for c in cat.conversations),
        "coverage": cov,
        "coverage_fraction": {k: round(v / n, 4) if n else 0.0 for k, v in cov.items()},
        "sources": dict(Counter(t.source.split(":")[0] for t in cat.tracks).most_common()),
        "playlist_sources": dict(Counter(p.source for p in cat.playlists).most_common()),
    }
    if cfg.sample_render:
        out["render_sample"] = sample_render(cat, run.cache_dir, cfg.sample_render, cfg.seed)
    if cfg.plot and n:
        out["plot"] = str(save_plot(out, Path(run.path) / PLOT_FILE))
    return out


def sample_render(cat: Catalog, cache_dir: Path, k: int, seed: int = 0) -> dict[str, Any]:
    """Render ``k`` random renderable tracks; returns tried/ok/rate and the failure reasons."""
    pool = [t for t in cat.tracks if is_renderable(t)]
    picked = random.Random(seed).sample(pool, min(k, len(pool)))
    ok, failures = 0, []
    for t in picked:
        try:
            render_audio(t, cache_dir)
            ok += 1
        except AudioRenderError as e:
            failures.append(str(e)[:200])
    return {"tried": len(picked), "ok": ok, "rate": round(ok / len(picked), 3) if picked else 0.0,
            "failures": failures}


def save_plot(stats: dict[str, Any], path: Path) -> Path:
    """A horizontal bar chart of coverage (% of tracks), written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frac = stats["coverage_fraction"]
    keys = list(reversed(COVERAGE_KEYS))
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=110)
    bars = ax.barh(keys, [100 * frac[k] for k in keys], color="#4c72b0")
    for b, k in zip(bars, keys, strict=True):
        ax.text(b.get_width() + 1, b.get_y() + b.get_height() / 2, f"{stats['coverage'][k]:,}",
                va="center", fontsize=8)
    ax.set_xlim(0, 115)
    ax.set_xlabel("% of tracks")
    ax.set_title(f"{stats['tracks']:,} tracks, {stats['playlists']:,} playlists, "
                 f"{stats['conversations']:,} conversations", fontsize=9)
    fig.tight_layout()
    write_atomic(path, lambda p: fig.savefig(p, format="png"), suffix=".png")
    plt.close(fig)
    return path


@dataclass
class AddConfig:
    """``AddConfig(file="new.jsonl", skip_invalid=False, map={"title": "name"}, config=None,
    source="table")``; ``source`` is any importer (``cpcd``, ``talkplaydata2`` ...), whose
    tracks alone are added."""

    file: str
    skip_invalid: bool = False
    map: dict[str, str] = field(default_factory=dict)
    config: str | None = None
    source: str = "table"


def add_tracks(run: Any, cfg: AddConfig) -> dict[str, Any]:
    """Add a file's tracks to an existing run; extends the tokenizer when the run has one.

    Conversations and playlists in the file are left out: a test file's conversations
    joining the catalog would count as training data.
    """
    if not Catalog.exists(run.path):
        raise InputError(f"no catalog in {run.path}; run `talkplay import` first", file=str(run.path))
    info, new_tracks = import_tracks_into_run(run, ImportConfig(
        source=cfg.source, path=cfg.file, skip_invalid=cfg.skip_invalid,
        options={"map": cfg.map or None, "config": cfg.config}, tracks_only=True))
    info["new_track_ids"] = [t.id for t in new_tracks]
    info["tokenizer"] = None
    if new_tracks and Path(run.tokenizer_dir).exists():
        from talkplay.tokenizer import extend_run  # the codes path: only for a run that has codes

        info["tokenizer"] = extend_run(run, new_tracks)
    elif new_tracks:
        log.info("no tokenizer in this run yet: the new tracks get codes when `talkplay tokenize` runs")
    if new_tracks and Path(run.embeddings_dir).exists():
        log.info("run `talkplay encode %s` to embed the new tracks (content-grounded models read them "
                 "from there)", run.path)
    return info
