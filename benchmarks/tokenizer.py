"""Music tokenizer speed and memory on synthetic clustered embeddings.

Run as ``nice python benchmarks/tokenizer.py --tracks 1000000`` (the issue's scale: 5
modalities x 384 dims, float32, K=1,024) or ``--tracks 20000`` for a quick look. Prints a
table: time to fit the codebooks and assign codes, trie + code-table memory per track
beyond the code array, next-token lookup latency, and collision rate / prefix branching for
flat and (with ``--residual``) residual codes.

Data: each track draws a latent style from a Zipf-like law over 2,048 styles; each modality
keeps that style's cluster with probability 0.5 (else a random one), so modalities are
correlated as in real catalogs; rows are cluster centre + Gaussian noise. Arrays are written
once as memory-mapped .npy files under ``--data-dir`` and reused.
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from talkplay.modalities import DEFAULT_ORDER
from talkplay.tokenizer import MusicTokenizer, TokenizerConfig
from talkplay.tokenizer.diagnostics import prefix_branching

STYLES = 2048
# Lookups are single-threaded: their CPU time is what a quiet machine shows as wall time,
# and unlike wall time it does not grow when other jobs share the cores.
_clock = time.process_time


def make_data(data_dir: Path, n: int, dim: int, seed: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    data_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, STYLES + 1) ** 0.8
    style = rng.choice(STYLES, size=n, p=weights / weights.sum())
    out = {}
    for j, m in enumerate(DEFAULT_ORDER):
        path = data_dir / f"{m}_{n}_{dim}_{seed}.npy"
        if not path.exists():
            r = np.random.default_rng(seed + 1 + j)
            centres = r.standard_normal((STYLES, dim), dtype=np.float32)
            cid = np.where(r.random(n) < 0.5, style, r.integers(0, STYLES, n))
            arr = np.lib.format.open_memmap(path.with_suffix(".tmp.npy"), mode="w+", dtype=np.float32,
                                            shape=(n, dim))
            for a in range(0, n, 100_000):
                b = min(n, a + 100_000)
                arr[a:b] = centres[cid[a:b]] + 0.6 * r.standard_normal((b - a, dim), dtype=np.float32)
            arr.flush()
            del arr
            path.with_suffix(".tmp.npy").rename(path)
        out[m] = (np.load(path, mmap_mode="r"), np.ones(n, bool))
    return out


def lookup_latency(tok: MusicTokenizer, n_queries: int, seed: int) -> dict[str, float]:
    """Microseconds per next-token query, beam-search style and cold (walk from the root)."""
    token_to_id = {t: 50_000 + i for i, t in enumerate(tok.vocab)}
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, len(tok.track_ids), n_queries)
    seqs = [tuple(token_to_id[t] for t in tok.track_tokens(tok.track_ids[r])) for r in rows]
    out = {}
    trie = tok.trie_for(token_to_id)
    trie._cache_size = 1 << 22  # keep every prefix, so the second pass measures pure hits
    t0 = _clock()
    calls = 0
    for s in seqs:  # incremental: each query extends the previous prefix by one token
        for d in range(len(s)):
            trie.allowed(s[:d])
            calls += 1
        trie.track(s)
    out["incremental_us"] = (_clock() - t0) / calls * 1e6
    deep = tok.trie_for(token_to_id)  # beam-style, timing only the steps at depth >= 2
    total, calls_deep = 0.0, 0
    for s in seqs:
        for d in range(2):
            deep.allowed(s[:d])
        prefixes = [s[:d] for d in range(2, len(s))]
        t0 = _clock()
        for p in prefixes:
            deep.allowed(p)
        total += _clock() - t0
        calls_deep += len(prefixes)
    out["deep_us"] = total / calls_deep * 1e6
    t0 = _clock()
    for s in seqs:  # repeat: every prefix is cached now
        for d in range(len(s)):
            trie.allowed(s[:d])
    out["cached_us"] = (_clock() - t0) / calls * 1e6
    cold = tok.trie_for(token_to_id)
    cold._cache_size = 0  # no cache: each query walks from the root
    depths = rng.integers(1, tok.length, n_queries)
    t0 = _clock()
    for s, d in zip(seqs, depths, strict=True):
        cold.allowed(s[:d])
    out["cold_walk_us"] = (_clock() - t0) / n_queries * 1e6
    out["cold_per_step_us"] = out["cold_walk_us"] / float(np.mean(depths))
    base = tok.trie  # one raw step on the array trie
    codes = tok.codes[rows]
    t0 = _clock()
    for c in codes:
        base.child(0, 0, int(c[0]))
    out["raw_step_us"] = (_clock() - t0) / n_queries * 1e6
    return out


def codes_only_case(n: int, k: int, seed: int, queries: int) -> dict:
    """Trie memory and lookups at scale without k-means: codes drawn like the data's clusters."""
    from talkplay.tokenizer.core import _disambiguate

    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, STYLES + 1) ** 0.8
    style = rng.choice(STYLES, size=n, p=weights / weights.sum())
    pre = np.stack([np.where(rng.random(n) < 0.5, style, rng.integers(0, STYLES, n)) % k
                    for _ in DEFAULT_ORDER], axis=1)
    dup, max_group = _disambiguate(pre)
    codes = np.concatenate([pre, dup[:, None]], axis=1).astype(np.uint16)
    cfg = TokenizerConfig(k=k)
    books = {m: [np.zeros((k, 1), np.float32)] for m in DEFAULT_ORDER}
    ids = [f"track{i:07d}" for i in range(n)]
    t0 = time.perf_counter()
    tok = MusicTokenizer(cfg, list(DEFAULT_ORDER), books, codes, ids, max(32, 2 * max_group),
                         stats={"collision_rate": float((dup > 0).mean()), "max_collision_group": max_group})
    res = {"levels": 0, "length": tok.length, "fit_assign_s": float("nan"), "fit_assign_cpu_s": float("nan"),
           "trie_build_s": time.perf_counter() - t0, "trie_B": tok.trie.nbytes() / n,
           "index_B": sys.getsizeof(tok.index) / n,
           "id_trie_B": tok.trie_for({t: 50_000 + i for i, t in enumerate(tok.vocab)}).nbytes() / n,
           "code_array_B": tok.codes.nbytes / n, "collision_rate": tok.stats["collision_rate"],
           "max_group": max_group, "branching": prefix_branching(tok.codes), "nodes": tok.trie.n_nodes}
    res.update(lookup_latency(tok, queries, seed))
    return res


