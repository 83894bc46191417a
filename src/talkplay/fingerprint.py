"""What each artifact of a run was built from, and the checks that refuse stale ones.

Call ``check_model(run)`` before using ``run/model`` (``Engine.load`` does), and the other
``check_*`` functions before a stage reads an artifact; ``guard_*(run, ..., force=False)``
before a stage overwrites one a trained model depends on. Problems raise
``StaleArtifactError`` naming what changed and the command to re-run.

A fingerprint is a small JSON-safe dict, recorded by the stage that builds the artifact:

- catalog: track ids (in order), conversation ids, playlist ids, hashed. Tracks added at
  the end (``talkplay catalog add``) keep every earlier fingerprint valid: checks compare
  the first ``tracks`` ids only.
- embeddings, per modality: the model's name and the dimension (``embeddings_fingerprint``);
  ``encode`` also records, per modality, which catalog rows the file holds.
- tokenizer: a hash of the codebooks and of the codes of the first ``tracks`` tracks, so
  giving new tracks codes (``catalog add``) leaves it valid and a refit does not.
- dialogs: a hash of ``dialogs/train.jsonl``, the conversations a model trains on (and so
  the ones ``eval`` must not score it on).

Where they live: ``run.json`` ``stages.encode.modalities.<m>.catalog``,
``stages.tokenize.inputs`` and ``stages.dialogs.inputs``; the model's own record,
``model/talkplay.json``, holds ``model_id`` and ``inputs`` (tokenizer or embeddings, and
dialogs), written with the weights in one rename. A model trained before these records
existed loads with a warning: nothing can be checked for it.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterable
from typing import Any

import numpy as np

from talkplay.errors import StaleArtifactError
from talkplay.log import get_logger
from talkplay.modalities import DEFAULT_ORDER
from talkplay.run import Run

log = get_logger(__name__)
MODEL_META = "talkplay.json"
TEXT_MODALITIES = ("metadata", "tags", "lyrics")
_warned: set[str] = set()  # runs already warned about a model without records (once per process)


def digest(parts: Iterable[str | bytes]) -> str:
    """A short sha256 of ``parts`` (strings or bytes), each ended by a NUL."""
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode() if isinstance(p, str) else p)
        h.update(b"\x00")
    return h.hexdigest()[:16]


# --- fingerprints ------------------------------------------------------------------------------


def ids_fingerprint(ids: list[str]) -> dict[str, Any]:
    """``{"tracks": n, "track_ids": hash}`` of track ids in catalog order."""
    return {"tracks": len(ids), "track_ids": digest(ids)}


def catalog_fingerprint(catalog: Any) -> dict[str, Any]:
    """Track ids (in order), conversation ids and playlist ids of a ``Catalog``, hashed."""
    return {**ids_fingerprint(catalog.ids()),
            "conversations": digest(c.id for c in catalog.conversations),
            "playlists": digest(p.id for p in catalog.playlists)}


def embeddings_fingerprint(run: Run, modalities: Iterable[str] | None = None) -> dict[str, dict[str, Any]]:
    """``{modality: {"model": name or None, "dim": d}}`` of the embeddings files in ``run`` now."""
    info = run.stage("encode").get("modalities", {})
    out = {}
    for m in modalities or DEFAULT_ORDER:
        path = run.embeddings_dir / f"{m}.npy"
        if not path.exists():
            continue
        shape = np.load(path, mmap_mode="r").shape
        out[m] = {"model": info.get(m, {}).get("model"), "dim": int(shape[1]) if len(shape) == 2 else None}
    return out


def tokenizer_fingerprint(tok: Any, tracks: int | None = None) -> dict[str, Any]:
    """Codebooks and the codes of the first ``tracks`` tracks (default: all) of a ``MusicTokenizer``."""
    n = len(tok.track_ids) if tracks is None else tracks
    books = [f"{m}:{lvl}:{cb.dtype}:{cb.shape}".encode() + np.ascontiguousarray(cb).tobytes()
             for m in tok.modalities for lvl, cb in enumerate(tok.codebooks[m])]
    codes = np.ascontiguousarray(tok.codes[:n]).tobytes()
    return {"codebooks": digest([f"dup:{tok.n_dup}", *books]), "tracks": n,
            "codes": digest([*tok.track_ids[:n], codes])}


def dialogs_fingerprint(run: Run) -> dict[str, Any]:
    """``{"train": hash}`` of ``dialogs/train.jsonl`` (None when there is none)."""
    path = run.dialogs_dir / "train.jsonl"
    return {"train": digest([path.read_bytes()]) if path.exists() else None}


def text_fingerprint(text: str) -> str:
    """The hash ``dialogs_fingerprint`` gives a file holding exactly ``text``."""
    return digest([text.encode("utf-8")])


# --- what a trained model records --------------------------------------------------------------


def model_record(run: Run, music: Any = None, modalities: Iterable[str] | None = None) -> dict[str, Any]:
    """``{"model_id", "inputs"}`` for ``model/talkplay.json``: a codes model passes its
    ``MusicTokenizer`` as ``music``, a content model the ``modalities`` its rows read."""
    inputs: dict[str, Any] = {"dialogs": dialogs_fingerprint(run)}
    if music is not None:
        inputs["tokenizer"] = tokenizer_fingerprint(music)
    if modalities is not None:
        inputs["embeddings"] = embeddings_fingerprint(run, modalities)
    return {"model_id": uuid.uuid4().hex[:16], "inputs": inputs}


def model_meta(run: Run) -> dict[str, Any] | None:
    """``model/talkplay.json`` (None when the run has no trained model)."""
    path = run.model_dir / MODEL_META
    if not (run.model_dir / "config.json").exists() or not path.exists():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def model_inputs(run: Run) -> dict[str, Any] | None:
    """What the run's model was trained on, or None (no model, or one older than these records)."""
    meta = model_meta(run)
    return None if meta is None else meta.get("inputs")


