"""Build a run's dialogs: imported + synthetic + alignment conversations, split and written.

``info = build_dialogs(Run("runs/x"), DialogsConfig(synthesize=500, seed=0))`` writes
``dialogs/{train,valid,test}.jsonl`` atomically and records counts in ``run.json``.
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any

from talkplay import fingerprint
from talkplay.atomic import jsonl_text, write_text_atomic
from talkplay.catalog import Catalog, Conversation, Turn
from talkplay.dialogs.synth import Synthesizer
from talkplay.dialogs.teacher import rewrite_conversations
from talkplay.errors import InputError
from talkplay.log import get_logger, progress
from talkplay.run import Run
from talkplay.splits import SPLITS, held_out_ids, split_conversations, training_catalog

log = get_logger(__name__)

AUTO_MAX = 2000


@dataclass
class DialogsConfig:
    """What ``build_dialogs`` makes: ``DialogsConfig(synthesize=500, seed=1, teacher=None)``.

    - ``synthesize``: synthetic conversations to generate; None = automatic (one per track,
      at most 2,000, when the catalog has no imported conversations; none otherwise).
    - ``align``: catalog-alignment examples ("play TITLE by ARTIST" for every track, and,
      with ``align_reverse``, "what is this track? <music>"), packed ``align_turns`` per
      conversation; train split only.
    - ``include_imported``: the catalog's own conversations (CPCD, TalkPlayData 2 ...). Their
      test split is the run's held-out set (``talkplay.splits.held_out_ids``: the dataset's
      own test split, else one in eight), the one ``encode`` and ``eval`` use too;
      ``valid_frac`` and ``test_frac`` apply to the rest and to synthesized conversations.
    - ``search``: the curator's searches in *training* conversations (CPCD
      ``search_queries``), each answered with the tracks the user liked among that search's
      results, packed like alignment turns; never from a held-out conversation.
    - ``follow_ups``: for each imported *training* conversation of two turns or more, one more
      that stops at a later turn (the second to fourth) whose request is replaced by generic
      chit-chat ("love these, keep going"), answered as the curator answered the real one: the
      model learns that a message naming no music goes on from the conversation, and that its
      words are not titles to match (``FOLLOW_UP_TEMPLATES``; never the evaluation probe's).
      ``follow_up_turns``: how many such variants per conversation, each cut at another turn.
      ``chit_chat_prefix``: in each variant, one real request before the chit-chat (never the
      opening) gets chit-chat in front of it too ("awesome picks! now some reggae"), answered as
      before: beside the unchanged conversation, the model learns that praise around a request
      does not change what it asks for. No extra conversation, so no extra step.
    - ``teacher`` / ``teacher_model``: an OpenAI-compatible base URL that rewrites
      synthetic turns; ``teacher_max`` caps how many conversations it sees.
    """

    synthesize: int | None = None
    seed: int = 0
    min_turns: int = 2
    max_turns: int = 5
    align: bool = True
    align_reverse: bool = True
    align_turns: int = 6
    search: bool = True
    follow_ups: bool = True
    follow_up_turns: int = 1
    chit_chat_prefix: bool = False
    include_imported: bool = True
    valid_frac: float = 0.05
    test_frac: float = 0.1
    teacher: str | None = None
    teacher_model: str | None = None
    teacher_max: int | None = None

    def validate(self) -> None:
        """Raise ``InputError`` naming the flag that is out of range."""
        if self.synthesize is not None and self.synthesize < 0:
            raise InputError("must be 0 or more", field="--synthesize")
        if not 1 <= self.min_turns <= self.max_turns:
            raise InputError("need 1 <= min_turns <= max_turns", field="--max-turns")
        if not 1 <= self.follow_up_turns <= 3:
            raise InputError("must be 1 to 3 (a variant per later turn, the second to fourth)",
                             field="--follow-up-turns")
        if self.align_turns < 1:
            raise InputError("must be at least 1", field="--align-turns")
        for name in ("valid_frac", "test_frac"):
            v = getattr(self, name)
            if not 0 <= v < 1:
                raise InputError("must be in [0, 1)", field="--" + name.replace("_", "-"))
        if self.valid_frac + self.test_frac >= 1:
            raise InputError("valid and test fractions leave nothing to train on", field="--test-frac")
        if self.teacher is not None and "://" not in self.teacher:
            raise InputError("expected an http(s) URL of an OpenAI-compatible endpoint", field="--teacher")


def synthesize_count(cfg: DialogsConfig, catalog: Catalog) -> int:
    """How many synthetic conversations ``cfg`` asks for on this catalog."""
    if cfg.synthesize is not None:
        return cfg.synthesize
    if cfg.include_imported and catalog.conversations:
        return 0
    return min(AUTO_MAX, len(catalog.tracks))


def alignment_conversations(syn: Synthesizer, cfg: DialogsConfig) -> list[Conversation]:
    """Every track once as "play TITLE", and once as "what is this?" with ``align_reverse``."""
    items = [(t.id, "play") for t in syn.catalog.tracks]
    if cfg.align_reverse:
        items += [(t.id, "describe") for t in syn.catalog.tracks]
    random.Random(f"align-order:{cfg.seed}").shuffle(items)
    chunks = [items[i: i + cfg.align_turns] for i in range(0, len(items), cfg.align_turns)]
    return [syn.alignment(chunk, i) for i, chunk in enumerate(chunks)]


def search_conversations(convs: list[Conversation], catalog: Catalog,
                         cfg: DialogsConfig) -> list[Conversation]:
    """Each search a curator ran in ``convs`` (``turn.extra["search_queries"]`` with the
    matching ``search_results``) as a request answered by the liked tracks among its results.
    Pass training conversations only: a held-out turn's search fields are part of its answer."""
    turns = []
    for c in convs:
        for t in c.turns:
            queries, results = t.extra.get("search_queries") or [], t.extra.get("search_results") or []
            liked = set(t.liked)
            for q, res in zip(queries, results, strict=False):
                hits = [x for x in res if x in liked and x in catalog.index] if isinstance(res, list) else []
                if isinstance(q, str) and q.strip() and hits:
                    turns.append(Turn(user=q.strip(), assistant="", recommended=hits[:3],
                                      extra={"kind": "search"}))
    n = cfg.align_turns
    return [Conversation(id=f"search-{i // n}", turns=turns[i: i + n], source="search",
                         extra={"alignment": True}) for i in range(0, len(turns), n)]


# chit-chat a user says instead of a request; no content word in common with
# talkplay.evaluate.probe's FOLLOW_UPS, which score what a model learnt from these
FOLLOW_UP_TEMPLATES = ("awesome picks!", "cool, this vibe again", "wonderful, continue",
                       "sounds good, another batch?", "ok, next?", "haha fun. continue!",
                       "I'm enjoying this, go on", "that works for me. anything new?", "sweet, go ahead",
                       "excellent choices so far", "brilliant, carry on", "these are fantastic",
                       "good stuff", "superb, show me others", "amazing, continue", "ok cool",
                       "fab, next ones?")


def follow_up_conversations(convs: list[Conversation], cfg: DialogsConfig) -> list[Conversation]:
    """``cfg.follow_up_turns`` chit-chat variants of each conversation in ``convs``, each cut at
    another turn (see ``DialogsConfig.follow_ups``). Pass training conversations only."""
    rng = random.Random(f"follow-ups:{cfg.seed}")
    prefix_rng = random.Random(f"prefixes:{cfg.seed}")  # its own draws: the variants stay as without
    out = []
    for c in convs:
        later = [i for i in range(1, min(4, len(c.turns))) if c.turns[i].recommended]
        if not later:
            continue
        first = rng.choice(later)  # drawn alone, so one variant per conversation is as before
        rest = [i for i in later if i != first]
        cuts = [first, *rng.sample(rest, min(cfg.follow_up_turns - 1, len(rest)))]
        for n, i in enumerate(cuts):
            turn = dataclasses.replace(c.turns[i], user=rng.choice(FOLLOW_UP_TEMPLATES),
                                       extra={**c.turns[i].extra, "kind": "follow-up"})
            before = list(c.turns[:i])
            if cfg.chit_chat_prefix and i >= 2:
                j = prefix_rng.randrange(1, i)
                before[j] = dataclasses.replace(
                    before[j], user=f"{prefix_rng.choice(FOLLOW_UP_TEMPLATES)} {before[j].user}".strip())
            out.append(dataclasses.replace(c, id=f"{c.id}-follow-up" + (f"-{n + 1}" if n else ""),
                                           turns=[*before, turn], source="follow-up"))
    return out


def split_imported(run: Run, catalog: Catalog, imported: list[Conversation],
                   cfg: DialogsConfig) -> dict[str, list[Conversation]]:
    """Imported conversations by split: test is the run's held-out set
    (``talkplay.splits.held_out_ids``, shared with ``encode`` and ``eval``); valid is
    ``cfg.valid_frac`` of the rest. ``cfg.test_frac == 0`` holds none out."""
    # test_frac 0 asks for no test set at all; the held-out ids then simply go unused
    test_ids = held_out_ids(run, catalog, cfg.seed) if imported and cfg.test_frac > 0 else set()
    # a dataset's own "test" label outside the recorded held-out set must not override it
    rest = [dataclasses.replace(c, extra={k: v for k, v in c.extra.items() if k != "split"})
            if c.extra.get("split") == "test" else c for c in imported if c.id not in test_ids]
    out = split_conversations(rest, cfg.valid_frac, 0.0, cfg.seed)
    out["test"] = [c for c in imported if c.id in test_ids]
    return out


def build_dialogs(run: Run, cfg: DialogsConfig | None = None, *, force: bool = False) -> dict[str, Any]:
    """Make and write the run's dialogs; returns counts (``{"train": n, ...}``) and sources.

    When a trained model learnt from the dialogs there and the new training conversations
    differ, nothing is written and ``StaleArtifactError`` says so, unless ``force``.
    """
    cfg = cfg or DialogsConfig()
    cfg.validate()
    t0 = time.time()
    catalog = run.load_catalog()
    if not catalog.tracks:
        raise InputError("the catalog has no tracks", file=str(run.path / "catalog.parquet"))
    imported = [c for c in catalog.conversations if c.turns] if cfg.include_imported else []
    imported_splits = split_imported(run, catalog, imported, cfg)
    # Playlists derived from held-out conversations (CPCD goal playlists) must not seed
    # synthetic training conversations, or test gold leaks in.
    held_out = imported_splits["valid"] + imported_splits["test"]
    syn_catalog = training_catalog(catalog, held_out) if held_out else catalog
    syn = Synthesizer(syn_catalog, seed=cfg.seed, min_turns=cfg.min_turns, max_turns=cfg.max_turns)
    n = synthesize_count(cfg, catalog)
    synthetic = [syn.conversation(i) for i in progress(range(n), total=n, desc="synthesizing")]
    teacher_info = None
    if cfg.teacher and synthetic:
        teacher_info = rewrite_conversations(synthetic, catalog, cfg.teacher, cfg.teacher_model,
                                             cfg.teacher_max)
    aligned = alignment_conversations(syn, cfg) if cfg.align else []
    splits = split_conversations(synthetic + aligned, cfg.valid_frac, cfg.test_frac, cfg.seed)
    for name in SPLITS:
        splits[name] = imported_splits[name] + splits[name]
    searched = search_conversations(imported_splits["train"], catalog, cfg) if cfg.search else []
    splits["train"] += searched
    chatted = follow_up_conversations(imported_splits["train"], cfg) if cfg.follow_ups else []
    splits["train"] += chatted
    texts = {name: jsonl_text([c.to_dict() for c in splits[name]]) for name in SPLITS}
    fingerprint.guard_dialogs(run, texts["train"], force)
    run.dialogs_dir.mkdir(parents=True, exist_ok=True)
    for name in SPLITS:
        write_text_atomic(run.dialogs_dir / f"{name}.jsonl", texts[name])
    counts = {name: len(splits[name]) for name in SPLITS}
    turns = {name: sum(len(c.turns) for c in splits[name]) for name in SPLITS}
    sources = {name: dict(Counter(c.source or "unknown" for c in splits[name])) for name in SPLITS}
    kinds = Counter(t.extra.get("kind", "imported") for c in splits["train"] for t in c.turns)
    info: dict[str, Any] = {
        **counts,
        "turns": turns,
        "sources": sources,
        "kinds_train": dict(sorted(kinds.items())),
        "imported": len(imported),
        "synthesized": n,
        "alignment": len(aligned),
        "search": len(searched),
        "follow_ups": len(chatted),
        "dropped_duplicates": (len(imported) + n + len(aligned) + len(searched) + len(chatted)
                               - sum(counts.values())),
        "config": asdict(cfg),
        "seconds": round(time.time() - t0, 2),
        "inputs": {"catalog": fingerprint.catalog_fingerprint(catalog)},
    }
    if teacher_info:
        info["teacher"] = teacher_info
    run.record("dialogs", info)
    log.info("dialogs: %d train, %d valid, %d test conversations", *(counts[s] for s in SPLITS))
    return info
