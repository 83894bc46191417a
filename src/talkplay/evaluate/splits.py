"""Which conversations a run trains on and which it is evaluated on.

``split = run_split(run)`` returns ``Split(train, test, source)``:

- ``dialogs/test.jsonl`` exists: it is the test set, and every other conversation the run
  knows (``dialogs/train.jsonl``, ``dialogs/valid.jsonl``, imported conversations not in
  the test set) is training data;
- otherwise the imported conversations are split deterministically, one in eight held
  out (350/50 on CPCD's 400), and the held-out ids are recorded in ``run.json`` under
  ``eval_split`` so every later evaluation and training stage sees the same split.

``check_not_trained_on(run, conversations)`` refuses conversations the run trained on,
comparing ids and content (the user messages) so renamed copies are caught too.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from talkplay.catalog import Catalog, Conversation, Playlist
from talkplay.dialogs.schema import read_conversations as load_dialogs
from talkplay.errors import InputError
from talkplay.run import Run

SPLIT_STAGE = "eval_split"
TEST_FRACTION = 1 / 8  # 50 of CPCD's 400 released conversations


@dataclass
class Split:
    """Training and held-out conversations of a run; ``source`` says where the split came from."""

    train: list[Conversation]
    test: list[Conversation]
    source: str


def order_key(seed: int, conv_id: str) -> str:
    return hashlib.sha256(f"{seed}:{conv_id}".encode()).hexdigest()


def deterministic_test_ids(ids: list[str], n_test: int | None = None, seed: int = 0) -> list[str]:
    """Pick ``n_test`` ids (default one in eight) by a seeded hash: stable under reordering."""
    if n_test is None:
        n_test = max(1, round(len(ids) * TEST_FRACTION)) if len(ids) > 1 else 0
    return sorted(sorted(ids, key=lambda i: order_key(seed, i))[:n_test])


def run_split(run: Run, catalog: Catalog | None = None, seed: int = 0, record: bool = True) -> Split:
    """The run's train/test conversations (see the module docstring for the rules)."""
    catalog = catalog if catalog is not None else run.load_catalog(validate=False)
    test_file = run.dialogs_dir / "test.jsonl"
    if test_file.exists():
        test = load_dialogs(test_file)
        test_ids = {c.id for c in test}
        train: dict[str, Conversation] = {}
        for name in ("train.jsonl", "valid.jsonl"):
            if (run.dialogs_dir / name).exists():
                for c in load_dialogs(run.dialogs_dir / name):
                    train.setdefault(c.id, c)
        for c in catalog.conversations:
            if c.id not in test_ids:
                train.setdefault(c.id, c)
        return Split(list(train.values()), test, f"{test_file}")
    convs = catalog.conversations
    recorded = run.stage(SPLIT_STAGE)
    ids = [c.id for c in convs]
    if recorded.get("test_ids") and set(recorded["test_ids"]) <= set(ids):
        test_ids = set(recorded["test_ids"])
    else:
        test_ids = set(deterministic_test_ids(ids, seed=seed))
        if record and ids:
            run.record(SPLIT_STAGE, {"method": "sha256(seed:id) order, 1 in 8 held out", "seed": seed,
                                     "n_train": len(ids) - len(test_ids), "n_test": len(test_ids),
                                     "test_ids": sorted(test_ids)})
    return Split([c for c in convs if c.id not in test_ids], [c for c in convs if c.id in test_ids],
                 f"run.json {SPLIT_STAGE}")


def content_key(conv: Conversation) -> str:
    """A fingerprint of what the user said, robust to ids and whitespace."""
    text = "\n".join(" ".join(t.user.lower().split()) for t in conv.turns)
    return hashlib.sha256(text.encode()).hexdigest()


def check_not_trained_on(run: Run, conversations: list[Conversation], split: Split | None = None,
                         file: str | None = None) -> None:
    """Raise ``InputError`` if any conversation is one the run trained on (by id or content)."""
    split = split if split is not None else run_split(run, record=False)
    train_ids = {c.id for c in split.train}
    train_keys = {content_key(c): c.id for c in split.train if any(t.user.strip() for t in c.turns)}
    for i, conv in enumerate(conversations):
        if conv.id in train_ids:
            raise InputError(f"conversation {conv.id!r} is one the run trained on; evaluating on it would "
                             "leak training data into the score", file=file, row=i, field="id")
        key = content_key(conv)
        if any(t.user.strip() for t in conv.turns) and key in train_keys:
            raise InputError(f"conversation {conv.id!r} has the same user messages as {train_keys[key]!r}, "
                             "which the run trained on; evaluating on it would leak training data",
                             file=file, row=i)


def training_playlists(playlists: list[Playlist], held_out: list[Conversation]) -> list[Playlist]:
    """Playlists minus those derived from held-out conversations (importers turn a
    conversation's goal into a playlist, e.g. ``cpcd:goal:<id>``; fitting on it would leak
    the test gold)."""
    ids = {c.id for c in held_out}
    goals = {frozenset(c.goal) for c in held_out if c.goal}
    return [p for p in playlists
            if p.id.rsplit(":", 1)[-1] not in ids and frozenset(p.track_ids) not in goals]


def training_conversations(run: Run, catalog: Catalog | None = None) -> list[Conversation]:
    """What baselines may fit on: ``run_split(run).train``."""
    return run_split(run, catalog).train