# --- comparisons -------------------------------------------------------------------------------


def tracks_changed(recorded: dict[str, Any], ids: list[str]) -> str | None:
    """Why ``ids`` no longer start with the ``recorded`` tracks, or None (tracks appended is fine)."""
    n = int(recorded.get("tracks", 0))
    if len(ids) < n:
        return f"it had {n} tracks and now has {len(ids)}"
    if digest(ids[:n]) != recorded.get("track_ids"):
        return f"tracks among its first {n} were replaced, removed or reordered"
    return None


def tokenizer_changes(recorded: dict[str, Any], tok: Any) -> list[str]:
    """How ``tok`` differs from the ``recorded`` tokenizer fingerprint (empty: same meaning)."""
    n = int(recorded.get("tracks", 0))
    if len(tok.track_ids) < n:
        return [f"it gives codes to {len(tok.track_ids)} tracks, fewer than the {n} the model learnt"]
    now = tokenizer_fingerprint(tok, n)
    if now["codebooks"] != recorded.get("codebooks"):
        return ["its codebooks were refitted, so every music token now means other tracks"]
    if now["codes"] != recorded.get("codes"):
        return ["the codes of tracks the model learnt changed"]
    return []


def embeddings_changes(recorded: dict[str, dict[str, Any]], now: dict[str, dict[str, Any]]) -> list[str]:
    """How the embeddings ``now`` differ from ``recorded`` ones, per modality (empty: the same)."""
    out = []
    for m, rec in recorded.items():
        cur = now.get(m)
        if cur is None:
            out.append(f"{m} embeddings ({m}.npy) are gone")
        elif rec.get("dim") != cur.get("dim"):
            out.append(f"{m} embeddings ({m}.npy) are {cur.get('dim')}-d, they were {rec.get('dim')}-d")
        elif rec.get("model") and cur.get("model") and rec["model"] != cur["model"]:
            out.append(f"{m} embeddings ({m}.npy) come from {cur['model']}, they came from {rec['model']}")
    return out


def encode_hint(run: Run, recorded: dict[str, dict[str, Any]]) -> str:
    """The ``talkplay encode`` command that would bring back ``recorded`` text embeddings."""
    text = {rec.get("model") for m, rec in recorded.items() if m in TEXT_MODALITIES and rec.get("model")}
    opt = f" --text-model {text.pop()} --force" if len(text) == 1 else ""
    return f"`talkplay encode {run.path}{opt}`"


# --- checks a stage runs before reading -------------------------------------------------------


