"""What every engine offers, and the one way to load a run's.

``engine = Engine.load("runs/demo")`` picks the engine for the representation the run's
model was trained with (``track_repr`` in ``model/talkplay.json``): ``ContentEngine``
(``talkplay.engine.content``, the default) or ``CodesEngine`` (``talkplay.codes.engine``,
kept for comparison), imported only when a run needs it. Both are ``Engine``s: what serve,
eval and chat call (``recommend``, ``respond``, ``stream_respond``, ``catalog``,
``guards_replies``, ``last_method``), answering with the result types below.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch

from talkplay.catalog import Catalog, Conversation
from talkplay.errors import InputError, TalkPlayError
from talkplay.run import Run

# the engine class for each representation, as (module, class): imported on first load, so
# loading a content model never imports the codes path
ENGINES = {"content": ("talkplay.engine.content", "ContentEngine"),
           "codes": ("talkplay.codes.engine", "CodesEngine")}
EXACT_BUDGET = 4096  # scoring tokens of a codes model's exact ranking; ~1,000 tracks of 5 codes


@dataclass
class EngineConfig:
    """Decoding settings: ``EngineConfig(reply_tokens=80, temperature=0.0)``.

    ``temperature`` 0 means greedy replies. ``device``: ``auto`` (the GPU when torch sees
    one, else the CPU), or any torch device string. ``guard_replies``: roll back a reply
    that names a catalog title or artist outside the answer's and the conversation's tracks
    (``talkplay.engine.reply``; content models). Codes models only: ``method``, ranking by
    ``exact`` scoring, ``beam`` search over the trie, or ``auto`` (exact while the catalog
    costs at most ``exact_budget`` scoring tokens); ``beam_width``, raised to k when smaller.
    """

    method: str = "auto"
    beam_width: int = 16
    exact_budget: int = EXACT_BUDGET
    reply_tokens: int = 80
    temperature: float = 0.0
    top_p: float = 0.9
    seed: int = 0
    threads: int | None = None
    device: str = "auto"
    guard_replies: bool = True


@dataclass
class Recommendation:
    """One ranked track: ``track_id``, ``score`` (log-probability) and a short ``why``."""

    track_id: str
    score: float
    why: str = ""


@dataclass
class Response:
    """The engine's answer: ranked ``recommendations`` and the model's ``reply`` text."""

    recommendations: list[Recommendation] = field(default_factory=list)
    reply: str = ""
    method: str = ""


def resolve_device(device: str = "auto") -> torch.device:
    """``resolve_device("auto")`` is CUDA when torch sees a GPU, else the CPU; other names pass through."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except RuntimeError:
        raise InputError(f"unknown torch device {device!r} (try auto, cpu, cuda or cuda:1)",
                         field="device") from None


def track_repr_of(run: Run) -> str:
    """``content`` or ``codes``: how the run's trained model represents tracks."""
    path = run.model_dir / "talkplay.json"
    if not path.exists():
        return "codes"
    return json.loads(path.read_text(encoding="utf-8")).get("track_repr", "codes")


def collect_response(engine: Engine, conversation: Conversation, k: int, exclude: Iterable[str]) -> Response:
    """``engine.stream_respond`` gathered into one ``Response`` (what ``respond`` returns)."""
    from talkplay.engine.reply import clean_reply

    recs: list[Recommendation] = []
    chunks: list[str] = []
    for item in engine.stream_respond(conversation, k, exclude):
        (recs if isinstance(item, Recommendation) else chunks).append(item)
    return Response(recs, clean_reply("".join(chunks)), engine.last_method)


@runtime_checkable
class Engine(Protocol):
    """A trained run's model answering conversations; build with ``Engine.load(run_dir)``."""

    cfg: EngineConfig
    catalog: Catalog
    tokenizer: Any
    last_method: str  # how the last request was ranked (exact or beam)

    @property
    def guards_replies(self) -> bool:
        """Whether replies are checked against the answer's tracks as they are written."""
        ...

    def recommend(self, conversation: Conversation, k: int = 10,
                  exclude: Iterable[str] = ()) -> list[Recommendation]:
        """k distinct catalog tracks for the conversation's last request, best first; never
        one the conversation already recommended, liked or rejected, nor one in ``exclude``."""
        ...

    def stream_respond(self, conversation: Conversation, k: int = 3,
                       exclude: Iterable[str] = ()) -> Iterator[Recommendation | str]:
        """Yield each ``Recommendation`` (best first), then the reply as text chunks."""
        ...

    def respond(self, conversation: Conversation, k: int = 3, exclude: Iterable[str] = ()) -> Response:
        """Recommendations and the model's reply for the conversation's last request."""
        ...

    @staticmethod
    def load(run_dir: str | Path, cfg: EngineConfig | None = None) -> Engine:
        """The engine for ``run_dir``'s trained model (see the module docstring).

        Raises ``StaleArtifactError`` when what the model was trained on changed since
        (``talkplay.fingerprint.check_model``). Tracks added since are fine.
        """
        run = Run(run_dir)
        if not (run.model_dir / "config.json").exists():
            raise TalkPlayError(f"no trained model in {run.model_dir}; run `talkplay train {run.path}` first")
        kind = track_repr_of(run)
        if kind not in ENGINES:
            raise TalkPlayError(f"{run.model_dir} holds a {kind!r} model this version cannot load")
        module, name = ENGINES[kind]
        return getattr(importlib.import_module(module), name).load(run_dir, cfg)
