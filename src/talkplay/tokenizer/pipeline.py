"""Run-level entry points: ``tokenize_run(run, TokenizerConfig())`` and ``extend_run(run, tracks)``.

``tokenize_run`` reads ``embeddings/<modality>.npy`` (+ ``.mask.npy``) for the run's
catalog, fits the codebooks, assigns codes and writes ``tokenizer/``: ``tokenizer.npz``
(codebooks, codes, trie), ``config.json``, ``clusters.json`` (cluster descriptions),
``diagnostics.json`` and ``diagnostics.png``. ``extend_run`` gives new tracks codes with
the saved codebooks.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

import numpy as np

from talkplay import fingerprint
from talkplay.atomic import write_json_atomic
from talkplay.catalog import Track
from talkplay.encoders.pipeline import encode_tracks
from talkplay.errors import InputError
from talkplay.log import get_logger
from talkplay.modalities import DEFAULT_ORDER
from talkplay.run import Run
from talkplay.tokenizer import diagnostics as dg
from talkplay.tokenizer.core import Embeddings, MusicTokenizer, TokenizerConfig

log = get_logger(__name__)
DIAGNOSTICS_FILE = "diagnostics.json"
PLOT_FILE = "diagnostics.png"


def load_embeddings(run: Run, n_tracks: int) -> Embeddings:
    """``{modality: (embeddings, mask)}`` for every modality with a file under ``embeddings/``."""
    out: Embeddings = {}
    for m in DEFAULT_ORDER:
        path = run.embeddings_dir / f"{m}.npy"
        if not path.exists():
            continue
        try:
            x = np.load(path, mmap_mode="r")
        except (ValueError, OSError) as e:
            raise InputError(f"cannot read embeddings: {e}", file=str(path)) from None
        mask_path = run.embeddings_dir / f"{m}.mask.npy"
        if mask_path.exists():
            mask = np.load(mask_path).astype(bool)
        else:
            log.warning("%s has no mask file; every row is taken as present", path.name)
            mask = np.ones(len(x), bool)
        if x.ndim != 2 or len(x) != n_tracks:
            raise InputError(f"has shape {x.shape}, expected ({n_tracks}, dim) for the catalog's tracks; "
                             "re-run `talkplay encode`", file=str(path))
        if mask.shape != (n_tracks,):
            raise InputError(f"has shape {mask.shape}, expected ({n_tracks},)", file=str(mask_path))
        out[m] = (x, mask)
    return out


def tokenize_run(run: Run, cfg: TokenizerConfig | None = None, *, force: bool = False) -> dict[str, Any]:
    """Fit the music tokenizer for a run and save it; returns the diagnostics dict.

    When a trained music-token model depends on the tokenizer there and the new fit gives
    tracks other codes, nothing is written and ``StaleArtifactError`` says so, unless
    ``force``. ``run.json`` records the embeddings and catalog the fit read.
    """
    cfg = cfg or TokenizerConfig()
    cfg.validate()
    t0 = time.perf_counter()
    catalog = run.load_catalog()
    embeddings = load_embeddings(run, len(catalog))
    if not embeddings:
        raise InputError("no embeddings found; run `talkplay encode` first", file=str(run.embeddings_dir))
    fingerprint.check_embeddings_current(run, list(embeddings), catalog.ids())
    tok = MusicTokenizer.fit(catalog.ids(), embeddings, cfg)
    fingerprint.guard_tokenizer(run, tok, force)
    fit_s = time.perf_counter() - t0
    tok.descriptions = dg.describe_clusters(tok, catalog, tok.fit_distances)
    diag = dg.diagnose(tok, catalog, seed=cfg.seed)
    diag["seconds"] = {"fit_and_assign": round(fit_s, 3), "total": round(time.perf_counter() - t0, 3)}
    out_dir = run.tokenizer_dir
    tok.save(out_dir)
    write_json_atomic(out_dir / DIAGNOSTICS_FILE, diag)
    dg.plot(tok, diag, out_dir / PLOT_FILE)
    diag["plot"] = str(out_dir / PLOT_FILE)
    run.record("tokenize", {
        "config": asdict(cfg), "modalities": tok.modalities,
        "clusters": {m: len(tok.codebooks[m][0]) for m in tok.modalities},
        "tracks": diag["tracks"], "collision_rate": diag["collision_rate"],
        "vocab_size": diag["vocab_size"], "sequence_length": tok.length, "seconds": diag["seconds"],
        "inputs": {"embeddings": fingerprint.embeddings_fingerprint(run, tok.modalities),
                   "catalog": fingerprint.catalog_fingerprint(catalog)}})
    log.info("tokenized %d tracks into %d-token sequences (%d music tokens)",
             diag["tracks"], tok.length, diag["vocab_size"])
    return diag


def extend_run(run: Run, tracks: list[Track], embeddings: Embeddings | None = None) -> dict[str, Any]:
    """Give ``tracks`` music tokens with the run's saved codebooks; save the tokenizer.

    Embeds them with ``talkplay.encoders.encode_tracks`` unless ``embeddings`` (modality ->
    (array, mask), one row per track) is given. Tracks that already have codes keep them;
    no existing code changes and no token is added. Returns ``{"added", "skipped",
    "tracks", "unknown": {modality: count}}``. Raises ``StaleArtifactError`` when the run's
    embeddings changed model or size since the tokenizer was fitted.
    """
    fingerprint.check_tokenizer_inputs(run)
    tok = MusicTokenizer.load(run.tokenizer_dir)
    fresh = [t for t in tracks if t.id not in tok.index]
    summary: dict[str, Any] = {"added": 0, "skipped": len(tracks) - len(fresh), "tracks": len(tok.track_ids),
                               "unknown": {}}
    if not fresh:
        return summary
    if embeddings is None:
        embeddings = encode_tracks(run, fresh)
    else:
        keep = np.array([t.id not in tok.index for t in tracks])
        embeddings = {m: (np.asarray(x)[keep], np.asarray(mk)[keep]) for m, (x, mk) in embeddings.items()}
    for m in tok.modalities:
        present = embeddings.get(m, (None, np.zeros(len(fresh), bool)))[1]
        summary["unknown"][m] = int(len(fresh) - np.asarray(present, bool).sum())
    before = len(tok.track_ids)
    added = tok.encode_new([t.id for t in fresh], embeddings)
    tok.save(run.tokenizer_dir)
    summary.update(added=len(added), tracks=len(tok.track_ids))
    info = run.stage("tokenize")
    run.record("tokenize", {"extended_tracks": int(info.get("extended_tracks", 0)) + len(added)})
    log.info("gave %d new tracks music tokens (%d before)", len(added), before)
    return summary
