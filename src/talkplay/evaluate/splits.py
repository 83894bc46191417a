"""Which conversations a run trains on and which it is evaluated on.

``split = run_split(run)`` returns ``Split(train, test, source)``:

- ``dialogs/test.jsonl`` exists: it is the test set, and every other conversation the run
  knows (``dialogs/train.jsonl``, ``dialogs/valid.jsonl``, imported conversations not in
  the test set) is training data;
- otherwise the imported conversations held out are ``held_out_ids(run)``.

``held_out_ids(run)`` is decided once per run, by the first stage that needs it (``encode``
fits co-occurrence on the training side only; ``dialogs`` writes these conversations to
``dialogs/test.jsonl``; ``eval`` scores them): a dataset's own test split where the
importer kept one (``extra["split"]``), else one in eight by a seeded hash of the ids
(350/50 on CPCD's 400). The ids are recorded in ``run.json`` under ``eval_split`` so every
later stage sees the same split. ``training_catalog(catalog, held_out)`` is the catalog a
model may learn from: the held-out conversations and the playlists derived from them gone.

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
    test_ids = held_out_ids(run, catalog, seed, record)
    return Split([c for c in convs if c.id not in test_ids], [c for c in convs if c.id in test_ids],
                 f"run.json {SPLIT_STAGE}")


def held_out_ids(run: Run, catalog: Catalog | None = None, seed: int = 0, record: bool = True) -> set[str]:
    """Ids of the imported conversations ``run`` holds out for testing (see the module docstring)."""
    catalog = catalog if catalog is not None else run.load_catalog(validate=False)
    convs = catalog.conversations
    ids = [c.id for c in convs]
    recorded = run.stage(SPLIT_STAGE)
    if recorded.get("test_ids") and set(recorded["test_ids"]) <= set(ids):
        return set(recorded["test_ids"])
    own = {c.id for c in convs if c.extra.get("split") == "test"}
    if own:
        test_ids, method = own, "the dataset's own test split"
    else:
        test_ids = set(deterministic_test_ids(ids, seed=seed))
        method = "sha256(seed:id) order, 1 in 8 held out"
    if record and ids:
        run.record(SPLIT_STAGE, {"method": method, "seed": seed, "n_train": len(ids) - len(test_ids),
                                 "n_test": len(test_ids), "test_ids": sorted(test_ids)})
    return test_ids


def training_catalog(catalog: Catalog, held_out: list[Conversation]) -> Catalog:
    """``catalog`` as a model may learn from it: same tracks (same row order), without the
    ``held_out`` conversations and the playlists derived from them."""
    ids = {c.id for c in held_out}
    return Catalog(catalog.tracks, training_playlists(catalog.playlists, held_out),
                   [c for c in catalog.conversations if c.id not in ids])


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


def listening_conversations(convs: list[Conversation]) -> list[Conversation]:
    """``convs`` without catalog-alignment ones: those group random tracks to teach the
    model their codes, so they say nothing about which tracks go together (baselines must
    not learn co-occurrence from them) and they mention every track (a track in one is not
    thereby "seen" for the cold slice)."""
    from talkplay.dialogs.splits import is_alignment

    return [c for c in convs if not is_alignment(c)]
