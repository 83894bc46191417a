"""``talkplay train``: train the run's model in the representation its config names.

``train_run(Run("runs/demo"), TrainConfig(base_model="tiny", max_steps=300))`` validates the
config, checks the dialogs (and, for content, the embeddings) are current, then trains a
content model (``talkplay.tracks.train.train_content``, the default) or a codes model
(``talkplay.codes.train.train_codes``), imported only when asked for; returns its summary.

Multi-process data parallel needs no flag: launch the same command with
``torchrun --nproc_per_node N -m talkplay.cli train RUN ...`` (or ``accelerate launch``).
"""

from __future__ import annotations

from typing import Any

from talkplay import fingerprint
from talkplay.run import Run
from talkplay.train_config import TrainConfig

__all__ = ["TrainConfig", "train_run"]


def train_run(run: Run, cfg: TrainConfig) -> dict[str, Any]:
    """Train ``run``'s model as ``cfg`` says and write ``run/model``; returns a summary dict."""
    from transformers.utils import logging as hf_logging

    cfg.validate()
    hf_logging.disable_progress_bar()  # progress is ours, on stderr
    fingerprint.check_dialogs_inputs(run)
    if cfg.track_repr == "content":
        from talkplay.tracks.train import train_content

        fingerprint.check_embeddings_current(run, cfg.modalities.split(",") if cfg.modalities else None)
        return train_content(run, cfg)
    from talkplay.codes.train import train_codes

    return train_codes(run, cfg)
