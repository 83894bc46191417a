"""K-means codebooks, flat or residual, with faiss when installed and scikit-learn otherwise.

``fit_codebooks(x, k, levels=1, seed=0)`` -> list of ``(k, dim)`` centroid arrays (one per
level); ``assign(x, codebooks)`` -> ``(codes (n, levels), distances (n, levels))``.
Level ``l > 0`` clusters the residual ``x - centroid`` left by the levels before it.
"""

from __future__ import annotations

import numpy as np

from talkplay.log import get_logger

log = get_logger(__name__)
CHUNK = 65_536  # rows per assignment batch: bounds temporary memory at large catalogs


def have_faiss() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_backend(backend: str) -> str:
    if backend == "auto":
        return "faiss" if have_faiss() else "sklearn"
    return backend


def effective_k(k: int, n_present: int) -> int:
    """Codebook size for a modality with ``n_present`` embedded tracks.

    ``min(k, max(1, n_present // 4))``: small catalogs keep about four tracks per cluster on
    average, so codes are shared (the model can generalise across tracks) and k-means has
    enough points per centroid.
    """
    return int(max(1, min(k, n_present // 4)))


def l2_normalize(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)


def _kmeans(x: np.ndarray, k: int, seed: int, niter: int, backend: str) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    if k == 1:
        return x.mean(axis=0, keepdims=True)
    if backend == "faiss":
        import faiss

        km = faiss.Kmeans(x.shape[1], k, niter=niter, seed=seed, verbose=False,
                          min_points_per_centroid=1, max_points_per_centroid=1 << 30)
        km.train(x)
        return np.asarray(km.centroids, dtype=np.float32)
    from sklearn.cluster import MiniBatchKMeans

    km = MiniBatchKMeans(n_clusters=k, random_state=seed, n_init=1, max_iter=niter,
                         batch_size=min(len(x), 4096))
    km.fit(x)
    return km.cluster_centers_.astype(np.float32)


def nearest(x: np.ndarray, centroids: np.ndarray, backend: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """Index of and squared distance to each row's nearest centroid, in chunks."""
    backend = resolve_backend(backend)
    n = len(x)
    codes = np.empty(n, np.int64)
    dist = np.empty(n, np.float32)
    index = None
    if backend == "faiss":
        import faiss

        index = faiss.IndexFlatL2(centroids.shape[1])
        index.add(np.ascontiguousarray(centroids, dtype=np.float32))
    c_sq = (centroids.astype(np.float32) ** 2).sum(axis=1)
    for a in range(0, n, CHUNK):
        xb = np.ascontiguousarray(x[a:a + CHUNK], dtype=np.float32)
        if index is not None:
            d, i = index.search(xb, 1)
            codes[a:a + len(xb)] = i[:, 0]
            dist[a:a + len(xb)] = d[:, 0]
        else:
            d = (xb ** 2).sum(axis=1, keepdims=True) - 2 * xb @ centroids.T + c_sq[None, :]
            i = d.argmin(axis=1)
            codes[a:a + len(xb)] = i
            dist[a:a + len(xb)] = np.maximum(d[np.arange(len(xb)), i], 0)
    return codes, dist


def assign(x: np.ndarray, codebooks: list[np.ndarray],
           backend: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """Codes ``(n, levels)`` and squared distances for rows of ``x`` (flat or residual)."""
    n = len(x)
    codes = np.empty((n, len(codebooks)), np.int64)
    dists = np.empty((n, len(codebooks)), np.float32)
    residual = np.asarray(x, dtype=np.float32)
    for level, cb in enumerate(codebooks):
        codes[:, level], dists[:, level] = nearest(residual, cb, backend)
        if level + 1 < len(codebooks):
            residual = residual - cb[codes[:, level]]
    return codes, dists


def fit_codebooks(x: np.ndarray, k: int, levels: int = 1, seed: int = 0, niter: int = 20,
                  fit_sample: int = 100_000, backend: str = "auto") -> list[np.ndarray]:
    """Fit ``levels`` codebooks of ``k`` centroids on (a seeded sample of) ``x``.

    Only the sample is clustered (k-means quality saturates long before a million points);
    every row is assigned afterwards with ``assign``.
    """
    backend = resolve_backend(backend)
    rng = np.random.default_rng(seed)
    if len(x) > fit_sample:
        idx = np.sort(rng.choice(len(x), size=fit_sample, replace=False))
        sample = np.asarray(x[idx], dtype=np.float32)
    else:
        sample = np.asarray(x, dtype=np.float32)
    k = min(k, len(sample))
    books = []
    residual = sample
    for level in range(levels):
        cb = _kmeans(residual, k, seed + level, niter, backend)
        books.append(cb)
        log.debug("codebook level %d: %d x %d (%s)", level, *cb.shape, backend)
        if level + 1 < levels:
            codes, _ = nearest(residual, cb, backend)
            residual = residual - cb[codes]
    return books