def warn_unrecorded(run: Run) -> None:
    """Warn (once per run and process) that the model predates these records."""
    key = str(run.path.resolve())
    if key not in _warned:
        _warned.add(key)
        log.warning("%s records nothing of what it was trained on (trained by an older version), so "
                    "whether the tokenizer, embeddings and dialogs still match it cannot be checked; "
                    "retrain with `talkplay train %s` to record them", run.model_dir / MODEL_META, run.path)


def check_model(run: Run, music: Any = None, for_eval: bool = False) -> None:
    """Raise ``StaleArtifactError`` if the artifacts ``run/model`` was trained on changed since.

    A codes model needs the same tokenizer (``music``: the run's ``MusicTokenizer``, None
    when it has none); a content model the same embedding models and dimensions (new tracks are
    fine, their rows come from their content). ``for_eval``: the training dialogs must be
    the ones the model learnt too, or the held-out split may hold its training data.
    """
    meta = model_meta(run)
    if meta is None:
        return
    inputs = meta.get("inputs")
    if inputs is None:
        warn_unrecorded(run)
        return
    problems: list[tuple[str, str]] = []  # (what changed, how to fix it)
    retrain = f"retrain with `talkplay train {run.path}`"
    if "tokenizer" in inputs and music is None:  # the caller loads it: it knows the tokenizer class
        problems.append((f"{run.tokenizer_dir} holds no tokenizer", f"{retrain}, or restore the tokenizer"))
    elif "tokenizer" in inputs:
        for why in tokenizer_changes(inputs["tokenizer"], music):
            problems.append((f"{run.tokenizer_dir} changed since the model was trained: {why}",
                             f"{retrain}, or restore the tokenizer it was trained with"))
    if "embeddings" in inputs:
        recorded = inputs["embeddings"]
        for why in embeddings_changes(recorded, embeddings_fingerprint(run, recorded)):
            problems.append((f"{run.embeddings_dir} changed since the model was trained: {why}",
                             f"re-encode as it was ({encode_hint(run, recorded)}) or {retrain}"))
    if for_eval and inputs.get("dialogs", {}).get("train") != dialogs_fingerprint(run)["train"]:
        problems.append((f"{run.dialogs_dir / 'train.jsonl'} changed since the model was trained, "
                         "so the held-out conversations may include ones it trained on", retrain))
    if problems:
        fixes = list(dict.fromkeys(fix for _, fix in problems))
        raise StaleArtifactError(f"{run.model_dir} is stale: " + "; ".join(w for w, _ in problems)
                                 + ". To fix: " + "; ".join(fixes), artifact=str(run.model_dir))
    if "embeddings" in inputs:
        check_embeddings_current(run, list(inputs["embeddings"]))


def check_embeddings_current(run: Run, modalities: Iterable[str] | None = None,
                             ids: list[str] | None = None) -> None:
    """Raise ``StaleArtifactError`` when an embeddings file was computed for other catalog rows
    than the catalog's tracks now (``talkplay catalog add`` without ``talkplay encode``)."""
    info = run.stage("encode").get("modalities", {})
    if ids is None:
        ids = run.load_catalog(validate=False).ids()
    now = digest(ids)
    for m in modalities or DEFAULT_ORDER:
        rec = info.get(m, {}).get("catalog")
        if rec is None or not (run.embeddings_dir / f"{m}.npy").exists() or rec.get("track_ids") == now:
            continue
        grown = len(ids) > rec["tracks"] and tracks_changed(rec, ids) is None
        why = (f"{len(ids) - rec['tracks']} track(s) were added since" if grown else
               f"the catalog changed since ({tracks_changed(rec, ids) or 'its tracks differ'})")
        raise StaleArtifactError(f"{run.embeddings_dir / f'{m}.npy'} holds the {rec['tracks']} "
                                 f"tracks the catalog had when it was encoded; {why}. Run "
                                 f"`talkplay encode {run.path}` (only new rows are computed)",
                                 artifact=str(run.embeddings_dir / f"{m}.npy"))


