"""How good are the codes? Usage, collisions, purity, cluster descriptions and a plot.

``diagnose(tok, catalog)`` -> one JSON-able dict (what ``talkplay tokenize --json``
prints); ``describe_clusters(tok, catalog)`` -> ``{token: description}``;
``plot(tok, diag, path)`` saves a PNG.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from talkplay.atomic import write_atomic
from talkplay.catalog import Catalog
from talkplay.modalities import MODALITIES
from talkplay.tokenizer.core import MusicTokenizer


def _column(tok: MusicTokenizer, modality: str, level: int = 0) -> int:
    return tok.modalities.index(modality) * tok.config.levels + level


def code_usage(codes: np.ndarray, k: int) -> dict[str, Any]:
    """Share of the ``k`` clusters in use and the entropy of the code distribution.

    ``codes`` may hold ``k`` for "unknown"; those rows count only towards ``unknown``.
    """
    known = codes[codes < k]
    counts = np.bincount(known, minlength=k).astype(np.float64)
    used = int((counts > 0).sum())
    p = counts[counts > 0] / max(1, counts.sum())
    entropy = float(-(p * np.log2(p)).sum()) if len(p) else 0.0
    return {"clusters": int(k), "used": used, "share_used": used / k,
            "entropy_bits": entropy, "normalized_entropy": entropy / np.log2(k) if k > 1 else 1.0,
            "unknown": float((codes >= k).mean()) if len(codes) else 0.0}


def prefix_branching(codes: np.ndarray) -> list[float]:
    """Mean number of distinct next tokens per distinct prefix, at each position."""
    n, length = codes.shape
    if n == 0:
        return [0.0] * length
    s = codes[np.lexsort(codes.T[::-1])]
    neq = s[1:] != s[:-1]
    first_diff = np.where(neq.any(axis=1), neq.argmax(axis=1), length)
    uniq = [1] + [int((first_diff < d).sum()) + 1 for d in range(1, length + 1)]
    return [uniq[d + 1] / uniq[d] for d in range(length)]


def _rows(tok: MusicTokenizer, catalog: Catalog) -> tuple[np.ndarray, list]:
    rows = np.array([i for i, t in enumerate(tok.track_ids) if t in catalog.index], np.int64)
    tracks = [catalog.get(tok.track_ids[i]) for i in rows]
    return rows, tracks


def _purity(codes: np.ndarray, labels: list[list[str]], k: int, rng: np.random.Generator) -> dict[str, Any]:
    """Share of labelled tracks carrying their cluster's most common label (and a shuffled baseline)."""
    keep = np.array([bool(lab) for lab in labels]) & (codes < k)
    if keep.sum() == 0:
        return {"purity": None, "random": None, "tracks": 0}
    c = codes[keep]
    labs = [labels[i] for i in np.flatnonzero(keep)]

    def score(cc: np.ndarray) -> float:
        pairs = pd.DataFrame({"c": np.repeat(cc, [len(x) for x in labs]),
                              "l": [x for lab in labs for x in lab]})
        top = pairs.groupby(["c", "l"]).size().groupby(level=0).max()
        sizes = pd.Series(cc).value_counts()
        return float(top.sum() / sizes.loc[top.index].sum())

    return {"purity": score(c), "random": score(rng.permutation(c)), "tracks": int(keep.sum())}


def diagnose(tok: MusicTokenizer, catalog: Catalog | None = None, seed: int = 0) -> dict[str, Any]:
    """Diagnostics as one JSON-able dict: tracks, unique_sequences, collision_rate, usage, purity."""
    n = len(tok.track_ids)
    out: dict[str, Any] = {
        "tracks": n,
        "unique_sequences": int(len(np.unique(tok.codes, axis=0))) if n else 0,
        "unique_before_disambiguation": tok.stats.get("unique_before_disambiguation"),
        "collision_rate": tok.stats.get("collision_rate"),
        "max_collision_group": tok.stats.get("max_collision_group"),
        "order": tok.modalities, "levels": tok.config.levels, "sequence_length": tok.length,
        "vocab_size": len(tok.vocab), "disambiguation_tokens": tok.n_dup,
        "trie_bytes_per_track": tok.trie.nbytes() / max(1, n),
        "prefix_branching": [round(b, 3) for b in prefix_branching(tok.codes)],
        "usage": {}, "purity": {},
    }
    for m in tok.modalities:
        k = len(tok.codebooks[m][0])
        u = code_usage(tok.codes[:, _column(tok, m)], k)
        if tok.config.levels > 1:
            u["residual_levels"] = [code_usage(tok.codes[:, _column(tok, m, lvl)], k)
                                    for lvl in range(1, tok.config.levels)]
        out["usage"][m] = u
    if catalog is not None:
        rng = np.random.default_rng(seed)
        rows, tracks = _rows(tok, catalog)
        artists = [t.artists[:1] for t in tracks]
        tags = [t.tags for t in tracks]
        for m in tok.modalities:
            codes = tok.codes[rows, _column(tok, m)]
            k = len(tok.codebooks[m][0])
            out["purity"][m] = {"artist": _purity(codes, artists, k, rng),
                                "tag": _purity(codes, tags, k, rng)}
    return out


