"""Which conversations a run trains on and which it is held out on: the one split module.

Every stage that touches the split imports it from here (``encode`` fits co-occurrence on
the training side, ``dialogs`` writes the split files, baselines fit on it, ``eval`` scores
the held-out side).

``split = run_split(run)`` returns ``Split(train, test, source)``:

- ``dialogs/test.jsonl`` exists: it is the test set, and every other conversation the run
  knows (``dialogs/train.jsonl``, ``dialogs/valid.jsonl``, imported conversations not in
  the test set) is training data;
- otherwise the imported conversations held out are ``held_out_ids(run)``.

``held_out_ids(run)`` is decided once per run, by the first stage that needs it: a
dataset's own test split where the importer kept one (``extra["split"]``), else one in
eight by a seeded hash of the ids (350/50 on CPCD's 400). The ids are recorded in
``run.json`` under ``eval_split`` so every later stage sees the same split.
``training_catalog(catalog, held_out)`` is the catalog a model may learn from: the held-out
conversations and the playlists derived from them gone.

``split_conversations(convs, valid_frac=0.05, test_frac=0.1, seed=0)`` splits the
conversations ``dialogs`` builds (synthetic, alignment, the rest of the imported ones);
``load_dialogs(run, "train")`` reads a split back.

``content_key(conv)`` fingerprints what the user said; two conversations with the same key
never sit on both sides of a split, and ``check_not_trained_on(run, conversations)``
refuses conversations the run trained on by id or by that key, so renamed copies are
caught too.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path

from talkplay.catalog import Catalog, Conversation, Playlist
from talkplay.conversations import read_conversations
from talkplay.errors import InputError
from talkplay.run import Run

SPLITS = ("train", "valid", "test")
SPLIT_STAGE = "eval_split"
TEST_FRACTION = 1 / 8  # 50 of CPCD's 400 released conversations


@dataclass
class Split:
    """Training and held-out conversations of a run; ``source`` says where the split came from."""

    train: list[Conversation]
    test: list[Conversation]
    source: str


def content_key(conv: Conversation) -> str | None:
    """``content_key(conv)``: a hash of the user's side of ``conv`` (each turn's message, case
    and spacing aside, and the tracks the user played in it); ids, answers and extras do not
    count. ``None`` when the user says nothing, as there is nothing to compare."""
    body = [[" ".join(t.user.lower().split()), [str(x) for x in t.extra.get("user_tracks") or []]]
            for t in conv.turns]
    if not any(text or tracks for text, tracks in body):
        return None
    return hashlib.sha256(json.dumps(body, ensure_ascii=False).encode()).hexdigest()


def is_alignment(conv: Conversation) -> bool:
    """A catalog-alignment conversation (random tracks grouped to teach their codes)."""
    return bool(conv.extra.get("alignment"))


def listening_conversations(convs: list[Conversation]) -> list[Conversation]:
    """``convs`` without catalog-alignment ones: those group random tracks to teach the
    model their codes, so they say nothing about which tracks go together (baselines must
    not learn co-occurrence from them) and they mention every track (a track in one is not
    thereby "seen" for the cold slice)."""
    return [c for c in convs if not is_alignment(c)]


# --- the run's held-out imported conversations ---------------------------------------------


def order_key(seed: int, conv_id: str) -> str:
    return hashlib.sha256(f"{seed}:{conv_id}".encode()).hexdigest()


def deterministic_test_ids(ids: list[str], n_test: int | None = None, seed: int = 0) -> list[str]:
    """Pick ``n_test`` ids (default one in eight) by a seeded hash: stable under reordering."""
    if n_test is None:
        n_test = max(1, round(len(ids) * TEST_FRACTION)) if len(ids) > 1 else 0
    return sorted(sorted(ids, key=lambda i: order_key(seed, i))[:n_test])


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


def run_split(run: Run, catalog: Catalog | None = None, seed: int = 0, record: bool = True) -> Split:
    """The run's train/test conversations (see the module docstring for the rules)."""
    catalog = catalog if catalog is not None else run.load_catalog(validate=False)
    test_file = run.dialogs_dir / "test.jsonl"
    if test_file.exists():
        test = read_conversations(test_file)
        test_ids = {c.id for c in test}
        train: dict[str, Conversation] = {}
        for name in ("train.jsonl", "valid.jsonl"):
            if (run.dialogs_dir / name).exists():
                for c in read_conversations(run.dialogs_dir / name):
                    train.setdefault(c.id, c)
        for c in catalog.conversations:
            if c.id not in test_ids:
                train.setdefault(c.id, c)
        return Split(list(train.values()), test, f"{test_file}")
    convs = catalog.conversations
    test_ids = held_out_ids(run, catalog, seed, record)
    return Split([c for c in convs if c.id not in test_ids], [c for c in convs if c.id in test_ids],
                 f"run.json {SPLIT_STAGE}")


