"""The encode stage: ``encode_run(Run(path), EncodeConfig())`` and ``encode_tracks(run, tracks)``.

For each modality it writes ``embeddings/<m>.npy`` (float32, catalog order),
``embeddings/<m>.mask.npy`` (bool) and ``embeddings/<m>.keys.json`` (the content key of
each row, which is the cache: a re-run recomputes only rows whose key changed, so adding
tracks encodes just those). Audio also writes ``audio.tagprobs.npy`` (the 50 musicnn tag
probabilities per track) and ``audio.tags.json`` (each track's top tags, source
"musicnn"). Tracks without tags but with encoded audio get those top tags as their tag
text. A track that lacks a modality, or whose input is bad, has mask False and a zero
row: the mask, never the vector, says whether there is data.
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from talkplay import fingerprint
from talkplay.atomic import save_npy_atomic, write_atomic, write_json_atomic
from talkplay.catalog import Catalog, Track
from talkplay.encoders.audio import AudioModalityEncoder  # importing registers the audio encoder
from talkplay.encoders.base import REGISTRY, EncodeConfig, Encoded, ModalityEncoder
from talkplay.encoders.cooccur import fit_cooccur, sessions_key
from talkplay.encoders.text import (
    AUDIO_TAGS_KEY,  # importing registers the text encoders
    DEFAULT_TEXT_MODEL,
)
from talkplay.log import get_logger, progress
from talkplay.run import Run
from talkplay.splits import run_split, training_catalog

__all__ = ["EncodeConfig", "encode_run", "encode_tracks", "load_embeddings", "audio_tags"]
log = get_logger(__name__)
# audio first: its tags stand in for missing tags; co-occurrence last (a whole-catalog fit)
_STAGE_ORDER = ("audio", "metadata", "tags", "lyrics", "cooccur")
SAVE_EVERY_S = 120.0  # how often finished rows are saved while a modality is being encoded


def get_encoder(modality: str, cfg: EncodeConfig, cache_dir: Path | None = None) -> ModalityEncoder:
    """The registered per-track encoder for ``modality``: ``get_encoder("metadata", EncodeConfig())``."""
    if modality not in REGISTRY:
        raise KeyError(f"no per-track encoder registered for {modality!r}")
    return REGISTRY[modality](cfg, cache_dir)


# --- the row cache -----------------------------------------------------------------------


class _RowCache:
    """key -> (embedding row, mask, extras) gathered from earlier outputs and shard files."""

    def __init__(self) -> None:
        self.rows: dict[str, tuple[np.ndarray, bool, dict[str, np.ndarray]]] = {}
        self.dim: int | None = None  # width of the previous output, if any

    def add(self, keys: list[str | None], enc: Encoded) -> None:
        for i, k in enumerate(keys):
            if k is not None:
                self.rows[k] = (enc.emb[i], bool(enc.mask[i]), {n: a[i] for n, a in enc.extras.items()})

    def load_outputs(self, edir: Path, modality: str, extra_names: tuple[str, ...]) -> None:
        keys_path = edir / f"{modality}.keys.json"
        if not keys_path.exists():
            return
        try:
            keys = json.loads(keys_path.read_text(encoding="utf-8"))["keys"]
            emb = np.load(edir / f"{modality}.npy")
            mask = np.load(edir / f"{modality}.mask.npy")
            extras = {n: np.load(edir / f"{modality}.{n}.npy") for n in extra_names}
        except (OSError, ValueError, KeyError) as e:  # a damaged cache is recomputed, not trusted
            log.warning("ignoring unreadable cached %s embeddings: %s", modality, e)
            return
        if len(keys) == len(emb) == len(mask) and all(len(a) == len(keys) for a in extras.values()):
            self.add(keys, Encoded(emb, mask, extras))
            self.dim = int(emb.shape[1])

    def load_shards(self, edir: Path, modality: str) -> int:
        n = 0
        # shard outputs (<m>.i-of-n.npz) and partial progress (<m>.part-*.npz)
        for f in sorted((edir / "shards").glob(f"{modality}.*.npz")):
            with np.load(f, allow_pickle=False) as z:
                extras = {k[len("extra_"):]: z[k] for k in z.files if k.startswith("extra_")}
                self.add([str(k) for k in z["keys"]], Encoded(z["emb"], z["mask"], extras))
                n += 1
        return n


# --- helpers -----------------------------------------------------------------------------


def _sample_rows(tracks: list[Track], limit: int | None) -> set[int]:
    """A deterministic sample of rows with audio: the ``limit`` smallest hashes of track ids.

    Hashing ids (not positions) keeps the sample stable when tracks are added.
    """
    rows = [i for i, t in enumerate(tracks) if t.audio]
    if limit is None or limit >= len(rows):
        return set(rows)
    rows.sort(key=lambda i: hashlib.sha1(tracks[i].id.encode("utf-8")).hexdigest())
    return set(rows[:limit])


def _with_audio_tags(tracks: list[Track], tags: dict[str, list[list[Any]]]) -> list[Track]:
    """Copies of tag-less tracks carrying their musicnn top tags in ``extra``."""
    out = []
    for t in tracks:
        if not t.tags and t.id in tags:
            t = copy.copy(t)
            t.extra = {**t.extra, AUDIO_TAGS_KEY: [tag for tag, _ in tags[t.id]],
                       "audio_tags_source": "musicnn"}
        out.append(t)
    return out


def audio_tags(run: Run) -> dict[str, list[list[Any]]]:
    """``{track_id: [[tag, probability], ...]}`` predicted from audio by the last encode run."""
    path = run.embeddings_dir / "audio.tags.json"
    if not path.exists():
        return {}
    return json.loads(path.read_text(encoding="utf-8")).get("tracks", {})


def load_embeddings(run: Run, modality: str) -> tuple[np.ndarray, np.ndarray]:
    """``(emb, mask)`` of one modality as written by ``encode_run``."""
    edir = run.embeddings_dir
    return np.load(edir / f"{modality}.npy"), np.load(edir / f"{modality}.mask.npy")


def _encode_rows(enc: ModalityEncoder, tracks: list[Track], rows: list[int], keys: list[str | None],
                 cache: _RowCache, n: int, saver: Any = None) -> tuple[Encoded, dict[str, Any]]:
    """Fill an (n, dim) table for ``rows``: cached keys are copied, the rest encoded in blocks.

    When every row is cached the model is never loaded (its size comes from the cache).
    ``saver(rows, partial)`` is called every ``SAVE_EVERY_S`` seconds with the rows done.
    """
    hits: dict[int, tuple[np.ndarray, bool, dict[str, np.ndarray]]] = {}
    todo = []
    for r in rows:
        k = keys[r]
        if k is None:
            continue
        hit = cache.rows.get(k)
        if hit is not None:
            hits[r] = hit
        else:
            todo.append(r)
    dims = {h[0].shape[0] for h in hits.values()}
    if todo or len(dims) > 1:
        dim = enc.dim
    elif dims:
        dim = dims.pop()
    else:  # no track has this modality: keep the previous width rather than load a model
        dim = cache.dim or enc.dim
    emb = np.zeros((n, dim), np.float32)
    mask = np.zeros(n, bool)
    extras = {name: np.zeros((n, d), np.float32) for name, d in enc.extra_dims().items()}
    for r, (vec, present, ex) in hits.items():
        if vec.shape != (dim,):  # from an older model of another size: recompute
            todo.append(r)
            continue
        emb[r], mask[r] = vec, present
        for name, v in ex.items():
            if name in extras and v.shape == extras[name][r].shape:
                extras[name][r] = v
    todo.sort()
    n_keyed = sum(keys[r] is not None for r in rows)
    stats: dict[str, Any] = {"cached": n_keyed - len(todo), "encoded": len(todo)}
    if todo:
        t0 = last_save = time.perf_counter()
        pending: list[int] = []
        blk = max(1, enc.block_size)
        starts = range(0, len(todo), blk)
        for s in progress(starts, total=len(starts), desc=f"{enc.modality} ({len(todo):,} tracks)"):
            part = todo[s:s + blk]
            out = enc.encode([tracks[r] for r in part])
            for k, v in out.stats.items():
                stats[k] = stats.get(k, 0) + v
            idx = np.asarray(part)
            emb[idx], mask[idx] = np.where(out.mask[:, None], out.emb, 0.0), out.mask
            for name, a in out.extras.items():
                extras[name][idx] = a
            pending.extend(part)
            if saver is not None and time.perf_counter() - last_save > SAVE_EVERY_S:
                saver(pending, Encoded(emb, mask, extras))  # an interrupted run resumes from here
                pending, last_save = [], time.perf_counter()
        stats["seconds"] = round(time.perf_counter() - t0, 3)
    return Encoded(emb, mask, extras), stats


def _part_saver(edir: Path, modality: str, keys: list[str | None], tag: str):  # noqa: ANN202
    """A callback writing finished rows to ``shards/<m>.part-<tag>-<k>.npz`` as encoding goes."""
    counter = iter(range(10**9))

    def save(rows: list[int], res: Encoded) -> None:
        name = f"{modality}.part-{tag}-{time.time_ns()}-{next(counter)}"
        _write_shard(edir, modality, res, keys, rows, name=name)

    return save


def _drop_parts(edir: Path, modality: str, tag: str | None = None) -> None:
    pattern = f"{modality}.part-{tag}-*.npz" if tag else f"{modality}.part-*.npz"
    for f in (edir / "shards").glob(pattern):
        f.unlink(missing_ok=True)


def _write_modality(edir: Path, modality: str, res: Encoded, keys: list[str | None]) -> None:
    save_npy_atomic(edir / f"{modality}.npy", res.emb.astype(np.float32))
    save_npy_atomic(edir / f"{modality}.mask.npy", res.mask.astype(bool))
    for name, a in res.extras.items():
        save_npy_atomic(edir / f"{modality}.{name}.npy", a.astype(np.float32))
    write_json_atomic(edir / f"{modality}.keys.json", {"keys": keys})


def _write_shard(edir: Path, modality: str, res: Encoded, keys: list[str | None], rows: list[int],
                 shard: tuple[int, int] | None = None, name: str | None = None) -> Path:
    rows = [r for r in rows if keys[r] is not None]
    if name is None:
        assert shard is not None
        name = f"{modality}.{shard[0]}-of-{shard[1]}"
    path = edir / "shards" / f"{name}.npz"
    arrays = {"keys": np.array([keys[r] for r in rows], dtype=str), "emb": res.emb[rows],
              "mask": res.mask[rows], **{f"extra_{k}": v[rows] for k, v in res.extras.items()}}
    write_atomic(path, lambda p: np.savez(p, **arrays), suffix=".npz")
    return path


def _audio_tags_json(enc: ModalityEncoder, tracks: list[Track], res: Encoded, k: int) -> dict[str, Any]:
    assert isinstance(enc, AudioModalityEncoder)
    probs = res.extras["tagprobs"]
    tags = {t.id: [list(x) for x in enc.audio.top_tags(probs[i], k)]
            for i, t in enumerate(tracks) if res.mask[i]}
    return {"model": enc.audio.model, "source": "musicnn", "labels": enc.audio.labels, "top_k": k,
            "tracks": tags}


# --- the stage ---------------------------------------------------------------------------


def encode_run(run: Run, cfg: EncodeConfig | None = None, *, force: bool = False) -> dict[str, Any]:
    """Encode every requested modality of ``run``'s catalog; returns a summary dict.

    Writes ``embeddings/*`` atomically and records models, versions, counts and the catalog
    rows encoded under ``stages.encode`` in ``run.json``. With ``cfg.shard=(i, n)`` only
    rows ``r % n == i`` are encoded, into ``embeddings/shards/``; an unsharded run then
    merges the shards (encoding nothing that a shard already did). Co-occurrence is fitted
    by unsharded runs. A modality a trained content model reads is not re-encoded with
    another model unless ``force`` (``StaleArtifactError`` otherwise).
    """
    cfg = (cfg or EncodeConfig()).validate()
    catalog = run.load_catalog()
    tracks = list(catalog.tracks)
    n = len(tracks)
    rows_fp = fingerprint.ids_fingerprint(catalog.ids())
    edir = run.embeddings_dir
    edir.mkdir(parents=True, exist_ok=True)
    rows_all = list(range(n))
    if cfg.shard is not None:
        rows_all = [r for r in rows_all if r % cfg.shard[1] == cfg.shard[0]]
    summary: dict[str, Any] = {"run": str(run.path), "tracks": n, "modalities": {}}
    if cfg.shard:
        summary["shard"] = f"{cfg.shard[0]}/{cfg.shard[1]}"
    prior = run.stage("encode").get("modalities", {})
    wanted = [m for m in _STAGE_ORDER if m in cfg.modalities]
    fingerprint.guard_embeddings(run, {m: _model_name(m, cfg) for m in wanted if m != "cooccur"}, force)
    t_start = time.perf_counter()
    for modality in wanted:
        if modality == "cooccur":
            if cfg.shard is not None:
                continue
            entry = _encode_cooccur(run, catalog, cfg, prior.get("cooccur", {}))
            summary["modalities"]["cooccur"] = {**entry, "catalog": rows_fp}
            continue
        if modality == "tags":  # tag-less tracks borrow their musicnn top tags
            tracks = _with_audio_tags(tracks, audio_tags(run))
        enc = get_encoder(modality, cfg, run.cache_dir)
        keys = enc.keys(tracks)
        rows = rows_all
        if modality == "audio":
            sample = _sample_rows(tracks, cfg.audio_limit)
            keys = [k if i in sample else None for i, k in enumerate(keys)]
        cache = _RowCache()
        if not cfg.force:
            cache.load_outputs(edir, modality, enc.extra_names)
            cache.load_shards(edir, modality)
        tag = f"{cfg.shard[0]}-of-{cfg.shard[1]}" if cfg.shard else "all"
        res, stats = _encode_rows(enc, tracks, rows, keys, cache, n, _part_saver(edir, modality, keys, tag))
        present = int(res.mask.sum())
        entry = {**enc.info(), "dim": int(res.emb.shape[1]), **stats, "present": present,
                 "missing": n - present, "catalog": rows_fp}
        if modality == "audio":
            entry["sampled"] = sum(k is not None for k in keys)
            entry.pop("labels", None)
        if cfg.shard is not None:
            entry["shard_file"] = str(_write_shard(edir, modality, res, keys, rows, cfg.shard))
            _drop_parts(edir, modality, tag)
        else:
            _write_modality(edir, modality, res, keys)
            _drop_parts(edir, modality)  # every finished row is in the output now
            if modality == "audio":
                write_json_atomic(edir / "audio.tags.json",
                                  _audio_tags_json(enc, tracks, res, cfg.audio_top_tags))
            if modality == "tags":
                entry["from_audio"] = int(sum(1 for t, m in zip(tracks, res.mask, strict=True)
                                              if m and not t.tags and AUDIO_TAGS_KEY in t.extra))
        if modality == "audio" and stats.get("seconds") and stats.get("audio_seconds"):
            entry["audio_seconds_per_second"] = round(stats["audio_seconds"] / stats["seconds"], 2)
        summary["modalities"][modality] = entry
        log.info("%s: %d of %d tracks have embeddings (%d encoded, %d cached)", modality,
                 entry["present"], n, stats["encoded"], stats["cached"])
    summary["seconds"] = round(time.perf_counter() - t_start, 2)
    if cfg.shard is None:
        cfg_d = asdict(cfg)
        run.record("encode", {"config": cfg_d, "modalities": {**prior, **summary["modalities"]},
                              "tracks": n, "seconds": summary["seconds"]})
    return summary


def _model_name(modality: str, cfg: EncodeConfig) -> str:
    """The model name ``encode_run`` records for ``modality`` under ``cfg`` (no model loaded)."""
    return cfg.audio_model if modality == "audio" else cfg.text_model or DEFAULT_TEXT_MODEL


def _encode_cooccur(run: Run, catalog: Catalog, cfg: EncodeConfig, prior: dict[str, Any]) -> dict[str, Any]:
    edir = run.embeddings_dir
    # Fit on the training side only: held-out conversations' liked tracks and goal playlists
    # would put the test gold next to its seeds in the embedding (and so in the codes).
    held_out = run_split(run, catalog).test
    catalog = training_catalog(catalog, held_out)
    key = sessions_key(catalog, cfg.cooccur_conversations, cfg.cooccur_dim, cfg.seed)
    n = len(catalog)
    if (not cfg.force and prior.get("key") == key and (edir / "cooccur.npy").exists()
            and len(np.load(edir / "cooccur.mask.npy")) == n):
        return {**prior, "encoded": 0, "cached": int(prior.get("present", 0))}
    t0 = time.perf_counter()
    emb, mask, info = fit_cooccur(catalog, cfg.cooccur_dim, cfg.seed, cfg.cooccur_conversations)
    save_npy_atomic(edir / "cooccur.npy", emb)
    save_npy_atomic(edir / "cooccur.mask.npy", mask)
    present = int(mask.sum())
    log.info("cooccur: %d of %d tracks co-occur in %d sessions", present, n, info["sessions"])
    return {**info, "key": key, "present": present, "missing": n - present, "encoded": present, "cached": 0,
            "conversations_as_sessions": cfg.cooccur_conversations, "held_out_conversations": len(held_out),
            "seconds": round(time.perf_counter() - t0, 3)}


def encode_tracks(run: Run, tracks: list[Track], cfg: EncodeConfig | None = None
                  ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Embed new ``tracks`` with the run's encoders -> ``{modality: (emb, mask)}``; writes nothing.

    Uses the models and settings ``encode_run`` recorded (or ``cfg``); rows whose content
    key is already in the run's cache are reused. Co-occurrence is mask False for all of
    them (new tracks are in no playlist the embedding was fitted on).
    """
    stage = run.stage("encode")
    if cfg is None:
        c = dict(stage.get("config") or {})
        c.pop("shard", None)
        c.pop("device", None)  # a few new tracks: the CPU is fine and always there
        if "modalities" in c:
            c["modalities"] = tuple(c["modalities"])
        known = EncodeConfig.__dataclass_fields__
        cfg = EncodeConfig(**{k: v for k, v in c.items() if k in known})
    cfg = _no_limit(cfg).validate()
    present = [m for m in cfg.modalities if (run.embeddings_dir / f"{m}.npy").exists()]
    present = present or list(cfg.modalities)
    n = len(tracks)
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    tracks = list(tracks)
    new_tags: dict[str, list[list[Any]]] = {}
    for modality in [m for m in _STAGE_ORDER if m in present]:
        if modality == "cooccur":
            p = run.embeddings_dir / "cooccur.npy"
            d = int(np.load(p, mmap_mode="r").shape[1]) if p.exists() else cfg.cooccur_dim
            out["cooccur"] = (np.zeros((n, d), np.float32), np.zeros(n, bool))
            continue
        if modality == "tags":
            tracks = _with_audio_tags(tracks, {**audio_tags(run), **new_tags})
        enc = get_encoder(modality, cfg, run.cache_dir)
        keys = enc.keys(tracks)
        cache = _RowCache()
        cache.load_outputs(run.embeddings_dir, modality, enc.extra_names)
        res, _ = _encode_rows(enc, tracks, list(range(n)), keys, cache, n)
        if modality == "audio":
            new_tags = _audio_tags_json(enc, tracks, res, cfg.audio_top_tags)["tracks"]
        out[modality] = (res.emb, res.mask)
    return out


def _no_limit(cfg: EncodeConfig) -> EncodeConfig:
    c = copy.copy(cfg)
    c.audio_limit = None
    return c
