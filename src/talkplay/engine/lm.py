"""The language-model steps every engine shares: a KV-cached forward, end-of-turn ids, the
token picker.

``out, cache = lm_forward(model, cache, input_ids=ids)`` (or ``inputs_embeds=``);
``stop_token_ids(model, tokenizer)``; ``pick_token(scores, gen, temperature, top_p)``.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

import torch


@functools.lru_cache(maxsize=8)
def _cache_kw(forward_cls: type) -> str:
    # transformers >= 5.2x names the KV cache argument `cache`; older versions `past_key_values`
    return "cache" if "cache" in inspect.signature(forward_cls.forward).parameters else "past_key_values"


def lm_forward(model: Any, cache: Any = None, **inputs: Any) -> tuple[Any, Any]:
    """One forward with a KV cache: returns (model output, updated cache), across transformers
    versions. ``inputs``: ``input_ids=`` or ``inputs_embeds=``, plus any other forward argument."""
    kw = {} if cache is None else {_cache_kw(type(model)): cache}
    out = model(use_cache=True, **inputs, **kw)
    return out, out["cache"] if "cache" in out else out["past_key_values"]


def lm_step(model: Any, input_ids: torch.Tensor, cache: Any = None) -> tuple[torch.Tensor, Any]:
    """One forward of ids with a KV cache: returns (logits, updated cache)."""
    out, new = lm_forward(model, cache, input_ids=input_ids)
    return out.logits, new


def stop_token_ids(model: Any, tokenizer: Any) -> set[int]:
    """The ids that end a turn for ``model``: its generation config's eos, the tokenizer's,
    and the chat templates' end-of-turn markers the vocabulary holds."""
    out: set[int] = set()
    eos = getattr(model.generation_config, "eos_token_id", None)
    for e in eos if isinstance(eos, (list, tuple)) else [eos]:
        if e is not None:
            out.add(int(e))
    if tokenizer.eos_token_id is not None:
        out.add(int(tokenizer.eos_token_id))
    vocab = tokenizer.get_vocab()
    for s in ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|endoftext|>"):
        if s in vocab:
            out.add(int(vocab[s]))
    return out


def pick_token(scores: torch.Tensor, gen: torch.Generator, temperature: float, top_p: float) -> int:
    """The next token from one row of scores: greedy at ``temperature`` 0, else top-p sampled."""
    if temperature <= 0:
        return int(scores.argmax())
    # sampled on the CPU, where the seeded generator lives
    probs = torch.softmax(scores.cpu() / temperature, dim=-1)
    sp, si = torch.sort(probs, descending=True)
    keep = torch.cumsum(sp, 0) - sp < top_p
    return int(si[keep][torch.multinomial(sp[keep] / sp[keep].sum(), 1, generator=gen)])
