"""The record a content model keeps beside its weights, ``model/talkplay.json``, declared once.

``meta = ContentMeta.read(run.model_dir)`` reads it (a key a model saved before that field
existed reads as the value such models were trained with); ``meta.render_config(catalog)``
is how that model renders a conversation, as ``render_config(catalog, max_length, cards,
cards_history)`` is for a model about to be trained. The trainer writes the same keys
(``talkplay.tracks.train``), with the fingerprint's ``model_id`` and ``inputs``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from talkplay.cards import Cards
from talkplay.catalog import Catalog
from talkplay.dialogs.render import RenderConfig
from talkplay.fingerprint import MODEL_META


def render_config(catalog: Catalog, max_length: int | None, cards: bool, cards_history: bool) -> RenderConfig:
    """How a content model renders a conversation: cards after its tracks when it has them."""
    return RenderConfig(max_length=max_length, cards=Cards(catalog) if cards else None,
                        cards_history=cards_history)


@dataclass
class ContentMeta:
    """The keys of a content model's ``talkplay.json``; see the module docstring."""

    base_model: str
    track_repr: str = "content"
    init: str = ""
    lora: bool = False
    kept_layers: int | None = None
    exit_layer: int | None = None  # the layer the track head reads (None: the last)
    steps: int = 0
    text_model: str | None = None  # the text encoder of requests (None: the default one)
    features: str = ""  # fingerprint of the track features the rows were trained on
    n_tracks: int = 0
    max_length: int | None = None
    reply_tracks: int | None = None  # tracks written before the reply (None: all k)
    cards: bool = False  # models trained before cards have none
    cards_history: bool = True  # models trained before cards_history wrote cards after every answer
    model_id: str = ""
    inputs: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def read(cls, model_dir: str | Path) -> ContentMeta:
        """``model_dir/talkplay.json`` as a record (keys it does not declare are ignored)."""
        data = json.loads((Path(model_dir) / MODEL_META).read_text(encoding="utf-8"))
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def render_config(self, catalog: Catalog) -> RenderConfig:
        """How this model renders a conversation (``render_config``)."""
        return render_config(catalog, self.max_length, bool(self.cards), self.cards_history)
