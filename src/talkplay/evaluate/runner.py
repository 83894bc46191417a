"""``evaluate_run(Run(path), EvalConfig(protocol="cpcd"))``: every system, one table.

Picks the conversations (the run's held-out split, or ``cfg.conversations`` — any file
an importer reads — after refusing ones the run trained on), builds the protocol's
cases, fits each system on the run, ranks every case, scores all turns plus the cold
slice (gold restricted to tracks that never occur in training conversations), and writes
JSON, Markdown, plots and optional CPCD-format prediction files under ``run/eval/``.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from talkplay.atomic import write_jsonl_atomic
from talkplay.baselines import BASELINES, CatalogRecommender, make_baseline, top_k
from talkplay.baselines.base import baskets
from talkplay.catalog import Catalog, Conversation, Track
from talkplay.conversations import read_conversations as load_dialogs
from talkplay.errors import InputError
from talkplay.evaluate.metrics import K_VALUES, ScoredTurn, aggregate, uniform_choice_metrics
from talkplay.evaluate.protocols import PROTOCOLS, EvalCase, clean_ranking, make_cases, score_case
from talkplay.evaluate.report import write_report
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
from talkplay.tokenizer import extend_run

log = get_logger(__name__)

TALKPLAY = "talkplay"
LEAK_PROBE = "leak-probe"
CEILING = "ceiling"  # reference row for synthesized dialogs; see ceiling_turns
DEFAULT_BASELINES = ("random", "popularity", "bm25", "bm25-all", "dense", "cooccur", "hybrid")


@dataclass
class EvalConfig:
    """What to evaluate: ``EvalConfig(protocol="cpcd", systems=["bm25", "dense"])``.

    ``systems=None`` means every baseline plus TalkPlay when ``run/model`` exists.
    ``conversations`` scores a new test file (format: ``cpcd``, ``talkplaydata2`` or the
    project's own JSONL, detected unless ``conversations_format`` is set). ``pool``
    restricts next-track rankings to each session's candidate pool. ``leak_probe`` adds
    the reference row that ranks test-only tracks first (not a system).
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
        return load_dialogs(path), []
    cat = get_importer(fmt).load(str(path), Issues())
    return cat.conversations, cat.tracks


def add_cold_tracks(run: Run, catalog: Catalog, tracks: list[Track]) -> list[str]:
    """Add tracks the catalog lacks, as ``talkplay catalog add`` does (codes from the
    existing codebooks when the run has a tokenizer; no retraining); returns their ids."""
    new = [t for t in tracks if t.id not in catalog.index]
    if not new:
        return []
    for t in new:
        catalog.add_track(t)
    catalog.save(run.path)
    if run.tokenizer_dir.exists():
        extend_run(run, new)
    log.info("added %d track(s) the catalog lacked; they are reported as cold", len(new))
    return [t.id for t in new]


def _system_factories(run: Run, cfg: EvalConfig) -> dict[str, Callable[[], Recommender]]:
    names = list(cfg.systems) if cfg.systems else list(DEFAULT_BASELINES)
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

    def make() -> Recommender:
        from talkplay.engine import TalkPlayRecommender

        return TalkPlayRecommender()

    return make


def _select_conversations(run: Run, cfg: EvalConfig, catalog: Catalog, split: Split
                          ) -> tuple[list[Conversation], str, list[str]]:
    if cfg.conversations is not None:
        path = Path(cfg.conversations)
        convs, tracks = load_conversation_file(path, cfg.conversations_format)
        check_not_trained_on(run, convs, split, file=str(path))
        referenced = {t for c in convs
                      for t in (*c.goal, *(x for tr in c.turns for x in (*tr.recommended, *tr.liked)))}
        new_ids = add_cold_tracks(run, catalog, [t for t in tracks if t.id in referenced])
        return convs, str(path), new_ids
    if cfg.split == "valid":
        valid = run.dialogs_dir / "valid.jsonl"
        if not valid.exists():
            raise InputError(f"no validation split at {valid}", field="--split")
        return load_dialogs(valid), str(valid), []
    return split.test, split.source, []


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


def evaluate_run(run: Run, cfg: EvalConfig | None = None) -> dict[str, Any]:
    """Evaluate every system in ``cfg`` on ``run``; returns the report dict (also written
    to ``run/eval/<name>.json`` and ``.md`` with plots unless ``cfg.write`` is False)."""
    cfg = cfg or EvalConfig()
    cfg.validate()
    if not Catalog.exists(run.path):
        raise InputError(f"no catalog in {run.path}; run `talkplay import` first", field="RUN")
    t_start = time.perf_counter()
    catalog = run.load_catalog(validate=False)
    split = run_split(run, catalog, seed=cfg.seed)
    convs, conv_source, new_ids = _select_conversations(run, cfg, catalog, split)
    if new_ids:
        catalog = run.load_catalog(validate=False)
    if cfg.limit is not None:
        convs = convs[: cfg.limit]
    cases = make_cases(cfg.protocol, convs, catalog.ids(), cfg.pool)
    if not cases:
        raise InputError(f"no turns to score under the {cfg.protocol} protocol in {conv_source}",
                         field="--protocol")
    unknown_gold = {g for c in cases for g in c.gold if g not in catalog.index}
    if unknown_gold:
        log.warning("%d gold track(s) are not in the catalog; no system can rank them", len(unknown_gold))
    listened = listening_conversations(split.train)
    seen = {t for b in baskets(training_playlists(catalog.playlists, convs), listened) for t in b}
    seen_in_conversations = {t for b in baskets([], listened) for t in b}
    cold = set(catalog.ids()) - seen_in_conversations
    factories = _system_factories(run, cfg)
    name = cfg.name or cfg.protocol + (f"-{Path(cfg.conversations).stem}" if cfg.conversations else "")
    systems: dict[str, Any] = {}
    predictions: dict[str, list[dict[str, Any]]] = {}
    for sys_name, factory in factories.items():
        rec = factory()
        t0 = time.perf_counter()
        rec.fit(run)
        fit_s = time.perf_counter() - t0
        scored, scored_cold, scored_warm, preds = [], [], [], []
        short = 0
        t0 = time.perf_counter()
        prefetch = getattr(rec, "prefetch", None)
        if callable(prefetch):
            prefetch([c.context for c in cases])
        for case in progress(cases, total=len(cases), desc=f"{sys_name}"):
            ranked = _rank(rec, case)
            clean = clean_ranking(ranked, case.exclude)
            short += len(clean) < min(case.k, max(K_VALUES))
            tags = {"n_gold": len(case.gold)}
            scored.append(ScoredTurn(case.conversation_id, case.turn_index, score_case(case, clean), tags))
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
                        sys_name, max(K_VALUES), short)
        systems[sys_name] = {
            "is_system": sys_name != LEAK_PROBE,
            "fit_seconds": round(fit_s, 3),
            "predict_seconds": round(predict_s, 3),
            "all": aggregate(scored, n_boot=cfg.n_boot, seed=cfg.seed),
            "cold": aggregate(scored_cold, n_boot=cfg.n_boot, seed=cfg.seed),
            "warm": aggregate(scored_warm, n_boot=cfg.n_boot, seed=cfg.seed),
        }
        predictions[sys_name] = preds
        log.info("%s: hit@10 %.3f, mrr@100 %.3f (fit %.1fs, predict %.1fs)", sys_name,
                 systems[sys_name]["all"]["macro"]["hit@10"], systems[sys_name]["all"]["macro"]["mrr@100"],
                 fit_s, predict_s)
    ceiling = ceiling_turns(convs, cases)
    if ceiling is not None:  # one gold per turn, so a turn is either cold or warm
        is_cold = [case.gold[0] in cold for case in cases]
        parts = {"all": ceiling, "cold": [t for t, c in zip(ceiling, is_cold, strict=True) if c],
                 "warm": [t for t, c in zip(ceiling, is_cold, strict=True) if not c]}
        systems[CEILING] = {"is_system": False, "fit_seconds": 0.0, "predict_seconds": 0.0}
        for part, rows in parts.items():
            systems[CEILING][part] = aggregate(rows, n_boot=cfg.n_boot, seed=cfg.seed)
    result: dict[str, Any] = {
        "name": name,
        "run": str(run.path),
        "protocol": cfg.protocol,
        "pool": cfg.pool,
        "conversations": {"source": conv_source, "n": len(convs), "n_turns": len(cases),
                          "n_train": len(split.train)},
        "catalog": {"n_tracks": len(catalog), "cold_tracks": len(cold), "new_tracks": len(new_ids),
                    "unseen_in_training_data": len(set(catalog.ids()) - seen)},
        "cold_definition": "gold restricted to tracks that never occur in the training conversations",
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()},
        "systems": systems,
        "seconds": 0.0,
        "files": {},
    }
    if cfg.predictions_out is not None:
        out_dir = Path(cfg.predictions_out)
        for sys_name, preds in predictions.items():
            path = out_dir / f"{sys_name}.{name}.jsonl"
            write_jsonl_atomic(path, preds)
            result["files"][f"predictions:{sys_name}"] = str(path)
    result["seconds"] = round(time.perf_counter() - t_start, 2)
    if cfg.write:
        result["files"].update(write_report(run.eval_dir, result, plots=cfg.plots))
        run.record("eval", {name: {"systems": list(systems), "n_turns": len(cases),
                                   "hit@10": {s: v["all"]["macro"].get("hit@10") for s, v in systems.items()},
                                   "files": result["files"]}})
    return result
