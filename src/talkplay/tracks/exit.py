"""The ranking exit: the LM's hidden state after an early layer, through its final norm.

``exit_hidden(lm, out.hidden_states, layer)`` reads it from a forward that ran the whole
stack with ``output_hidden_states=True`` (training, and an answer that goes on to a reply);
``run_to_exit(lm, layer, inputs_embeds=emb)`` runs only the first ``layer`` layers, which is
all that ranking alone needs. ``layer`` None (or the stack's depth) is the last layer.

Why two exits in one network: on CPCD the track head ranked best reading an early layer
(8 of SmolLM2-135M's 30 in the same training time), while a reply needs every pretrained
layer to stay fluent. The first ``layer`` layers are shared; the reply reads the rest too.
"""

from __future__ import annotations

import threading
from typing import Any

import torch

_local = threading.local()
_lock = threading.Lock()


class _Stop(Exception):
    """Raised by the exit layer's hook to end a forward early (caught in ``run_to_exit``)."""


def _base(lm: Any) -> Any:
    return lm.get_base_model() if hasattr(lm, "get_base_model") else lm  # through a peft wrapper


def decoder_layers(lm: Any) -> Any:
    """The LM's transformer layers (Llama-style ``model.model.layers``)."""
    return _base(lm).model.layers


def final_norm(lm: Any) -> Any:
    return _base(lm).model.norm


def is_early(lm: Any, layer: int | None) -> bool:
    """Whether ``layer`` is an exit before the last layer of ``lm``."""
    return layer is not None and 0 < layer < len(decoder_layers(lm))


def exit_hidden(lm: Any, hidden_states: tuple[torch.Tensor, ...], layer: int | None) -> torch.Tensor:
    """(B, L, hidden) at the exit, from ``output_hidden_states`` of a full forward (whose
    last entry is already normed; entry i is layer i's raw output)."""
    if not is_early(lm, layer):
        return hidden_states[-1]
    return final_norm(lm)(hidden_states[layer])


def layer_output(output: Any) -> torch.Tensor:
    """A decoder layer's hidden states, from what its forward returns (a tensor, or a tuple
    that starts with one in older transformers)."""
    return output[0] if isinstance(output, tuple) else output


def _hook(module: Any, args: Any, output: Any) -> None:
    if getattr(_local, "target", None) is module:
        _local.hidden = layer_output(output)
        raise _Stop


def run_to_exit(lm: Any, layer: int | None, **inputs: Any) -> torch.Tensor:
    """(B, L, hidden) at the exit, running only the layers up to it (no KV cache kept).

    Safe across threads: the hook that stops the forward acts only in the calling thread.
    """
    body = _base(lm).model
    if not is_early(lm, layer):
        return body(use_cache=False, **inputs).last_hidden_state
    module = decoder_layers(lm)[layer - 1]
    with _lock:
        if not getattr(module, "_talkplay_exit", False):
            module.register_forward_hook(_hook)
            module._talkplay_exit = True
    _local.target = module
    try:
        body(use_cache=False, **inputs)
    except _Stop:
        return final_norm(lm)(_local.hidden)
    finally:
        _local.target = _local.hidden = None
    raise RuntimeError(f"the forward never reached layer {layer}")  # pragma: no cover
