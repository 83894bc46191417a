"""Dialogs: the conversation schema on disk, rendering with a loss mask, synthesis, splits.

``render(conv, hf_tokenizer, music) -> Rendered(input_ids, loss_mask)`` for training,
``render_prompt(conv, hf_tokenizer, music) -> ids`` for inference, and
``build_dialogs(run, DialogsConfig()) -> dict`` writes ``dialogs/{train,valid,test}.jsonl``;
``load_dialogs(run, "train")`` reads them back as ``catalog.Conversation`` objects.
"""

from talkplay.dialogs.build import DialogsConfig, build_dialogs
from talkplay.dialogs.render import RenderConfig, Rendered, RenderError, render, render_prompt
from talkplay.dialogs.schema import SPLITS, load_dialogs, read_conversations, write_conversations
from talkplay.dialogs.synth import Synthesizer

__all__ = [
    "SPLITS",
    "DialogsConfig",
    "Synthesizer",
    "build_dialogs",
    "RenderConfig",
    "RenderError",
    "Rendered",
    "load_dialogs",
    "read_conversations",
    "render",
    "render_prompt",
    "write_conversations",
]