def run_case(emb, ids, k: int, levels: int, fit_sample: int, seed: int, queries: int) -> dict:
    cfg = TokenizerConfig(k=k, levels=levels, seed=seed, fit_sample=fit_sample)
    gc.collect()
    t0, c0 = time.perf_counter(), time.process_time()
    tok = MusicTokenizer.fit(ids, emb, cfg)
    fit_s, fit_cpu = time.perf_counter() - t0, time.process_time() - c0
    n = len(ids)
    t0 = _clock()
    tok.trie = type(tok.trie).build(tok.codes)
    trie_s = _clock() - t0
    index_bytes = sys.getsizeof(tok.index)  # the id -> row table (keys are shared with track_ids)
    res = {
        "levels": levels, "length": tok.length, "fit_assign_s": fit_s, "fit_assign_cpu_s": fit_cpu,
        "trie_build_s": trie_s,
        "trie_B": tok.trie.nbytes() / n, "index_B": index_bytes / n,
        "id_trie_B": tok.trie_for({t: 50_000 + i for i, t in enumerate(tok.vocab)}).nbytes() / n,
        "code_array_B": tok.codes.nbytes / n,
        "collision_rate": tok.stats["collision_rate"], "max_group": tok.stats["max_collision_group"],
        "branching": prefix_branching(tok.codes), "nodes": tok.trie.n_nodes,
    }
    res.update(lookup_latency(tok, queries, seed))
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tracks", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--k", type=int, default=1024)
    ap.add_argument("--fit-sample", type=int, default=TokenizerConfig.fit_sample)
    ap.add_argument("--residual", type=int, default=0, help="also run residual k-means with this many levels")
    ap.add_argument("--flat", type=int, default=1, help="run the flat case (1) or not (0)")
    ap.add_argument("--queries", type=int, default=20_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--codes-only", action="store_true",
                    help="skip k-means: codes drawn like the data's clusters (trie memory and lookups only)")
    ap.add_argument("--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "talkplay-bench-tokenizer")
    a = ap.parse_args()
    console = Console()
    t0 = time.perf_counter()
    if a.codes_only:
        r = codes_only_case(a.tracks, a.k, a.seed, a.queries)
        for key, v in r.items():
            console.print(f"{key}: {v if key == 'branching' else round(v, 4) if isinstance(v, float) else v}")
        return
    emb = make_data(a.data_dir, a.tracks, a.dim, a.seed)
    console.print(f"load average at start: {os.getloadavg()[0]:.1f}; data ready in "
                  f"{time.perf_counter() - t0:.1f}s ({a.tracks:,} x {len(emb)} x {a.dim})")
    ids = [f"track{i:07d}" for i in range(a.tracks)]
    cases = ([1] if a.flat else []) + ([a.residual] if a.residual >= 2 else [])
    results = [run_case(emb, ids, a.k, lv, a.fit_sample, a.seed, a.queries) for lv in cases]
    table = Table(title=f"music tokenizer: {a.tracks:,} tracks x {len(emb)} modalities x {a.dim} dims, "
                        f"K={a.k}")
    table.add_column("metric")
    for r in results:
        table.add_column("flat" if r["levels"] <= 1 else f"residual x{r['levels']}", justify="right")
    rows = [
        ("sequence length (tokens)", "length", "{:d}"),
        ("fit codebooks + assign codes, wall (s)", "fit_assign_s", "{:.1f}"),
        ("fit codebooks + assign codes, CPU summed over threads (s)", "fit_assign_cpu_s", "{:.1f}"),
        ("build trie (s)", "trie_build_s", "{:.2f}"),
        ("trie bytes / track", "trie_B", "{:.1f}"),
        ("+ token-id edge table (trie_for) bytes / track", "id_trie_B", "{:.1f}"),
        ("+ id->row index bytes / track", "index_B", "{:.1f}"),
        ("code array bytes / track (excluded)", "code_array_B", "{:.1f}"),
        ("collision rate before disambiguation", "collision_rate", "{:.4%}"),
        ("largest collision group", "max_group", "{:d}"),
        ("shared-prefix nodes", "nodes", "{:,}"),
        ("next-token lookup, beam-style (CPU µs)", "incremental_us", "{:.2f}"),
        ("next-token lookup, prefix asked before (CPU µs)", "cached_us", "{:.2f}"),
        ("next-token lookup, beam-style, depth >= 2 (CPU µs)", "deep_us", "{:.2f}"),
        ("next-token lookup, cold walk per step (CPU µs)", "cold_per_step_us", "{:.2f}"),
        ("raw array-trie step (CPU µs)", "raw_step_us", "{:.2f}"),
    ]
    for label, key, fmt in rows:
        table.add_row(label, *[fmt.format(r[key]) for r in results])
    for r in results:
        label = "flat" if r["levels"] == 1 else f"residual x{r['levels']}"
        table.add_row(f"branching per position ({label})", *[
            " ".join(f"{b:.1f}" for b in r["branching"]) if r is q else "" for q in results])
    console.print(table)
    console.print(f"load average at end: {os.getloadavg()[0]:.1f}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    console.print(f"peak resident memory {peak:,.0f} MiB; total {time.perf_counter() - t0:.0f}s")


if __name__ == "__main__":
    main()