def training_playlists(playlists: list[Playlist], held_out: list[Conversation]) -> list[Playlist]:
    """Playlists minus those derived from held-out conversations (importers turn a
    conversation's goal into a playlist, e.g. ``cpcd:goal:<id>``; fitting on it would leak
    the test gold)."""
    ids = {c.id for c in held_out}
    goals = {frozenset(c.goal) for c in held_out if c.goal}
    return [p for p in playlists
            if p.id.rsplit(":", 1)[-1] not in ids and frozenset(p.track_ids) not in goals]


def training_catalog(catalog: Catalog, held_out: list[Conversation]) -> Catalog:
    """``catalog`` as a model may learn from it: same tracks (same row order), without the
    ``held_out`` conversations and the playlists derived from them."""
    ids = {c.id for c in held_out}
    return Catalog(catalog.tracks, training_playlists(catalog.playlists, held_out),
                   [c for c in catalog.conversations if c.id not in ids])


def check_not_trained_on(run: Run, conversations: list[Conversation], split: Split | None = None,
                         file: str | None = None) -> None:
    """Raise ``InputError`` if any conversation is one the run trained on (by id or content)."""
    split = split if split is not None else run_split(run, record=False)
    train_ids = {c.id for c in split.train}
    train_keys = {k: c.id for c in split.train if (k := content_key(c)) is not None}
    for i, conv in enumerate(conversations):
        if conv.id in train_ids:
            raise InputError(f"conversation {conv.id!r} is one the run trained on; evaluating on it would "
                             "leak training data into the score", file=file, row=i, field="id")
        key = content_key(conv)
        if key is not None and key in train_keys:
            raise InputError(f"conversation {conv.id!r} has the same user messages as {train_keys[key]!r}, "
                             "which the run trained on; evaluating on it would leak training data",
                             file=file, row=i)


# --- the dialogs a run builds -------------------------------------------------------------


def split_conversations(convs: list[Conversation], valid_frac: float = 0.05, test_frac: float = 0.1,
                        seed: int = 0) -> dict[str, list[Conversation]]:
    """Split whole conversations: ``{"train": [...], "valid": [...], "test": [...]}``.

    Exact duplicates (same id, or same user side and answers) are dropped; conversations
    with the same ``content_key`` go to the split of the first of them, so a copy never sits
    on both sides. A conversation whose ``extra["split"]`` names a split (a dataset's own)
    keeps it; catalog-alignment conversations always go to train.
    """
    out: dict[str, list[Conversation]] = {s: [] for s in SPLITS}
    seen_ids: set[str] = set()
    seen: set[tuple[str | None, str]] = set()
    side: dict[str, str] = {}  # content key -> the split it went to
    free: list[Conversation] = []
    for c in convs:
        key = content_key(c)
        exact = (key, json.dumps([t.recommended for t in c.turns]))
        if c.id in seen_ids or exact in seen:
            continue
        seen_ids.add(c.id)
        seen.add(exact)
        fixed = "train" if is_alignment(c) else c.extra.get("split")
        if fixed in SPLITS:
            out[fixed].append(c)
            if key is not None:
                side.setdefault(key, fixed)
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
        key = content_key(free[i])
        if key is not None:
            name = side.setdefault(key, name)
        out[name].append(free[i])
    pos = {id(c): k for k, c in enumerate(convs)}
    for name in SPLITS:  # stable order inside a split: the input's order
        out[name].sort(key=lambda c: pos[id(c)])
    return out


def load_dialogs(run: Run, split: str) -> list[Conversation]:
    """A split written by ``build_dialogs``: ``load_dialogs(Run("runs/x"), "train")``."""
    if split not in SPLITS:
        raise InputError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}", field="split")
    path = Path(run.dialogs_dir) / f"{split}.jsonl"
    if not path.exists():
        raise InputError(f"no {split} dialogs; run `talkplay dialogs {run.path}` first", file=str(path))
    return read_conversations(path)
