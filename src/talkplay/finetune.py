"""Pieces both trainers share (``talkplay.codes.train`` for music codes, ``talkplay.tracks.train``
for content-grounded tracks): trimming layers, LoRA, the atomic model folder, the loss plot,
and the shared clock that stops every process at the same step.

``save_model_atomic(model, tok, run.model_dir, {"track_repr": ...})`` writes a
``save_pretrained`` folder plus ``talkplay.json`` and renames it into place.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from talkplay.atomic import write_atomic, write_json_atomic
from talkplay.errors import TalkPlayError
from talkplay.model import is_tied
from talkplay.train_config import TrainConfig


def keep_first_layers(model: Any, n: int) -> int:
    """Drop all but the first ``n`` transformer layers (in place); returns the layer count kept."""
    body = getattr(model, "model", None)
    layers = getattr(body, "layers", None)
    if layers is None:
        raise TalkPlayError("--keep-layers works with Llama-style models (model.model.layers)")
    n = min(n, len(layers))
    body.layers = layers[:n]
    model.config.num_hidden_layers = n
    if getattr(model.config, "layer_types", None):
        model.config.layer_types = model.config.layer_types[:n]
    return n


def add_lora(model: Any, cfg: TrainConfig, new_ids: list[int]) -> Any:
    """Wrap with LoRA adapters on every linear layer; music-token rows (and head rows) train too."""
    from peft import LoraConfig, get_peft_model

    tokens: dict[str, list[int]] = {"embed_tokens": new_ids}
    if not is_tied(model):
        tokens["lm_head"] = new_ids
    lcfg = LoraConfig(r=cfg.lora_rank, lora_alpha=2 * cfg.lora_rank, lora_dropout=0.0,
                      target_modules="all-linear", trainable_token_indices=tokens, task_type="CAUSAL_LM")
    return get_peft_model(model, lcfg)


def weights_digest(model: Any) -> str:
    """SHA-256 over every parameter (replicas of a data-parallel run must agree)."""
    h = hashlib.sha256()
    for name, p in sorted(model.named_parameters()):
        h.update(name.encode())
        h.update(p.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()


def save_model_atomic(model: Any, tokenizer: Any, target: Path, extra: dict[str, Any],
                      write_extra: Any = None) -> None:
    """``save_pretrained`` model + tokenizer (+ ``write_extra(folder)``) into a temp folder,
    then rename onto ``target``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    old = None
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_json_atomic(tmp / "talkplay.json", extra)
        if write_extra is not None:
            write_extra(tmp)
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.replace(target, old)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def plot_loss(history: list[dict[str, Any]], path: Path) -> None:
    """Training loss per step as a PNG (atomic)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    # the content trainer logs its two losses apart (the text loss only on the steps that have it)
    series = ["track_loss", "text_loss"] if any("track_loss" in h for h in history) else ["loss"]
    for key in series:
        pts = [(h["step"], h[key]) for h in history if h.get(key) is not None]
        if pts:
            ax.plot(*zip(*pts, strict=True), lw=1, label=key.replace("_", " "))
    if len(series) > 1:
        ax.legend()
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_title("talkplay train")
    fig.tight_layout()
    write_atomic(path, lambda p: fig.savefig(p, format="png", dpi=100), suffix=".png")
    plt.close(fig)


def shared_clock(acc: Any, seconds: float) -> float:
    """``seconds`` as the main process measured it, on every process."""
    if acc.num_processes == 1:
        return seconds
    from accelerate.utils import broadcast

    return float(broadcast(torch.tensor([seconds], dtype=torch.float64, device=acc.device), from_process=0))
