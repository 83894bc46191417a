"""What the catalog knows about each track, as the arrays the track-row network reads.

``feats = TrackFeatures.from_run(run)`` loads every modality ``talkplay encode`` wrote
(``embeddings/<modality>.npy`` and its mask), one row per catalog track in catalog order.
With ``words=True`` (or a trained model's ``dims`` naming ``words``) the features also hold
the ``words`` modality: each track's own words as a vector (``talkplay.tracks.words``),
computed from the catalog at load time, so a track added later has it at once;
``feats.requests(dense, texts)`` appends the same kind of vector of each request to its
text-encoder embedding. ``TrackSlots(feats.ids)`` is the stand-in music tokenizer the
renderer needs: every track is written ``<|music|><|track|><|/music|>``, one position
whose embedding is the track's row.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import torch

from talkplay.catalog import track_document
from talkplay.errors import InputError
from talkplay.log import get_logger
from talkplay.modalities import DEFAULT_ORDER, TRACK_SLOT
from talkplay.run import Run
from talkplay.tracks.words import DIM, WORDS, WordVectors

log = get_logger(__name__)


@dataclass
class TrackFeatures:
    """Per-modality embeddings and masks of every catalog track (catalog order)."""

    ids: list[str]
    arrays: dict[str, np.ndarray]
    masks: dict[str, np.ndarray]
    text_model: str | None = None  # the text encoder behind metadata, tags and lyrics
    text_modalities: list[str] = field(default_factory=list)
    words: WordVectors | None = None  # the request side of the ``words`` modality
    # a trained model's weights of request words (``talkplay.tracks.words.word_weights``;
    # None: every word at full weight, as the untrained network and models saved before)
    word_weights: dict[str, float] | None = None

    @classmethod
    def from_run(cls, run: Run, dims: dict[str, int] | None = None,
                 modalities: list[str] | None = None, words: bool = False) -> TrackFeatures:
        """Load the run's embeddings; with ``dims`` (a trained model's), check they still fit it.

        ``modalities`` limits which are read (default: every modality some track has);
        ``words`` adds the catalog's words (implied by ``dims`` that name them).

        Raises ``InputError`` naming the file and the command to re-run when an embedding
        file does not cover the catalog or a modality changed dimension since training.
        """
        catalog = run.load_catalog(validate=False)
        ids = catalog.ids()
        info = run.stage("encode").get("modalities", {})
        words = WORDS in dims if dims is not None else words
        # a modality no track has teaches nothing; a trained model names its own
        wanted = [m for m in dims if m != WORDS] if dims is not None else [
            m for m in DEFAULT_ORDER if (run.embeddings_dir / f"{m}.mask.npy").exists()
            and np.load(run.embeddings_dir / f"{m}.mask.npy").any()
            and (modalities is None or m in modalities)]
        arrays, masks = {}, {}
        for m in wanted:
            path = run.embeddings_dir / f"{m}.npy"
            if not path.exists():
                raise InputError(f"the model was trained with {m} embeddings but the run has none; "
                                 f"run `talkplay encode {run.path} --modalities {m}`", file=str(path))
            emb = np.load(path, mmap_mode="r")
            mask = np.load(run.embeddings_dir / f"{m}.mask.npy")
            if emb.shape[0] != len(ids) or mask.shape[0] != len(ids):
                raise InputError(f"{emb.shape[0]} rows for {len(ids)} catalog tracks; "
                                 f"run `talkplay encode {run.path}`", file=str(path), field=m)
            if dims is not None and emb.shape[1] != dims[m]:
                raise InputError(f"{m} embeddings are {emb.shape[1]}-d but the model was trained on "
                                 f"{dims[m]}-d ones; re-encode with the model's settings or retrain "
                                 f"(`talkplay train {run.path}`)", file=str(path), field=m)
            arr = np.nan_to_num(np.asarray(emb, dtype=np.float32))
            arrays[m] = arr
            masks[m] = np.asarray(mask, dtype=bool) & np.isfinite(np.asarray(emb)).all(1)
        text_model = next((info[m].get("model") for m in ("metadata", "tags", "lyrics")
                           if m in info and info[m].get("model")), None)
        text = [m for m in arrays
                if m in ("metadata", "tags", "lyrics") and info.get(m, {}).get("model") == text_model]
        vectors = None
        if words:
            docs = [track_document(t) for t in catalog.tracks]
            vectors = WordVectors.fit(docs, dim=dims[WORDS] if dims is not None else DIM)
            arrays[WORDS] = vectors.encode(docs)
            masks[WORDS] = np.abs(arrays[WORDS]).sum(1) > 0
            text.append(WORDS)
        feats = cls(ids, arrays, masks, text_model, text, vectors)
        empty = feats.empty()
        if empty:
            shown = ", ".join(empty[:5]) + (" ..." if len(empty) > 5 else "")
            log.warning("%d track(s) have no content at all and get the 'missing' row: %s", len(empty), shown)
        return feats

    def requests(self, dense: np.ndarray, texts: list[str], current: np.ndarray | None = None,
                 current_texts: list[str] | None = None) -> np.ndarray:
        """What the model reads of each request (``TrackNet.request_dim`` wide): its text-encoder
        embedding ``dense``, followed by the words vector of the same text (weighed by
        ``word_weights``) when the features have words; then ``current``, the text embedding of
        each turn's own message, for a net that reads it (``TrackNet.reads_current``), and the
        words of ``current_texts``, that message, for a net with a current gain."""
        def words(t: list[str]) -> list[np.ndarray]:
            return [self.words.encode(t, self.word_weights)] if self.words is not None else []

        parts = [dense, *words(texts)]
        if current is not None:
            parts.append(current)
        if current_texts is not None:
            parts += words(current_texts)
        return np.hstack(parts).astype(np.float32)

    @property
    def dims(self) -> dict[str, int]:
        return {m: int(a.shape[1]) for m, a in self.arrays.items()}

    def empty(self) -> list[str]:
        """Ids of tracks that have no modality at all."""
        if not self.masks:
            return list(self.ids)
        have = np.logical_or.reduce([m for m in self.masks.values()])
        return [self.ids[i] for i in np.flatnonzero(~have)]

    def tensors(self, device: torch.device | str = "cpu") -> tuple[
            dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """``(arrays, masks)`` as torch tensors on ``device``."""
        return ({m: torch.from_numpy(a).to(device) for m, a in self.arrays.items()},
                {m: torch.from_numpy(k).to(device) for m, k in self.masks.items()})

    def fingerprint(self) -> str:
        """A short hash of the ids, dimensions and masks: changes when the catalog or encoding does."""
        h = hashlib.sha256("\n".join(self.ids).encode())
        for m in sorted(self.arrays):
            h.update(f"{m}:{self.arrays[m].shape}".encode())
            h.update(np.packbits(self.masks[m]).tobytes())
        return h.hexdigest()[:16]


class TrackSlots:
    """The music-tokenizer contract for content-grounded tracks: ``TrackSlots(ids)``.

    Every track's "tokens" are the single slot ``<|track|>``; which track a slot stands for
    travels beside the ids (``Rendered.blocks``), and its embedding is the track's row.
    """

    vocab = [TRACK_SLOT]
    length = 1

    def __init__(self, track_ids: list[str]) -> None:
        self.track_ids = list(track_ids)
        self.index = {t: i for i, t in enumerate(self.track_ids)}

    def track_tokens(self, track_id: str) -> list[str]:
        if track_id not in self.index:
            raise KeyError(f"track {track_id!r} is not in the catalog; add it with `talkplay catalog add`")
        return [TRACK_SLOT]

    def describe(self, token: str) -> str:
        return "a music track from the catalog"
