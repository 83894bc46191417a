"""A synthetic run where the right answer is known, for training and engine tests.

``build_synth_run(path)`` writes a catalog of tracks that each own one keyword, synthetic
embeddings, a fitted music tokenizer, and dialogs in which "play some KEYWORD music"
is answered with that keyword's track. Test conversations are new combinations of the same
pattern, so a model that learned the pattern gets them right.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import numpy as np

from talkplay.atomic import save_npy_atomic
from talkplay.catalog import Catalog, Conversation, Playlist, Track, Turn
from talkplay.conversations import write_conversations
from talkplay.run import Run
from talkplay.tokenizer import TokenizerConfig, tokenize_run

KEYWORDS = ["jazz", "reggae", "polka", "tango", "blues", "samba", "opera", "disco",
            "metal", "gospel", "salsa", "techno", "funk", "choral", "bossa", "grunge"]
TEMPLATES = ["play some {kw} music", "i want {kw}", "something {kw} please", "any {kw} tracks?"]
NEXT = ["now some {kw}", "switch to {kw}", "more {kw} now"]


def honest_reply(kw: str, i: int) -> str:
    return f"Here is Song {i}, pure {kw}."


def _turn(kw: str, i: int, rng: random.Random, first: bool, reply: Callable[[str, int], str]) -> Turn:
    msg = rng.choice(TEMPLATES if first else NEXT).format(kw=kw)
    return Turn(user=msg, assistant=reply(kw, i), recommended=[f"t{i}"], liked=[f"t{i}"])


def _conv(cid: str, idx: list[int], rng: random.Random, reply: Callable[[str, int], str]) -> Conversation:
    turns = [_turn(KEYWORDS[i], i, rng, j == 0, reply) for j, i in enumerate(idx)]
    return Conversation(id=cid, turns=turns, source="synthetic")


def build_synth_run(path: Path, n_train: int = 240, n_test: int = 24, seed: int = 0,
                    reply: Callable[[str, int], str] = honest_reply) -> Run:
    """``reply(keyword, track number)`` writes the assistant's text of each training turn."""
    rng = random.Random(seed)
    run = Run(path)
    n = len(KEYWORDS)
    tracks = [Track(id=f"t{i}", title=f"Song {i}", artists=[f"Artist {i % 5}"], album="Synth",
                    tags=[kw]) for i, kw in enumerate(KEYWORDS)]
    playlists = [Playlist(id=f"p{j}", name=f"mix {j}", track_ids=[f"t{j}", f"t{(j + 1) % n}"])
                 for j in range(n)]
    Catalog(tracks, playlists).save(run.path)
    gen = np.random.default_rng(seed)
    for m, dim in (("tags", 16), ("metadata", 8)):
        x = gen.normal(size=(n, dim)).astype(np.float32)
        save_npy_atomic(run.embeddings_dir / f"{m}.npy", x)
        save_npy_atomic(run.embeddings_dir / f"{m}.mask.npy", np.ones(n, bool))
    tokenize_run(run, TokenizerConfig(k=4, seed=seed, min_dup_tokens=8))
    pairs = [(a, b) for a in range(n) for b in range(n) if a != b]
    rng.shuffle(pairs)
    test_pairs, train_pairs = pairs[:n_test], pairs[n_test:]
    train = [_conv(f"s{i}", [i % n], rng, reply) for i in range(n * 4)]  # every track, single-turn
    train += [_conv(f"m{j}", list(p), rng, reply) for j, p in enumerate(train_pairs[: n_train - len(train)])]
    test = [_conv(f"x{j}", list(p), rng, reply) for j, p in enumerate(test_pairs)]
    write_conversations(run.dialogs_dir / "train.jsonl", train)
    write_conversations(run.dialogs_dir / "valid.jsonl", test[:4])
    write_conversations(run.dialogs_dir / "test.jsonl", test)
    return run


KNOWN_ANSWER_CFG = dict(base_model="tiny", track_repr="codes", lora=False, init="mean_cov",
                        max_steps=300, batch_size=16, lr=3e-3,
                        save_every=1000,
                        max_length=256, log_every=10)
_TRAINED: dict[str, tuple[Run, dict]] = {}


def trained_synth_run(tmp_path_factory) -> tuple[Run, dict]:  # noqa: ANN001
    """The synthetic run with a tiny model trained on it, built once per test session."""
    if "run" not in _TRAINED:
        from talkplay.train import TrainConfig, train_run

        run = build_synth_run(tmp_path_factory.mktemp("synth") / "run")
        summary = train_run(run, TrainConfig(**KNOWN_ANSWER_CFG))
        _TRAINED["run"] = (run, summary)
    return _TRAINED["run"]


def run_files(path: Path) -> dict[str, str]:
    """``{relative path: sha256}`` of every file under a run directory."""
    import hashlib

    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(path).rglob("*")) if p.is_file()}


def held_out_turns(run: Run) -> list[tuple[Conversation, str]]:
    """(conversation up to a test turn with that turn's answer removed, the right track)."""
    import copy

    from talkplay.dialogs import load_dialogs

    out = []
    for conv in load_dialogs(run, "test"):
        for i, turn in enumerate(conv.turns):
            c = copy.deepcopy(conv)
            c.turns = c.turns[: i + 1]
            c.turns[-1] = Turn(user=turn.user)
            out.append((c, turn.recommended[0]))
    return out
