"""Train/valid/test splits by conversation, with no leakage.

``splits = split_conversations(convs, valid_frac=0.05, test_frac=0.1, seed=0)`` assigns
whole conversations; exact duplicates (same user texts and tracks) are dropped first so a
copy cannot sit on both sides, and a conversation whose ``extra["split"]`` names a split
(a dataset's own) keeps it. Catalog-alignment conversations always go to train.
"""

from __future__ import annotations

import hashlib
import json
import random

from talkplay.catalog import Conversation

SPLITS = ("train", "valid", "test")


def content_key(conv: Conversation) -> str:
    """A hash of what a conversation says and recommends (ids and free-form extras aside)."""
    body = [[t.user.strip().lower(), t.recommended, t.extra.get("user_tracks") or []] for t in conv.turns]
    return hashlib.sha1(json.dumps(body, ensure_ascii=False).encode()).hexdigest()


def is_alignment(conv: Conversation) -> bool:
    return bool(conv.extra.get("alignment"))


def split_conversations(convs: list[Conversation], valid_frac: float = 0.05, test_frac: float = 0.1,
                        seed: int = 0) -> dict[str, list[Conversation]]:
    """Split by conversation: ``{"train": [...], "valid": [...], "test": [...]}``."""
    out: dict[str, list[Conversation]] = {s: [] for s in SPLITS}
    seen_ids: set[str] = set()
    seen_keys: set[str] = set()
    free: list[Conversation] = []
    for c in convs:
        key = content_key(c)
        if c.id in seen_ids or key in seen_keys:
            continue
        seen_ids.add(c.id)
        seen_keys.add(key)
        fixed = c.extra.get("split")
        if is_alignment(c):
            out["train"].append(c)
        elif fixed in SPLITS:
            out[fixed].append(c)
        else:
            free.append(c)
    order = list(range(len(free)))
    random.Random(f"split:{seed}").shuffle(order)
    n_test = round(len(free) * test_frac)
    n_valid = round(len(free) * valid_frac)
    if len(free) >= 3:  # small sets still get one conversation on each held-out side
        n_test = max(n_test, 1) if test_frac > 0 else 0
        n_valid = max(n_valid, 1) if valid_frac > 0 else 0
    for rank, i in enumerate(order):
        name = "test" if rank < n_test else "valid" if rank < n_test + n_valid else "train"
        out[name].append(free[i])
    pos = {id(c): k for k, c in enumerate(convs)}
    for name in SPLITS:  # stable order inside a split: the input's order
        out[name].sort(key=lambda c: pos[id(c)])
    return out
