"""Dialogs: rendering with a loss mask, synthesis, and the dialog files of a run.

``render(conv, hf_tokenizer, music) -> Rendered(input_ids, loss_mask)`` for training,
``render_prompt(conv, hf_tokenizer, music) -> ids`` for inference, and
``build_dialogs(run, DialogsConfig()) -> dict`` writes ``dialogs/{train,valid,test}.jsonl``;
``load_dialogs(run, "train")`` reads them back as ``catalog.Conversation`` objects (the
split rules live in ``talkplay.splits``, the file format in ``talkplay.conversations``).
"""

from talkplay.dialogs.build import DialogsConfig, build_dialogs
from talkplay.dialogs.render import RenderConfig, Rendered, RenderError, render, render_prompt
from talkplay.dialogs.synth import Synthesizer
from talkplay.splits import load_dialogs

__all__ = [
    "DialogsConfig",
    "Synthesizer",
    "build_dialogs",
    "RenderConfig",
    "RenderError",
    "Rendered",
    "load_dialogs",
    "render",
    "render_prompt",
]
