"""How natural a reply reads to an untuned LM: ``Fluency.load("smollm2-135m").nll(pairs)``.

``pairs`` are ``(request, reply)``; each is rendered with the base model's chat template as
``[user: request] [assistant: reply]`` and scored by the mean negative log-likelihood of
the reply's tokens only (nats/token; lower reads more fluently). An empty reply scores
None. The base model is the one TalkPlay was fine-tuned from, at full depth and without
any fine-tuning, so it judges the language, not what TalkPlay learnt to say; the same
score of the human replies gives the scale.
"""

from __future__ import annotations

from typing import Any

import torch

from talkplay.model import load_base

MAX_TOKENS = 256  # per side: requests and replies are short; this only bounds a stray long one


class Fluency:
    """A base LM that scores replies; build with ``Fluency.load(name)``."""

    def __init__(self, model: Any, tokenizer: Any, device: str | torch.device = "cpu", batch_size: int = 8
                 ) -> None:
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self.device = torch.device(device)
        self.batch_size = batch_size

    @classmethod
    def load(cls, name: str, device: str | torch.device = "cpu", batch_size: int = 8) -> Fluency:
        """``load_base(name)`` (``tiny``, ``smollm2-135m``, a folder), ready to score."""
        model, tok = load_base(name)
        return cls(model, tok, device, batch_size)

    def _ids(self, request: str, reply: str) -> tuple[list[int], int]:
        """Prompt + reply token ids and how many of them are the prompt."""
        prompt = self.tokenizer.apply_chat_template([{"role": "user", "content": request}], tokenize=False,
                                                    add_generation_prompt=True)
        # tokenized apart, so no token straddles the prompt and the reply
        head = self.tokenizer(prompt, add_special_tokens=False)["input_ids"][-MAX_TOKENS:]
        body = self.tokenizer(reply, add_special_tokens=False)["input_ids"][:MAX_TOKENS]
        return head + body, len(head)

    @torch.inference_mode()
    def nll(self, pairs: list[tuple[str, str]]) -> list[float | None]:
        """Mean NLL (nats/token) of each reply given its request; None for an empty reply."""
        out: list[float | None] = [None] * len(pairs)
        todo = [(i, *self._ids(q, r)) for i, (q, r) in enumerate(pairs) if r.strip()]
        pad = self.tokenizer.pad_token_id or 0
        for b in range(0, len(todo), self.batch_size):
            batch = todo[b: b + self.batch_size]
            width = max(len(ids) for _, ids, _ in batch)
            ids = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros_like(ids)
            target = torch.zeros(len(batch), width, dtype=torch.bool)  # reply tokens, right-padded
            for row, (_, seq, n_prompt) in enumerate(batch):
                ids[row, : len(seq)] = torch.tensor(seq)
                mask[row, : len(seq)] = 1
                target[row, n_prompt: len(seq)] = True
            logits = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device)).logits
            # token t is predicted at position t - 1
            nll = torch.nn.functional.cross_entropy(logits[:, :-1].float().transpose(1, 2),
                                                    ids[:, 1:].to(self.device), reduction="none").cpu()
            keep = target[:, 1:]
            for row, (i, _, _) in enumerate(batch):
                out[i] = round(float(nll[row][keep[row]].mean()), 4)
        return out
