"""``evaluate_run(Run(path), EvalConfig(protocol="cpcd"))``: every system, one table.

Picks the conversations (the run's held-out split, or ``cfg.conversations`` — any file
an importer reads — after refusing ones the run trained on), builds the protocol's
cases, fits each system on the run, ranks every case, scores all turns plus the cold
slice (gold restricted to tracks that never occur in training conversations), and writes
JSON, Markdown, plots and optional CPCD-format prediction files under ``run/eval/``.

Evaluation is read-only on the run: scoring never changes what it scores. Its reports (and
derived vectors a baseline caches under ``run/cache``) are the only files it writes there;
the catalog, tokenizer, embeddings, split and ``run.json`` stay byte for byte as they were.
So a test file's tracks must already be in the catalog: one that mentions others is
refused, naming the ``talkplay catalog add`` command that adds them (with codes or, after
``talkplay encode``, rows a model can recommend). Adding them on
the fly in scratch space would score TalkPlay on tracks it cannot represent (a content
model reads the run's embeddings, a codes model its tokenizer), and quietly doing what
``catalog add`` does here would change the run being scored.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from talkplay import fingerprint
from talkplay.atomic import write_jsonl_atomic
from talkplay.baselines import BASELINES, CatalogRecommender, make_baseline, top_k
from talkplay.baselines.base import baskets
from talkplay.catalog import Catalog, Conversation, Track
from talkplay.conversations import read_conversations
from talkplay.errors import InputError
from talkplay.evaluate.metrics import K_VALUES, ScoredTurn, aggregate, uniform_choice_metrics
from talkplay.evaluate.probe import follow_up_probe, probe_cases
from talkplay.evaluate.protocols import PROTOCOLS, EvalCase, clean_ranking, make_cases, score_case
from talkplay.evaluate.replies import reply_report
from talkplay.evaluate.report import write_report
from talkplay.evaluate.turns import CatalogMentions, turn_kinds
from talkplay.log import get_logger, progress
from talkplay.recommender import Recommender
from talkplay.run import Run
from talkplay.sources import Issues, get_importer
from talkplay.splits import (
    Split,
    check_not_trained_on,
    listening_conversations,
    run_split,
    training_playlists,
)

log = get_logger(__name__)

TALKPLAY = "talkplay"
LEAK_PROBE = "leak-probe"
CEILING = "ceiling"  # reference row for synthesized dialogs; see ceiling_turns
DEFAULT_BASELINES = ("random", "popularity", "bm25", "bm25-all", "dense", "cooccur", "hybrid")
UNTRAINED = "untrained"  # the track network as training starts; a default row once the run has embeddings


@dataclass
class EvalConfig:
    """What to evaluate: ``EvalConfig(protocol="cpcd", systems=["bm25", "dense"])``.

    ``systems=None`` means every baseline plus TalkPlay when ``run/model`` exists.
    ``conversations`` scores a new test file (format: ``cpcd``, ``talkplaydata2`` or the
    project's own JSONL, detected unless ``conversations_format`` is set). ``pool``
    restricts next-track rankings to each session's candidate pool. ``leak_probe`` adds
    the reference row that ranks test-only tracks first (not a system). ``replies``: TalkPlay
    also answers the last scored turn of up to this many conversations, and its replies are
    scored for faithfulness, variety, loops, cut-offs and fluency (``talkplay.evaluate.replies``;
    0: ranking only). ``follow_ups``: the follow-up probe (``talkplay.evaluate.probe``: the echo
    rate and ranking around generic chit-chat) for every system.
    """

    protocol: str = "cpcd"
    systems: list[str] | None = None
    split: str = "test"
    conversations: Path | None = None
    conversations_format: str | None = None
    pool: bool = False
    predictions_out: Path | None = None
    n_boot: int = 1000
    seed: int = 0
    limit: int | None = None
    leak_probe: bool = False
    replies: int = 60
    follow_ups: bool = True
    write: bool = True
    plots: bool = True
    name: str | None = None

    def validate(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise InputError(f"unknown protocol {self.protocol!r} (known: {', '.join(PROTOCOLS)})",
                             field="--protocol")
        if self.split not in ("test", "valid"):
            raise InputError(f"--split must be test or valid, got {self.split!r}", field="--split")
        if self.pool and self.protocol != "next-track":
            raise InputError("--pool applies to the next-track protocol only", field="--pool")
        if self.n_boot < 0:
            raise InputError("must be >= 0", field="--n-boot")
        if self.replies < 0:
            raise InputError("must be >= 0", field="--replies")
        if self.name is not None and not re.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9._-]*", self.name):
            raise InputError(f"{self.name!r} is not a plain file name (letters, digits, '.', '_', '-')",
                             field="--name")
        for s in self.systems or []:
            if s not in BASELINES and s != TALKPLAY:
                raise InputError(f"unknown system {s!r} (known: {', '.join(BASELINES)}, {TALKPLAY})",
                                 field="--systems")


class LeakProbe(CatalogRecommender):
    """NOT a system: tracks absent from all training data first, in seeded random order.

    It shows how much of a score could come from exploiting "never seen in training",
    which in a catalog built from the test files is mostly the test gold.
    """

    name = LEAK_PROBE

    def _fit(self, catalog: Catalog, train: list[Conversation], run: Run | None) -> None:
        seen = {t for b in baskets(self.playlists, train) for t in b}
        self._unseen = np.array([0.0 if t in seen else 1.0 for t in self.ids])

    def scores(self, conversation: Conversation) -> np.ndarray:
        key = f"{self.seed}:{conversation.id}:{len(conversation.turns)}"
        rng = np.random.default_rng(int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little"))
        return self._unseen + rng.random(len(self.ids)) * 0.5

    def recommend(self, conversation: Conversation, k: int = 10,
                  exclude: set[str] | frozenset[str] = frozenset()) -> list[tuple[str, float]]:
        return top_k(self.scores(conversation), self.ids, self.index, k, exclude)


def detect_format(path: Path) -> str:
    """``cpcd``, ``talkplaydata2`` or ``own`` (``Conversation.to_dict`` JSONL), by content."""
    if path.is_dir() or path.name.endswith(".chat.json") or path.suffix == ".parquet":
        return "talkplaydata2"
    with path.open(encoding="utf-8") as f:
        head = f.readline()
    if '"goal_playlist"' in head:
        return "cpcd"
    if '"session_id"' in head or '"conversation_turns"' in head:
        return "talkplaydata2"
    return "own"


def load_conversation_file(path: Path, fmt: str | None = None) -> tuple[list[Conversation], list[Track]]:
    """Conversations and the tracks the file describes (own format carries no tracks)."""
    if not path.exists():
        raise InputError("conversation file not found", file=str(path), field="--conversations")
    fmt = fmt or detect_format(path)
    if fmt == "own":
        return read_conversations(path), []
    cat = get_importer(fmt).load(str(path), Issues())
    return cat.conversations, cat.tracks


def require_tracks_in_catalog(run: Run, convs: list[Conversation], catalog: Catalog, path: Path,
                              fmt: str, described: set[str]) -> None:
    """Raise ``InputError`` naming the first conversation and track of ``path`` that the catalog
    lacks, with the ``talkplay catalog add`` command that adds them (``described``: ids the
    file itself carries metadata for; an ``own``-format file carries none)."""
    missing: dict[str, tuple[int, str]] = {}
    for i, c in enumerate(convs):
        for tid in (*c.goal, *(x for tr in c.turns for x in (*tr.recommended, *tr.liked))):
            if tid not in catalog.index:
                missing.setdefault(tid, (i, c.id))
    if not missing:
        return
    tid, (i, cid) = next(iter(missing.items()))
    if missing.keys() <= described:
        how = f"`talkplay catalog add {run.path} {path} --source {fmt}`"
    else:
        how = f"`talkplay catalog add {run.path} TRACKS_FILE` (a table of them: id, title, artists ...)"
    others = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
    raise InputError(f"conversation {cid!r} mentions track {tid!r}{others} not in the catalog; a system can "
                     f"only be scored on tracks it can recommend. Add them with {how}, then `talkplay encode "
                     f"{run.path}` (for content-grounded models), and evaluate again", file=str(path),
                     row=i + 1, field="tracks")


def _system_factories(run: Run, cfg: EvalConfig) -> dict[str, Callable[[], Recommender]]:
    names = list(cfg.systems) if cfg.systems else list(DEFAULT_BASELINES)
    if cfg.systems is None and any(run.embeddings_dir.glob("*.mask.npy")):
        names.append(UNTRAINED)
    if cfg.systems is None and (run.model_dir / "config.json").exists():
        names.append(TALKPLAY)
    out: dict[str, Callable[[], Recommender]] = {}
    for n in names:
        if n == TALKPLAY:
            out[n] = _talkplay_factory(run)
        else:
            out[n] = (lambda n=n: make_baseline(n, seed=cfg.seed))
    if cfg.leak_probe:
        out[LEAK_PROBE] = lambda: LeakProbe(seed=cfg.seed)
    return out


def _talkplay_factory(run: Run) -> Callable[[], Recommender]:
    if not run.model_dir.exists():
        raise InputError(f"no trained model in {run.model_dir}; run `talkplay train` first",
                         field="--systems")
    music = None
    if (run.tokenizer_dir / "tokenizer.npz").exists():  # a codes run: its model reads the tokenizer
        from talkplay.tokenizer import MusicTokenizer

        music = MusicTokenizer.load(run.tokenizer_dir)
    fingerprint.check_model(run, music, for_eval=True)

    def make() -> Recommender:
        from talkplay.engine import TalkPlayRecommender

        return TalkPlayRecommender()

    return make


def _select_conversations(run: Run, cfg: EvalConfig, catalog: Catalog, split: Split
                          ) -> tuple[list[Conversation], str]:
    """The conversations to score and where they come from (a file, or the run's split)."""
    if cfg.conversations is not None:
        path = Path(cfg.conversations)
        fmt = cfg.conversations_format or detect_format(path)
        convs, tracks = load_conversation_file(path, fmt)
        check_not_trained_on(run, convs, split, file=str(path))
        require_tracks_in_catalog(run, convs, catalog, path, fmt, {t.id for t in tracks})
        return convs, str(path)
    if cfg.split == "valid":
        valid = run.dialogs_dir / "valid.jsonl"
        if not valid.exists():
            raise InputError(f"no validation split at {valid}", field="--split")
        return read_conversations(valid), str(valid)
    return split.test, split.source


def _rank(rec: Recommender, case: EvalCase) -> list[str]:
    return [tid for tid, _ in rec.recommend(case.context, k=case.k, exclude=case.exclude)]


def ceiling_turns(convs: list[Conversation], cases: list[EvalCase]) -> list[ScoredTurn] | None:
    """The best expected score per turn, when every scored turn records how many tracks fitted
    its request equally well (``turn.extra["candidates"]``, written by the synthesizer, whose
    gold is a uniform pick among them); None otherwise. No system can beat it on average."""
    by_id = {c.id: c for c in convs}
    out = []
    for case in cases:
        n = by_id[case.conversation_id].turns[case.turn_index].extra.get("candidates")
        if not isinstance(n, int) or n < 1 or len(case.gold) != 1:
            return None
        out.append(ScoredTurn(case.conversation_id, case.turn_index, uniform_choice_metrics(n)))
    return out or None


@dataclass
class Slices:
    """Which catalog tracks are ``cold`` (in no training conversation) and which are ``seen``
    in any training data (conversations or playlists)."""

    cold: set[str]
    seen: set[str]


def slices(catalog: Catalog, split: Split, convs: list[Conversation]) -> Slices:
    """The cold and seen tracks of ``catalog`` given the training side of ``split``."""
    listened = listening_conversations(split.train)
    seen = {t for b in baskets(training_playlists(catalog.playlists, convs), listened) for t in b}
    in_conversations = {t for b in baskets([], listened) for t in b}
    return Slices(cold=set(catalog.ids()) - in_conversations, seen=seen)


def request_kinds(convs: list[Conversation]) -> dict[tuple[str, int], str]:
    """``(conversation id, turn) -> kind`` for turns whose ``extra["kind"]`` says what the
    request asked for (synthesized dialogs: tag, artist, album, playlist, decade, more_like …)."""
    return {(c.id, i): str(t.extra["kind"]) for c in convs for i, t in enumerate(c.turns)
            if t.extra and t.extra.get("kind")}


def by_kind(scored: list[ScoredTurn], kinds: dict[tuple[str, int], str],
            metrics: tuple[str, ...] = ("hit@10", "mrr@100")) -> dict[str, dict[str, float]]:
    """Mean of ``metrics`` over the scored turns of each request kind (micro), with ``n_turns``."""
    groups: dict[str, list[ScoredTurn]] = defaultdict(list)
    for t in scored:
        kind = kinds.get((t.conversation_id, t.turn_index))
        if kind is not None:
            groups[kind].append(t)
    return {k: {"n_turns": len(ts), **{m: round(float(np.mean([t.metrics[m] for t in ts])), 4)
                                       for m in metrics}}
            for k, ts in sorted(groups.items())}


def score_system(name: str, rec: Recommender, run: Run, cases: list[EvalCase], cold: set[str],
                 cfg: EvalConfig, kinds: dict[tuple[str, int], str] | None = None,
                 turns: dict[tuple[str, int], str] | None = None
                 ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Fit ``rec`` on ``run`` and rank every case -> (the system's report entry, its CPCD-format
    predictions). Turns are scored on all gold tracks, the cold ones and the warm ones, and,
    given ``kinds`` (``request_kinds``), per request kind, and given ``turns``
    (``talkplay.evaluate.turns.turn_kinds``), per turn kind (names music, opening, follow-up)."""
    t0 = time.perf_counter()
    rec.fit(run)
    fit_s = time.perf_counter() - t0
    scored, scored_cold, scored_warm, preds = [], [], [], []
    short = 0
    t0 = time.perf_counter()
    prefetch = getattr(rec, "prefetch", None)
    if callable(prefetch):
        prefetch([c.context for c in cases])
    for case in progress(cases, total=len(cases), desc=name):
        clean = clean_ranking(_rank(rec, case), case.exclude)
        short += len(clean) < min(case.k, max(K_VALUES))
        scored.append(ScoredTurn(case.conversation_id, case.turn_index, score_case(case, clean),
                                 {"n_gold": len(case.gold)}))
        cold_gold = [g for g in case.gold if g in cold]
        warm_gold = [g for g in case.gold if g not in cold]
        if cold_gold:
            scored_cold.append(ScoredTurn(case.conversation_id, case.turn_index,
                                          score_case(case, clean, cold_gold)))
        if warm_gold:
            scored_warm.append(ScoredTurn(case.conversation_id, case.turn_index,
                                          score_case(case, clean, warm_gold)))
        preds.append({"docid": case.docid, "neighbor": [{"docid": t} for t in clean[: case.k]]})
    predict_s = time.perf_counter() - t0
    if short:
        log.warning("%s returned fewer than %d tracks on %d turn(s); missing ranks count as misses",
                    name, max(K_VALUES), short)
    entry = {
        "is_system": name != LEAK_PROBE,
        "fit_seconds": round(fit_s, 3),
        "predict_seconds": round(predict_s, 3),
        "all": aggregate(scored, n_boot=cfg.n_boot, seed=cfg.seed),
        "cold": aggregate(scored_cold, n_boot=cfg.n_boot, seed=cfg.seed),
        "warm": aggregate(scored_warm, n_boot=cfg.n_boot, seed=cfg.seed),
    }
    if kinds:
        entry["by_kind"] = by_kind(scored, kinds)
    if turns:
        entry["by_turn"] = by_kind(scored, turns)
    log.info("%s: hit@10 %.3f, mrr@100 %.3f (fit %.1fs, predict %.1fs)", name,
             entry["all"]["macro"]["hit@10"], entry["all"]["macro"]["mrr@100"], fit_s, predict_s)
    return entry, preds


def ceiling_entry(convs: list[Conversation], cases: list[EvalCase], cold: set[str],
                  cfg: EvalConfig, kinds: dict[tuple[str, int], str]) -> dict[str, Any] | None:
    """The ``ceiling`` reference row (see ``ceiling_turns``), or None where it does not apply;
    ``kinds`` (``request_kinds``) breaks it down per request kind as the systems are."""
    ceiling = ceiling_turns(convs, cases)
    if ceiling is None:
        return None
    is_cold = [case.gold[0] in cold for case in cases]  # one gold per turn: cold or warm
    parts = {"all": ceiling, "cold": [t for t, c in zip(ceiling, is_cold, strict=True) if c],
             "warm": [t for t, c in zip(ceiling, is_cold, strict=True) if not c]}
    entry: dict[str, Any] = {"is_system": False, "fit_seconds": 0.0, "predict_seconds": 0.0}
    for part, rows in parts.items():
        entry[part] = aggregate(rows, n_boot=cfg.n_boot, seed=cfg.seed)
    entry["by_kind"] = by_kind(ceiling, kinds)
    return entry


def scored_inputs(run: Run, catalog: Catalog, systems: list[str]) -> dict[str, Any]:
    """Fingerprints of what the report scored: the catalog, the training dialogs and, when
    TalkPlay is among the systems, the model's id (see ``talkplay.fingerprint``)."""
    out: dict[str, Any] = {"catalog": fingerprint.catalog_fingerprint(catalog),
                           "dialogs": fingerprint.dialogs_fingerprint(run)}
    if TALKPLAY in systems:
        out["model"] = (fingerprint.model_meta(run) or {}).get("model_id")
    return out


def write_outputs(run: Run, cfg: EvalConfig, result: dict[str, Any],
                  predictions: dict[str, list[dict[str, Any]]]) -> None:
    """Prediction files under ``cfg.predictions_out`` and the report under ``run/eval/``
    (unless ``cfg.write`` is off); their paths go into ``result["files"]``."""
    if cfg.predictions_out is not None:
        out_dir = Path(cfg.predictions_out)
        for sys_name, preds in predictions.items():
            path = out_dir / f"{sys_name}.{result['name']}.jsonl"
            write_jsonl_atomic(path, preds)
            result["files"][f"predictions:{sys_name}"] = str(path)
    if cfg.write:
        result["files"].update(write_report(run.eval_dir, result, plots=cfg.plots))


def evaluate_run(run: Run, cfg: EvalConfig | None = None) -> dict[str, Any]:
    """Evaluate every system in ``cfg`` on ``run``; returns the report dict (also written
    to ``run/eval/<name>.json`` and ``.md`` with plots unless ``cfg.write`` is False).

    Nothing the run holds changes: not the catalog, the tokenizer, the split or
    ``run.json``. A stale model (``talkplay.fingerprint.check_model``) is refused.
    """
    cfg = cfg or EvalConfig()
    cfg.validate()
    if not Catalog.exists(run.path):
        raise InputError(f"no catalog in {run.path}; run `talkplay import` first", field="RUN")
    t_start = time.perf_counter()
    factories = _system_factories(run, cfg)  # a stale model is refused before anything else runs
    catalog = run.load_catalog(validate=False)
    # read-only: a split no stage has recorded yet is the default one, as baselines see it
    split = run_split(run, catalog, record=False)
    convs, conv_source = _select_conversations(run, cfg, catalog, split)
    if cfg.limit is not None:
        convs = convs[: cfg.limit]
    cases = make_cases(cfg.protocol, convs, catalog.ids(), cfg.pool)
    if not cases:
        raise InputError(f"no turns to score under the {cfg.protocol} protocol in {conv_source}",
                         field="--protocol")
    unknown_gold = {g for c in cases for g in c.gold if g not in catalog.index}
    if unknown_gold:
        log.warning("%d gold track(s) are not in the catalog; no system can rank them", len(unknown_gold))
    sl = slices(catalog, split, convs)
    kinds = request_kinds(convs)
    turns = turn_kinds(convs, CatalogMentions(catalog))
    probe = probe_cases(cases, catalog) if cfg.follow_ups else []
    name = cfg.name or cfg.protocol + (f"-{Path(cfg.conversations).stem}" if cfg.conversations else "")
    systems: dict[str, Any] = {}
    predictions: dict[str, list[dict[str, Any]]] = {}
    for sys_name, factory in factories.items():
        rec = factory()
        systems[sys_name], predictions[sys_name] = score_system(sys_name, rec, run, cases, sl.cold, cfg,
                                                                kinds, turns)
        if cfg.follow_ups and sys_name != LEAK_PROBE:
            ranked = {p["docid"]: [n["docid"] for n in p["neighbor"]] for p in predictions[sys_name]}
            systems[sys_name]["follow_ups"] = follow_up_probe(rec, probe, catalog, sys_name, ranked)
        if sys_name == TALKPLAY and cfg.replies:
            base = (fingerprint.model_meta(run) or {}).get("base_model")  # the untuned LM, for fluency
            systems[sys_name].update(reply_report(rec.engine, cases, catalog, cfg.replies,
                                                  conversations=convs, base_model=base))
    ceiling = ceiling_entry(convs, cases, sl.cold, cfg, kinds)
    if ceiling is not None:
        systems[CEILING] = ceiling
    result: dict[str, Any] = {
        "name": name,
        "run": str(run.path),
        "protocol": cfg.protocol,
        "pool": cfg.pool,
        "conversations": {"source": conv_source, "n": len(convs), "n_turns": len(cases),
                          "n_train": len(split.train)},
        "catalog": {"n_tracks": len(catalog), "cold_tracks": len(sl.cold),
                    "unseen_in_training_data": len(set(catalog.ids()) - sl.seen)},
        "cold_definition": "gold restricted to tracks that never occur in the training conversations",
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()},
        "inputs": scored_inputs(run, catalog, list(systems)),
        "systems": systems,
        "seconds": 0.0,
        "files": {},
    }
    result["seconds"] = round(time.perf_counter() - t_start, 2)
    write_outputs(run, cfg, result, predictions)
    return result
