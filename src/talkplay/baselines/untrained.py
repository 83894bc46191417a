"""The untrained start: the track network as training begins, read without the LM.

``rec = UntrainedRecommender(); rec.fit(run); rec.recommend(conversation, k=10)``.

What training starts from, scored like a baseline so every report shows what learning
adds: the run's model's ``TrackNetConfig`` (``run/model/tracks.json``; without a model, the
training defaults) freshly initialised (``TrackNet.create`` is deterministic in its seed,
so these are the very weights step 0 had), the request and the conversation's tracks
through its projections exactly as the model builds them at ``<|music|>``, and the head's
read-out scored against the rows, with the LM taken as passing the injected vector through
unchanged. Nothing here learns: a trained model that ranks below this row has lost, in
training, what its initialisation knew.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import torch

from talkplay.baselines.base import CatalogRecommender
from talkplay.catalog import Catalog, Conversation
from talkplay.errors import InputError
from talkplay.run import Run
from talkplay.tracks.data import context_rows, current_text, query_text
from talkplay.tracks.features import TrackFeatures

# the width of the default base LM (SmolLM2-135M); without a model the start is built at it.
# Text rows and requests share one isometric subspace, so the ranking barely depends on it.
DEFAULT_HIDDEN = 576


def start_config(run: Run, features: TrackFeatures, query_dim: int) -> Any:
    """The ``TrackNetConfig`` training starts from: the run's model's, else the defaults'."""
    from talkplay.tracks.network import TrackNetConfig
    from talkplay.train_config import TrainConfig

    saved = run.model_dir / "tracks.json"
    if saved.exists():
        return TrackNetConfig(**json.loads(saved.read_text()))
    d = TrainConfig()
    return TrackNetConfig(dims=features.dims, hidden=DEFAULT_HIDDEN, query_dim=query_dim,
                          text_modalities=features.text_modalities, seed=d.seed, unit_query=True,
                          context=d.context, words_gain=d.words_gain, current=d.current)


class UntrainedRecommender(CatalogRecommender):
    """The freshly initialised track network without the LM (see the module docstring).

    ``config``: a ``TrackNetConfig`` to start from instead of the run's (for probes that
    sweep the initial values); ``modalities``: which of the run's embeddings rows read when
    there is no model (default: the training default's).
    """

    name = "untrained"

    def __init__(self, seed: int = 0, config: Any = None, modalities: list[str] | None = None) -> None:
        super().__init__(seed)
        self.config, self.modalities = config, modalities

    def _fit(self, catalog: Catalog, train: list[Conversation], run: Run | None) -> None:
        from talkplay.encoders.text import TextEncoder
        from talkplay.tracks.network import TrackNet
        from talkplay.train_config import TrainConfig

        if run is None:
            raise InputError("the untrained start reads a run's embeddings; fit it with fit(run)",
                             field="--systems")
        saved = run.model_dir / "tracks.json"
        dims = (self.config.dims if self.config is not None
                else json.loads(saved.read_text())["dims"] if saved.exists() else None)
        if dims is None:
            d = TrainConfig()
            mods = self.modalities or (d.modalities.split(",") if d.modalities else None)
            self.features = TrackFeatures.from_run(run, modalities=mods, words=d.words)
        else:
            self.features = TrackFeatures.from_run(run, dims=dims)
        if not self.features.arrays:
            raise InputError(f"no embeddings in {run.embeddings_dir}; run `talkplay encode {run.path}` "
                             "first (the untrained start reads them)", field="--systems")
        self.encoder = TextEncoder(self.features.text_model)
        cfg = self.config or start_config(run, self.features, self.encoder.dim)
        self.net = TrackNet.create(cfg).eval()
        with torch.no_grad():
            self.rows = torch.nn.functional.normalize(self.net.rows(*self.features.tensors()), dim=-1)
        self.encoded: dict[str, np.ndarray] = {}

    def _texts(self, conversation: Conversation) -> list[str]:
        turn = len(conversation.turns) - 1
        text = query_text(conversation, turn)
        return [text, current_text(conversation, turn)] if self.net.reads_current else [text]

    def prefetch(self, conversations: list[Conversation]) -> None:
        """Encode every request in one batch (what ``scores`` would encode one by one)."""
        texts = list(dict.fromkeys(t for c in conversations if c.turns for t in self._texts(c)))
        texts = [t for t in texts if t not in self.encoded]
        if texts:
            self.encoded.update(zip(texts, self.encoder.encode(texts), strict=True))

    @torch.no_grad()
    def scores(self, conversation: Conversation) -> np.ndarray:
        if not conversation.turns:  # nothing asked: every track alike (ties go by popularity)
            return np.zeros(len(self.ids), dtype=np.float32)
        net, turn = self.net, len(conversation.turns) - 1
        texts = self._texts(conversation)
        self.prefetch([conversation])
        dense = np.stack([self.encoded[t] for t in texts])
        request = self.features.requests(dense[:1], texts[:1], dense[1:] if net.reads_current else None,
                                         texts[1:] if net.current_gain is not None else None)
        ctx = context_rows(conversation, turn, self.index, net.cfg.context_decay)
        context = None
        if ctx and net.context_in is not None:
            rows, weights = zip(*ctx, strict=True)
            context = net.context(self.rows, 1, torch.zeros(len(rows), dtype=torch.long),
                                  torch.tensor(rows), torch.tensor(weights, dtype=torch.float32))
        q = net.query(torch.from_numpy(request), context)
        u = torch.nn.functional.normalize(net.readout(q), dim=-1)
        return (self.rows @ u[0]).numpy()