def describe_clusters(tok: MusicTokenizer, catalog: Catalog, distances: np.ndarray | None = None,
                      n_tags: int = 5, n_artists: int = 3, n_titles: int = 3) -> dict[str, str]:
    """``{token: "tags cluster 87 (41 tracks): tags jazz, piano; artists ...; e.g. ..."}``.

    Typical titles are the tracks nearest the centroid when fit distances are given.
    """
    rows, tracks = _rows(tok, catalog)
    out: dict[str, str] = {}
    for j, pos in enumerate(tok.positions[:-1]):
        codes = tok.codes[rows, j].astype(np.int64)
        dist = distances[rows, j] if distances is not None else np.zeros(len(rows), np.float32)
        order = np.lexsort((dist, codes))
        bounds = np.flatnonzero(np.diff(codes[order])) + 1
        what = MODALITIES[pos.modality].description
        level = f" level {pos.level}" if pos.level else ""
        for group in np.split(order, bounds):
            if len(group) == 0:
                continue
            code = int(codes[group[0]])
            if code >= pos.size:
                continue  # the unknown token has a fixed description
            members = [tracks[i] for i in group]
            tag_c = Counter(t for tr in members for t in tr.tags)
            art_c = Counter(a for tr in members for a in tr.artists)
            parts = []
            if tag_c:
                parts.append("tags " + ", ".join(t for t, _ in tag_c.most_common(n_tags)))
            if art_c:
                parts.append("artists " + ", ".join(a for a, _ in art_c.most_common(n_artists)))
            titles = list(dict.fromkeys(tr.title for tr in members))[:n_titles]
            parts.append("e.g. " + ", ".join(f'"{t}"' for t in titles))
            token = tok.position_tokens[j][code]
            size = f"{len(members)} track" + ("s" if len(members) != 1 else "")
            out[token] = f"{what} cluster {code}{level} ({size}): " + "; ".join(parts)
    return out


def plot(tok: MusicTokenizer, diag: dict[str, Any], path: str | Path) -> Path:
    """Save a PNG: cluster-size curves per modality and usage/purity bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    for m in tok.modalities:
        k = len(tok.codebooks[m][0])
        col = tok.codes[:, _column(tok, m)]
        sizes = np.sort(np.bincount(col[col < k], minlength=k))[::-1]
        ax1.plot(np.arange(1, k + 1), np.maximum(sizes, 0.5), label=m)
    ax1.set_yscale("log")
    ax1.set_xlabel("cluster rank")
    ax1.set_ylabel("tracks in cluster")
    ax1.set_title(f"cluster sizes (collision rate {diag['collision_rate']:.2%})")
    ax1.legend()
    mods = tok.modalities
    x = np.arange(len(mods))
    bars = {"clusters used": [diag["usage"][m]["share_used"] for m in mods],
            "norm. entropy": [diag["usage"][m]["normalized_entropy"] for m in mods]}
    if diag.get("purity"):
        bars["artist purity"] = [diag["purity"][m]["artist"]["purity"] or 0 for m in mods]
        bars["tag purity"] = [diag["purity"][m]["tag"]["purity"] or 0 for m in mods]
    w = 0.8 / len(bars)
    for i, (name, vals) in enumerate(bars.items()):
        ax2.bar(x + i * w - 0.4 + w / 2, vals, w, label=name)
    ax2.set_xticks(x, mods)
    ax2.set_ylim(0, 1.05)
    ax2.set_title("codebook usage and cluster purity")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    write_atomic(path, lambda p: fig.savefig(p, dpi=100), suffix=".png")
    plt.close(fig)
    return path