def check_tokenizer_inputs(run: Run) -> None:
    """Raise ``StaleArtifactError`` when the embeddings changed model or size since the
    tokenizer was fitted on them (new tracks would get codes from another space)."""
    recorded = run.stage("tokenize").get("inputs", {}).get("embeddings")
    if not recorded or not (run.tokenizer_dir / "tokenizer.npz").exists():
        return
    changes = embeddings_changes(recorded, embeddings_fingerprint(run, recorded))
    if changes:
        raise StaleArtifactError(f"{run.tokenizer_dir} was fitted on other embeddings: {'; '.join(changes)}. "
                                 f"Run `talkplay tokenize {run.path}` (and then `talkplay train`), or "
                                 f"re-encode as it was ({encode_hint(run, recorded)})",
                                 artifact=str(run.tokenizer_dir))


def check_dialogs_inputs(run: Run, catalog: Any = None) -> None:
    """Raise ``StaleArtifactError`` when the catalog lost tracks or its conversations changed
    since ``talkplay dialogs`` built the training conversations from it."""
    recorded = run.stage("dialogs").get("inputs", {}).get("catalog")
    if not recorded or not (run.dialogs_dir / "train.jsonl").exists():
        return
    catalog = catalog if catalog is not None else run.load_catalog(validate=False)
    why = tracks_changed(recorded, catalog.ids())
    if why is None and recorded.get("conversations") != catalog_fingerprint(catalog)["conversations"]:
        why = "its conversations changed"
    if why:
        raise StaleArtifactError(f"{run.dialogs_dir} was built from an older catalog ({why}); run "
                                 f"`talkplay dialogs {run.path}`", artifact=str(run.dialogs_dir))


# --- guards a stage runs before overwriting ---------------------------------------------------


def _refuse(what: str, run: Run, force_hint: str) -> None:
    raise StaleArtifactError(f"{run.model_dir} was trained on {what}; {force_hint} Pass --force to do it "
                             f"anyway, then retrain with `talkplay train {run.path}`",
                             artifact=str(run.model_dir))


def guard_tokenizer(run: Run, new: Any, force: bool = False) -> None:
    """Refuse to replace the tokenizer of a codes model with ``new`` when that changes what
    its music tokens mean (unless ``force``). A refit giving the same codes passes.
    ``new`` is a ``MusicTokenizer``; the one on disk is read with its class's ``load``."""
    meta = model_meta(run)
    if force or meta is None or meta.get("track_repr", "codes") != "codes":
        return
    recorded = (meta.get("inputs") or {}).get("tokenizer")
    if recorded is None:  # an older model: it was trained on the tokenizer there now, if any
        if not (run.tokenizer_dir / "tokenizer.npz").exists():
            return
        recorded = tokenizer_fingerprint(type(new).load(run.tokenizer_dir))
    elif (run.tokenizer_dir / "tokenizer.npz").exists():
        if tokenizer_changes(recorded, type(new).load(run.tokenizer_dir)):
            return  # already stale: nothing the model depends on is lost
    if tokenizer_changes(recorded, new):
        _refuse(f"the music tokens in {run.tokenizer_dir}", run,
                "the new fit gives tracks other tokens, so the model would recommend the wrong tracks.")


def guard_dialogs(run: Run, train_text: str, force: bool = False) -> None:
    """Refuse to replace ``dialogs/train.jsonl`` a trained model learnt from by different
    conversations (``train_text``, the new file's content) unless ``force``."""
    meta = model_meta(run)
    path = run.dialogs_dir / "train.jsonl"
    if force or meta is None or not path.exists():
        return
    current = dialogs_fingerprint(run)["train"]
    recorded = (meta.get("inputs") or {}).get("dialogs", {}).get("train", current)
    if recorded == current and text_fingerprint(train_text) != current:
        _refuse(f"the conversations in {path}", run,
                "new dialogs change the held-out split, so `talkplay eval` could score it on conversations "
                "it trained on.")


def guard_embeddings(run: Run, models: dict[str, str], force: bool = False) -> None:
    """Refuse to re-encode a modality a content model reads with another model (``models``:
    modality -> the model name this encode would use) unless ``force``. Same models pass:
    encoding added tracks is how they become recommendable."""
    recorded = (model_inputs(run) or {}).get("embeddings")
    if force or not recorded:
        return
    now = embeddings_fingerprint(run, recorded)
    for m, name in models.items():
        rec = recorded.get(m, {}).get("model")
        if rec and name != rec and now.get(m, {}).get("model") == rec:
            _refuse(f"{m} embeddings from {rec}", run,
                    f"encoding them with {name} would change every track's row.")
