"""MusicTokenizer: every track as a short, unique, fixed-length sequence of music tokens.

Fit with ``MusicTokenizer.fit(track_ids, embeddings, TokenizerConfig())`` where
``embeddings`` maps a modality name to ``(array (n, dim), mask (n,))``; or, for a run
directory, call ``tokenize_run`` (``talkplay.tokenizer.pipeline``). Load a saved one with
``MusicTokenizer.load(run.tokenizer_dir)``.

A sequence is, for each modality in ``order`` and each residual level, the index of the
nearest centroid, then one disambiguation token::

    <cf_0412> <tag_0087> <meta_0931> <lyr_0005> <aud_0640> <dup_0000>

Missing modalities: a track without a modality (mask False, or a non-finite row) gets that
modality's dedicated unknown token (``<lyr_unk>``), never a zero vector's cluster.
Disambiguation (as in TIGER): tracks whose modality codes coincide are numbered 0, 1, ... in
catalog order by the last token, so every track's sequence is unique and all sequences have
the same length (which keeps the trie and the decoder simple). The number of
disambiguation tokens is fixed at fit time (twice the largest collision group, at least
``min_dup_tokens``) so that new tracks never need new vocabulary.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from talkplay.atomic import write_atomic, write_json_atomic
from talkplay.errors import InputError, TalkPlayError
from talkplay.log import get_logger
from talkplay.modalities import DEFAULT_ORDER, MODALITIES, MUSIC_CLOSE, MUSIC_OPEN, token_name
from talkplay.tokenizer import codebooks as cbk
from talkplay.tokenizer.trie import CodeTrie, IdTrie

log = get_logger(__name__)
STATE_FILE = "tokenizer.npz"
CONFIG_FILE = "config.json"
CLUSTERS_FILE = "clusters.json"
Embeddings = dict[str, tuple[np.ndarray, np.ndarray]]


@dataclass
class TokenizerConfig:
    """How to build codes: ``TokenizerConfig(k=1024, levels=1, order=None, seed=0)``.

    ``k``: clusters per codebook (capped at n_tracks_with_modality // 4); ``levels``: 1 for
    flat k-means, >= 2 for residual k-means (one token per level and modality); ``order``:
    modality order (None = the paper's order, keeping modalities that have embeddings);
    ``fit_sample``: rows k-means is fitted on (all rows are assigned); ``normalize``: L2
    normalise rows first (cosine geometry); ``backend``: "auto" | "faiss" | "sklearn".
    """

    k: int = 1024
    levels: int = 1
    order: list[str] | None = None
    seed: int = 0
    niter: int = 20
    fit_sample: int = 100_000
    normalize: bool = True
    backend: str = "auto"
    min_dup_tokens: int = 32

    def validate(self) -> None:
        if self.k < 2:
            raise InputError(f"must be at least 2, got {self.k}", field="--k")
        if self.k > 65_000:
            raise InputError(f"must be at most 65000, got {self.k}", field="--k")
        if self.levels < 1:
            raise InputError(f"must be at least 1, got {self.levels}", field="--levels")
        if self.niter < 1:
            raise InputError(f"must be at least 1, got {self.niter}", field="niter")
        if self.fit_sample < 2:
            raise InputError(f"must be at least 2, got {self.fit_sample}", field="fit_sample")
        if self.backend not in ("auto", "faiss", "sklearn"):
            raise InputError(f"unknown backend {self.backend!r} (auto, faiss, sklearn)", field="backend")
        if self.backend == "faiss" and not cbk.have_faiss():
            raise InputError("faiss is not installed (pip install faiss-cpu)", field="backend")
        for m in self.order or []:
            if m not in MODALITIES:
                raise InputError(f"unknown modality {m!r} (known: {', '.join(MODALITIES)})", field="--order")
        if self.order is not None and len(set(self.order)) != len(self.order):
            raise InputError("lists a modality twice", field="--order")


@dataclass
class Position:
    """One slot of the sequence: a modality's level, or the disambiguation slot."""

    modality: str  # "" for the disambiguation slot
    level: int
    size: int  # clusters (the unknown token, where there is one, is code ``size``)

    @property
    def is_dup(self) -> bool:
        return self.modality == ""

    def tokens(self) -> list[str]:
        if self.is_dup:
            return [f"<dup_{i:04d}>" for i in range(self.size)]
        prefix = MODALITIES[self.modality].prefix
        if self.level == 0:
            names = [token_name(self.modality, c) for c in range(self.size)]
            return names + [f"<{prefix}_unk>"]
        head = f"<{prefix}_r{self.level}_"
        return [f"{head}{c:04d}>" for c in range(self.size)] + [f"{head}unk>"]


@dataclass
class MusicTokenizer:
    """Codebooks, track codes and the prefix trie; see the module doc for the format."""

    config: TokenizerConfig
    modalities: list[str]
    codebooks: dict[str, list[np.ndarray]]
    codes: np.ndarray  # (n_tracks, length) uint16, local code per position
    track_ids: list[str]
    n_dup: int
    stats: dict[str, Any] = field(default_factory=dict)
    descriptions: dict[str, str] | None = None

    def __post_init__(self) -> None:
        self._tables()
        self.trie = CodeTrie.build(self.codes)
        self.fit_distances: np.ndarray | None = None  # set by fit, used for descriptions

    def _tables(self) -> None:
        """Positions, token names and the id index, derived from codebooks and track ids."""
        self.positions = [Position(m, lvl, len(self.codebooks[m][lvl]))
                          for m in self.modalities for lvl in range(self.config.levels)]
        self.positions.append(Position("", 0, self.n_dup))
        self.position_tokens = [p.tokens() for p in self.positions]
        self.token_index = {t: (i, c) for i, ts in enumerate(self.position_tokens) for c, t in enumerate(ts)}
        self.index = {t: i for i, t in enumerate(self.track_ids)}

    # -- the contract ---------------------------------------------------------------------
    @property
    def vocab(self) -> list[str]:
        """Every music token the language model must learn (not MUSIC_OPEN/CLOSE)."""
        return [t for toks in self.position_tokens for t in toks]

    @property
    def length(self) -> int:
        """Tokens per track (fixed)."""
        return len(self.positions)

    def track_tokens(self, track_id: str) -> list[str]:
        """The full token sequence of a track, disambiguation token included."""
        try:
            row = self.index[track_id]
        except KeyError:
            raise KeyError(f"track {track_id!r} has no music tokens; run `talkplay tokenize`") from None
        return [self.position_tokens[p][c] for p, c in enumerate(self.codes[row].tolist())]

    def decode(self, tokens: list[str] | tuple[str, ...]) -> str | None:
        """The track whose sequence is exactly ``tokens`` (open/close tokens ignored), or None."""
        toks = [t for t in tokens if t not in (MUSIC_OPEN, MUSIC_CLOSE)]
        if len(toks) != self.length:
            return None
        local = []
        for pos, t in enumerate(toks):
            pc = self.token_index.get(t)
            if pc is None or pc[0] != pos:
                return None
            local.append(pc[1])
        row = self.trie.lookup(local)
        return None if row is None else self.track_ids[row]

    def describe(self, token: str) -> str:
        """A human-readable description of a token's cluster (top tags, artists, titles)."""
        pc = self.token_index.get(token)
        if pc is None:
            raise KeyError(f"{token!r} is not a music token")
        pos = self.positions[pc[0]]
        if pos.is_dup:
            return f"disambiguation number {pc[1]} among tracks with the same codes"
        what = MODALITIES[pos.modality].description
        if pc[1] == pos.size:
            return f"no {what} information"
        if self.descriptions and token in self.descriptions:
            return self.descriptions[token]
        level = f", residual level {pos.level}" if pos.level else ""
        return f"{what} cluster {pc[1]}{level}"

    def trie_for(self, token_to_id: dict[str, int]) -> IdTrie:
        """An id-level trie for a language model whose vocabulary holds ``self.vocab``."""
        missing = [t for t in self.vocab if t not in token_to_id]
        if missing:
            raise TalkPlayError(f"the model vocabulary lacks {len(missing)} music tokens "
                                f"(e.g. {missing[0]}); expand it with the current tokenizer")
        position_ids = [np.array([token_to_id[t] for t in toks], dtype=np.int64)
                        for toks in self.position_tokens]
        return IdTrie(self.trie, position_ids, self.track_ids)

    # -- fitting and encoding ---------------------------------------------------------------
    @classmethod
    def fit(cls, track_ids: list[str], embeddings: Embeddings, cfg: TokenizerConfig) -> MusicTokenizer:
        """Fit codebooks on ``embeddings`` and assign every track a unique sequence."""
        cfg.validate()
        n = len(track_ids)
        if n == 0:
            raise InputError("the catalog has no tracks", field="tracks")
        if len(set(track_ids)) != n:
            raise InputError("track ids are not unique", field="id")
        order = list(cfg.order) if cfg.order is not None else [m for m in DEFAULT_ORDER if m in embeddings]
        for m in order:
            if m not in embeddings:
                raise InputError(f"modality {m!r} has no embeddings in this run", field="--order")
        modalities, books = [], {}
        for m in order:
            x, ok = _clean(m, *embeddings[m], n, cfg.normalize)
            n_ok = int(ok.sum())
            if n_ok == 0:
                log.warning("modality %s: no track has it; left out of the codes", m)
                continue
            k = cbk.effective_k(cfg.k, n_ok)
            books[m] = cbk.fit_codebooks(x if ok.all() else x[ok], k, cfg.levels, cfg.seed, cfg.niter,
                                         cfg.fit_sample, cfg.backend)
            modalities.append(m)
            log.info("modality %s: %d of %d tracks, %d clusters x %d level(s)", m, n_ok, n, k, cfg.levels)
        if not modalities:
            raise InputError("no modality has any embedded track; run `talkplay encode` first",
                             field="embeddings")
        shell = cls(cfg, modalities, books, np.zeros((0, len(modalities) * cfg.levels + 1), np.uint16), [], 1)
        pre, dists = shell._assign(embeddings, n)
        dup, max_group = _disambiguate(pre)
        n_dup = max(cfg.min_dup_tokens, 2 * max_group)
        if n_dup > 65_535:
            raise InputError(f"{max_group} tracks share the same codes; raise --k or add modalities",
                             field="--k")
        codes = np.concatenate([pre, dup[:, None]], axis=1).astype(np.uint16)
        n_unique_pre = int((dup == 0).sum())
        stats = {"tracks": n, "unique_before_disambiguation": n_unique_pre,
                 "collision_rate": (n - n_unique_pre) / n, "max_collision_group": max_group}
        tok = cls(cfg, modalities, books, codes, list(track_ids), n_dup, stats=stats)
        tok.fit_distances = dists
        return tok

    def _assign(self, embeddings: Embeddings, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Modality codes (n, length - 1) without the disambiguation token, and distances."""
        lv = self.config.levels
        pre = np.empty((n, len(self.modalities) * lv), np.int64)
        dists = np.full(pre.shape, np.inf, np.float32)
        for j, m in enumerate(self.modalities):
            cols = slice(j * lv, (j + 1) * lv)
            unk = len(self.codebooks[m][0])
            pre[:, cols] = unk
            if m not in embeddings:
                continue
            x, ok = _clean(m, *embeddings[m], n, self.config.normalize)
            dim = self.codebooks[m][0].shape[1]
            if x.shape[1] != dim:
                raise InputError(f"{m} embeddings have {x.shape[1]} dimensions, the codebook {dim}; "
                                 "encode with the same models as the fitted run", field=m)
            if ok.any():
                c, d = cbk.assign(x if ok.all() else x[ok], self.codebooks[m], self.config.backend)
                pre[ok, cols], dists[ok, cols] = c, d
        return pre, dists

    def encode_new(self, track_ids: list[str], embeddings: Embeddings) -> dict[str, list[str]]:
        """Give new tracks codes with the existing codebooks (no refit, no new vocabulary).

        Existing tracks keep their codes; ids already tokenized are left as they are. The
        trie is rebuilt to include the new tracks. Returns ``{track_id: tokens}`` for the
        tracks added.
        """
        n = len(track_ids)
        if len(set(track_ids)) != n:
            raise InputError("new track ids are not unique", field="id")
        pre, _ = self._assign(embeddings, n)
        fresh = [i for i, t in enumerate(track_ids) if t not in self.index]
        taken: dict[tuple[int, ...], set[int]] = {}
        new_rows = []
        for i in fresh:
            key = tuple(pre[i].tolist())
            used = taken.get(key)
            if used is None:
                node = self.trie.walk(key)
                used = set() if node is None else set(self.trie.children(node, len(key)).tolist())
                taken[key] = used
            free = next((d for d in range(self.n_dup) if d not in used), None)
            if free is None:
                raise TalkPlayError(f"track {track_ids[i]!r}: all {self.n_dup} disambiguation tokens of its "
                                    "codes are taken; re-run `talkplay tokenize` to refit")
            used.add(free)
            new_rows.append([*key, free])
        if new_rows:
            self.codes = np.concatenate([self.codes, np.asarray(new_rows, np.uint16)], axis=0)
            for i in fresh:
                self.index[track_ids[i]] = len(self.track_ids)
                self.track_ids.append(track_ids[i])
            self.trie = CodeTrie.build(self.codes)
        return {track_ids[i]: self.track_tokens(track_ids[i]) for i in fresh}

    # -- persistence --------------------------------------------------------------------------
    def meta(self) -> dict[str, Any]:
        return {"format": 1, "config": asdict(self.config), "modalities": self.modalities,
                "levels": self.config.levels, "n_dup": self.n_dup, "n_tracks": len(self.track_ids),
                "length": self.length, "vocab_size": len(self.vocab),
                "clusters": {m: len(self.codebooks[m][0]) for m in self.modalities},
                "dims": {m: int(self.codebooks[m][0].shape[1]) for m in self.modalities},
                "stats": self.stats}

    def save(self, directory: str | Path) -> Path:
        """Write everything needed to encode and decode into ``directory``, atomically.

        The codebooks, codes, track ids and trie share one ``tokenizer.npz`` (one atomic
        rename, so they never disagree); ``config.json`` is a readable copy of the settings.
        """
        directory = Path(directory)
        ids = "\n".join(self.track_ids)
        if any("\n" in t for t in self.track_ids):
            raise InputError("a track id contains a line break", field="id")
        arrays: dict[str, np.ndarray] = {
            "meta": np.frombuffer(json.dumps(self.meta()).encode(), np.uint8),
            "track_ids": np.frombuffer(ids.encode(), np.uint8),
            "codes": self.codes, **self.trie.arrays()}
        for m in self.modalities:
            for lvl, cb in enumerate(self.codebooks[m]):
                arrays[f"codebook__{m}__{lvl}"] = cb
        write_atomic(directory / STATE_FILE, lambda p: np.savez(p, **arrays), suffix=".npz")
        write_json_atomic(directory / CONFIG_FILE, self.meta())
        if self.descriptions is not None:
            write_json_atomic(directory / CLUSTERS_FILE, self.descriptions)
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> MusicTokenizer:
        """Read a tokenizer saved with ``save`` (e.g. ``run.tokenizer_dir``)."""
        directory = Path(directory)
        path = directory / STATE_FILE
        if not path.exists():
            raise InputError("no music tokenizer here; run `talkplay tokenize` first", file=str(path))
        with np.load(path) as z:
            meta = json.loads(z["meta"].tobytes().decode())
            text = z["track_ids"].tobytes().decode()
            track_ids = text.split("\n") if text else []
            codes = z["codes"]
            books = {m: [z[f"codebook__{m}__{lvl}"] for lvl in range(meta["levels"])]
                     for m in meta["modalities"]}
            trie_arrays = {k: z[k] for k in z.files if k.startswith("trie_")}
        cfg = TokenizerConfig(**meta["config"])
        tok = cls.__new__(cls)
        tok.config, tok.modalities, tok.codebooks = cfg, list(meta["modalities"]), books
        tok.codes, tok.track_ids, tok.n_dup, tok.stats = codes, track_ids, int(meta["n_dup"]), meta["stats"]
        tok.descriptions = None
        clusters = directory / CLUSTERS_FILE
        if clusters.exists():
            tok.descriptions = json.loads(clusters.read_text(encoding="utf-8"))
        tok._tables()  # the small lookup tables; the trie comes from the file
        tok.trie = CodeTrie.from_arrays(codes, trie_arrays)
        tok.fit_distances = None
        if len(track_ids) != len(codes):
            raise InputError(f"{len(track_ids)} track ids but {len(codes)} code rows", file=str(path))
        return tok


def _clean(modality: str, x: np.ndarray, mask: np.ndarray, n: int,
           normalize: bool) -> tuple[np.ndarray, np.ndarray]:
    """Rows as float32 (normalised if asked) and the mask of rows usable for clustering."""
    if len(x) != n or len(mask) != n:
        raise InputError(f"{modality}: {len(x)} embedding rows and {len(mask)} mask rows for {n} tracks",
                         field=modality)
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise InputError(f"{modality}: expected a 2-d embedding array, got shape {x.shape}", field=modality)
    ok = np.asarray(mask, dtype=bool).copy()
    finite = np.isfinite(x).all(axis=1)
    bad = ok & ~finite
    if bad.any():
        log.warning("modality %s: %d rows are not finite; they get the unknown token",
                    modality, int(bad.sum()))
    ok &= finite
    if not finite.all():
        x = np.where(finite[:, None], x, 0).astype(np.float32)
    if normalize:
        x = cbk.l2_normalize(x)
    return x, ok


def _disambiguate(pre: np.ndarray) -> tuple[np.ndarray, int]:
    """Rank of each row within its group of identical rows (catalog order), and max group size."""
    n = len(pre)
    if n == 0:
        return np.zeros(0, np.int64), 0
    perm = np.lexsort(np.concatenate([np.arange(n)[None, :], pre.T[::-1]], axis=0))
    s = pre[perm]
    new = np.ones(n, bool)
    new[1:] = (s[1:] != s[:-1]).any(axis=1)
    starts = np.flatnonzero(new)
    group = np.cumsum(new) - 1
    rank_sorted = np.arange(n) - starts[group]
    dup = np.empty(n, np.int64)
    dup[perm] = rank_sorted
    return dup, int(rank_sorted.max()) + 1
