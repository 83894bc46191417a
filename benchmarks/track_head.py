"""Scoring every catalog row (the content model's track head) against an approximate index.

Run as ``python benchmarks/track_head.py [--sizes 10000,100000,1000000,2000000] [--markdown]``.
For each catalog size: random unit rows of the SmolLM2 hidden size (576), one query, and the
median wall time over ``--repeats`` queries of (a) the exact head: one matrix product and a
top-10, as ``ContentEngine`` does, and (b) with ``faiss-cpu`` installed (``pip install
faiss-cpu``), an IVF inner-product index (nlist = sqrt(N), nprobe 16, trained on a
50,000-row sample) with its recall@10 against the exact top-10 and its build time. The
crossover is the size where the index starts to pay for its build and its lost recall.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cpcd import print_table  # noqa: E402


def median_time(fn, repeats: int) -> float:  # noqa: ANN001
    fn()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="10000,100000,1000000,2000000")
    ap.add_argument("--dim", type=int, default=576)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    try:
        import faiss

        faiss.omp_set_num_threads(args.threads)
    except ImportError:
        faiss = None
    gen = np.random.default_rng(0)
    header = ["tracks", "rows GiB", "exact head ms", "IVF ms", "IVF recall@10", "IVF build s"]
    rows = []
    for n in (int(x) for x in args.sizes.split(",")):
        x = gen.standard_normal((n, args.dim), dtype=np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        q = gen.standard_normal((args.repeats + 1, args.dim), dtype=np.float32)
        xt, qt = torch.from_numpy(x), torch.from_numpy(q)

        def exact(xt: torch.Tensor = xt, qt: torch.Tensor = qt) -> torch.Tensor:
            return torch.topk(xt @ qt[0], 10).indices

        ms = 1000 * median_time(exact, args.repeats)
        cells = [f"{n:,}", f"{x.nbytes / 2**30:.2f}", f"{ms:.1f}", "-", "-", "-"]
        if faiss is not None:
            nlist = int(np.sqrt(n))
            t0 = time.perf_counter()
            quantizer = faiss.IndexFlatIP(args.dim)
            index = faiss.IndexIVFFlat(quantizer, args.dim, nlist, faiss.METRIC_INNER_PRODUCT)
            index.train(x[gen.choice(n, min(n, 50_000), replace=False)])
            index.add(x)
            index.nprobe = 16
            build = time.perf_counter() - t0
            ivf_ms = 1000 * median_time(lambda index=index, q=q: index.search(q[:1], 10), args.repeats)
            truth = torch.topk(xt @ qt.T, 10, dim=0).indices.T.numpy()
            _, got = index.search(q, 10)
            recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(truth, got, strict=True)])
            cells[3:] = [f"{ivf_ms:.2f}", f"{recall:.2f}", f"{build:.0f}"]
        rows.append(cells)
        print("  ".join(cells), file=sys.stderr)
        del x, xt
    print(f"{os.cpu_count()}-core {platform.machine()}, {args.threads} threads, dim {args.dim}")
    print_table("Exact track head against an IVF index", header, rows, args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
