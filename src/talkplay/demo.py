"""The end-to-end demo: import, encode, dialogs, train, evaluate, in one resumable run (and
tokenize, before dialogs, when it trains a codes model).

Call as ``run_demo(Run("runs/demo"), DemoConfig(), on_status=print_fn)`` or from the shell as
``talkplay demo``; ``DemoConfig.preset("cpcd")`` (``talkplay demo cpcd``) is the same pipeline
on CPCD's conversations about popular music (``PRESETS``). Each stage calls the library entry
point that its own subcommand calls, with a typed config built from ``DemoConfig``.

Resuming: a stage counts as done when ``run.json`` holds a ``demo`` record for it whose
fingerprint (its config plus every earlier stage's) matches, *and* its artifacts exist.
The record is written only after the stage function has returned, i.e. after its
artifacts were atomically moved into place, so an interrupted stage is simply run again
and a finished one is never redone. Once any stage runs, every later stage runs too, so
nothing downstream is built from stale inputs.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from talkplay.catalog import Catalog
from talkplay.dialogs import DialogsConfig, build_dialogs
from talkplay.encoders import EncodeConfig, encode_run
from talkplay.errors import InputError, TalkPlayError
from talkplay.evaluate import EvalConfig, evaluate_run
from talkplay.log import get_logger
from talkplay.run import Run
from talkplay.sources import ImportConfig, import_into_run
from talkplay.train import train_run
from talkplay.train_config import TrainConfig

log = get_logger(__name__)

DEMO_STAGE = "demo"  # the run.json stage under which the demo keeps its own records
STAGES = ("import", "encode", "tokenize", "dialogs", "train", "evaluate")
# a content model reads no music codes: its demo has no tokenize stage
CONTENT_STAGES = tuple(s for s in STAGES if s != "tokenize")
DEMO_COLLECTIONS = {
    "oneills1850": 120, "essenFolksong": 120, "bach": 80, "airdsAirs": 60, "ryansMammoth": 60,
    "miscFolk": 40, "palestrina": 40, "monteverdi": 30, "trecento": 20, "josquin": 10, "beethoven": 10,
    "mozart": 10,
}
# Content-grounded tracks (each track one row computed from its words and its metadata, tags,
# lyrics and audio embeddings) with all 30 layers and LoRA: the pretrained LM keeps writing
# fluent replies (8 layers rank better in the same minutes, but after ~50 steps their replies
# are word salad: BENCHMARKS.md, "Words"), and a track needs no token of its own to learn.
# Training is bounded by time, not steps, so the first run fits 15 minutes on a slow 2-core
# machine (BENCHMARKS.md, "Demo").
# cards: the demo is a chat, so its replies copy from each track's card (costs some ranking).
# words_gain 1.5 won tag requests untrained but lost overall once trained (BENCHMARKS.md, "Context").
# current 2: the demo's requests name a new album, artist or tag turn by turn, and the turn's own
# message at twice the whole conversation's weight took hit@10 from 0.28 to 0.33 and the
# requests naming an attribute from 0.38 to 0.48, level with BM25 (BENCHMARKS.md, "Current turn")
# exit_layer 0: the track head reads the last layer, as the demo's figures were measured (the
# two-exit default is measured on CPCD, BENCHMARKS.md "Replies that talk")
DEMO_TRAIN = {"time_budget": 6.0, "epochs": 1.0, "batch_size": 8, "max_length": 256, "init": "describe",
              "lora": True, "lr": 1e-3, "cards": True, "current": 2.0, "exit_layer": 0}
# about sqrt(catalog) clusters per modality: coarse codes a short training can learn
DEMO_TOKENIZE = {"k": 25}
# synthesized dialogs carry no goal playlist: score each turn's recommended track (next-track)
# one forward per turn: all 60 held-out dialogs cost about a minute. 20 checked replies (of
# the 60 conversations' last turns; about 2.5 s each here) keep the replies table and the
# whole first run inside 15 minutes on a machine at half this one's speed
DEMO_EVALUATE = {"protocol": "next-track", "n_boot": 200, "replies": 20}

# The CPCD demo trains for this many minutes: with the base model's one-time conversion, encoding
# 7.5k tracks' metadata (about 35 s) and CPCD's evaluation with 20 replies (a few minutes), the
# whole first run stays inside 20 minutes on 2 slow cores
CPCD_TRAIN_MINUTES = 12.0
# catalog name -> the DemoConfig fields whose values differ from the music21 demo's (the default)
PRESETS: dict[str, dict[str, Any]] = {
    "music21": {},
    # CPCD's own 400 conversations (talkplay/data/cpcd, CC BY 4.0): YouTube tracks with titles,
    # artists and albums only, so the metadata modality alone and no audio; no music tokens (the
    # content-grounded model needs none); only the dataset's dialogs, no alignment or search turns;
    # TrainConfig's own defaults (the CPCD recipe; model and keep_layers None defer to them) but
    # for the modality and the time budget
    "cpcd": {
        "source": "cpcd", "collections": None, "audio_limit": None, "model": None, "keep_layers": None,
        "encode": {"modalities": ("metadata",)},
        "tokenize": {},
        "dialogs": {"align": False, "search": False},
        "train": {"modalities": "metadata", "time_budget": CPCD_TRAIN_MINUTES},
        "evaluate": {"protocol": "cpcd", "replies": 20},
    },
}
DEFAULT_RUNS = {"music21": "runs/demo", "cpcd": "runs/demo-cpcd"}


@dataclass
class DemoConfig:
    """Everything the demo does, with defaults sized for a 2-core CPU (see BENCHMARKS.md).

    ``DemoConfig(collections={"bach": 40}, model="tiny", train={"max_steps": 5})`` is a tiny run;
    ``DemoConfig.preset("cpcd", catalog_limit=20)`` a small CPCD one. The per-stage dicts
    (``encode``, ``tokenize``, ``dialogs``, ``train``, ``evaluate``) are keyword arguments
    for that stage's own config dataclass and win over the shortcuts above them.
    """

    source: str = "music21"
    # the importer's built-in default (music21: the corpus in the music21 package; cpcd: the
    # conversations shipped in talkplay/data/cpcd)
    source_path: str = "-"
    # music21 corpus folders and how many works of each to import: a varied small catalog
    # (Irish, Scottish and American dance tunes, German folk songs, Bach to Beethoven)
    collections: dict[str, int] | None = field(default_factory=lambda: dict(DEMO_COLLECTIONS))
    catalog_limit: int | None = None  # total tracks (CPCD: conversations); scales the quotas down
    audio_limit: int | None = 60  # tracks rendered to audio and encoded (a sample)
    model: str | None = "smollm2-135m"  # None: TrainConfig's base_model
    # 0: all layers; N keeps the first N (faster, but see DEMO_TRAIN); None: TrainConfig's default
    keep_layers: int | None = 0
    seed: int = 0
    import_options: dict[str, Any] = field(default_factory=dict)
    encode: dict[str, Any] = field(default_factory=dict)
    tokenize: dict[str, Any] = field(default_factory=lambda: dict(DEMO_TOKENIZE))
    dialogs: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=lambda: dict(DEMO_TRAIN))
    evaluate: dict[str, Any] = field(default_factory=lambda: dict(DEMO_EVALUATE))
    stop_after: str | None = None  # a stage name: stop once it is done (tests, partial runs)
    # the stages this demo has, in STAGES order: tokenize only when training a codes model
    stages: tuple[str, ...] = CONTENT_STAGES

    def __post_init__(self) -> None:
        if self.catalog_limit is not None and self.catalog_limit < 2:
            raise InputError("must be at least 2 (or unset for the whole corpus)", field="--catalog-limit")
        if self.audio_limit is not None and self.audio_limit < 0:
            raise InputError("must be >= 0", field="--audio-limit")
        self.stages = tuple(self.stages)  # a JSON config file gives a list
        if not self.stages or list(self.stages) != [s for s in STAGES if s in self.stages]:
            raise InputError(f"expected some of {', '.join(STAGES)}, in that order, each once",
                             field="stages")
        codes = self.train.get("track_repr", TrainConfig.track_repr) == "codes"
        if codes != ("tokenize" in self.stages):  # a stage nothing reads, or one a codes model needs
            raise InputError("a codes model needs the tokenize stage; a content model reads nothing it "
                             "writes (stages with tokenize go with train.track_repr codes)", field="stages")
        if self.stop_after is not None and self.stop_after not in self.stages:
            raise InputError(f"unknown stage {self.stop_after!r} (stages: {', '.join(self.stages)})",
                             field="stop_after")

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> DemoConfig:
        """``DemoConfig.preset("cpcd", model="tiny")``: the demo of that catalog (``PRESETS``);
        ``overrides`` (fields) win."""
        if name not in PRESETS:
            raise InputError(f"unknown demo catalog {name!r} (known: {', '.join(PRESETS)})", field="CATALOG")
        return cls(**{**copy.deepcopy(PRESETS[name]), **overrides})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_file(cls, path: str | Path, preset: str = "music21", **overrides: Any) -> DemoConfig:
        """A DemoConfig from a JSON file of its fields over the ``preset`` catalog's; ``overrides``
        (e.g. CLI flags) win."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise InputError("file not found", file=str(path)) from None
        except json.JSONDecodeError as e:
            raise InputError(f"not valid JSON ({e.msg})", file=str(path), line=e.lineno) from None
        if not isinstance(data, dict):
            raise InputError("expected a JSON object of DemoConfig fields", file=str(path))
        names = {f.name for f in dataclasses.fields(cls)}
        for key in data:
            if key not in names:
                raise InputError(f"DemoConfig has no field {key!r}", file=str(path), field=key)
        return cls.preset(preset, **{**data, **overrides})


@dataclass
class StageStatus:
    """One line of the stage list: ``status`` is pending, running, done, skipped or failed."""

    name: str
    status: str = "pending"
    seconds: float | None = None
    cpu_seconds: float | None = None  # CPU time of this process and its children (contention-proof)
    note: str = ""
    summary: dict[str, Any] = field(default_factory=dict)


StatusCallback = Callable[[list[StageStatus], StageStatus], None]


# --- building each stage's config ---------------------------------------------------------


def _make_config(cls: type, values: dict[str, Any], stage: str) -> Any:
    """``cls(**values)`` restricted to fields it has; unknown keys are an InputError naming them."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise InputError(f"{cls.__name__} has no option {', '.join(unknown)}", field=f"{stage}.{unknown[0]}")
    return cls(**values)


def _shortcuts(cls: type, candidates: dict[str, Any]) -> dict[str, Any]:
    """The shortcut values whose names the stage config actually has (None means default)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in candidates.items() if k in names and v is not None}


def _config_dict(cfg: Any) -> Any:
    if isinstance(cfg, list):
        return [_config_dict(c) for c in cfg]
    return dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else dict(cfg)


@dataclass
class Stage:
    name: str
    build: Callable[[DemoConfig], Any]  # -> the stage's config object
    execute: Callable[[Run, Any], dict[str, Any]]
    artifacts: Callable[[Run, Any], list[Path]]  # (run, the stage's config) -> files it makes


def _import_build(cfg: DemoConfig) -> list[Any]:
    """One ImportConfig per collection (each with its quota), or one for the whole source."""
    if not cfg.collections:
        opts = {k: v for k, v in {"limit": cfg.catalog_limit, **cfg.import_options}.items() if v is not None}
        return [ImportConfig(source=cfg.source, path=cfg.source_path, options=opts)]
    quotas = dict(cfg.collections)
    total = sum(quotas.values())
    if cfg.catalog_limit is not None and cfg.catalog_limit < total:
        quotas = {c: max(1, q * cfg.catalog_limit // total) for c, q in quotas.items()}
    return [ImportConfig(source=cfg.source, path=cfg.source_path,
                         options={**cfg.import_options, "collections": [c], "limit": q})
            for c, q in quotas.items()]


def _import_exec(run: Run, configs: list[Any]) -> dict[str, Any]:
    if Catalog.exists(run.path):
        # importing merges into a catalog; the demo restarts its own so a new limit holds,
        # but never throws away a catalog someone else put there
        mine = run.stage(DEMO_STAGE)
        if not (mine.get("catalog_by_demo") or mine.get("done", {}).get("import")):
            raise TalkPlayError(f"{run.path} already holds a catalog the demo did not make; "
                                "choose another --run directory")
        for name in ("catalog.parquet", "playlists.parquet", "conversations.parquet"):
            (run.path / name).unlink(missing_ok=True)
    run.record(DEMO_STAGE, {"catalog_by_demo": True})
    info: dict[str, Any] = {}
    for c in configs:
        info = import_into_run(run, c)
    return {"tracks": info["total"]["tracks"], "playlists": info["total"]["playlists"],
            "imports": len(configs)}


def _encode_build(cfg: DemoConfig) -> Any:
    values = _shortcuts(EncodeConfig, {"audio_limit": cfg.audio_limit, "seed": cfg.seed})
    return _make_config(EncodeConfig, {**values, **cfg.encode}, "encode")


def _encode_artifacts(run: Run, _cfg: Any = None) -> list[Path]:
    d = run.embeddings_dir
    found = sorted(p for p in d.glob("*.npy") if not p.name.endswith(".mask.npy")) if d.exists() else []
    return found or [d / "<modality>.npy"]


def _tokenize_build(cfg: DemoConfig) -> Any:
    from talkplay.tokenizer import TokenizerConfig  # the codes path, only for a codes demo

    values = _shortcuts(TokenizerConfig, {"seed": cfg.seed})
    return _make_config(TokenizerConfig, {**values, **cfg.tokenize}, "tokenize")


def _tokenize_exec(run: Run, cfg: Any) -> Any:
    from talkplay.tokenizer import tokenize_run

    return tokenize_run(run, cfg, force=True)


def _dialogs_build(cfg: DemoConfig) -> Any:
    values = _shortcuts(DialogsConfig, {"seed": cfg.seed})
    return _make_config(DialogsConfig, {**values, **cfg.dialogs}, "dialogs")


def _train_build(cfg: DemoConfig) -> Any:
    values = _shortcuts(TrainConfig, {"base_model": cfg.model, "keep_layers": cfg.keep_layers,
                                      "seed": cfg.seed})
    return _make_config(TrainConfig, {**values, **cfg.train}, "train")


def _evaluate_build(cfg: DemoConfig) -> Any:
    values = _shortcuts(EvalConfig, {"seed": cfg.seed})
    return _make_config(EvalConfig, {**values, **cfg.evaluate}, "evaluate")


def _eval_artifacts(run: Run, cfg: Any) -> list[Path]:
    name = getattr(cfg, "name", None) or getattr(cfg, "protocol", "report")
    return [run.eval_dir / f"{name}.json"]


# Stages run with force=True: the demo reruns every stage after one it reruns, training
# included, so replacing what an earlier model was built on is what it means to do.
PIPELINE: dict[str, Stage] = {
    s.name: s
    for s in [
        Stage("import", _import_build, _import_exec, lambda r, c: [r.path / "catalog.parquet"]),
        # rerunning a stage replaces what the demo's own model depended on: it retrains next
        Stage("encode", _encode_build, lambda r, c: encode_run(r, c, force=True), _encode_artifacts),
        Stage("tokenize", _tokenize_build, _tokenize_exec, lambda r, c: [r.tokenizer_dir]),
        Stage("dialogs", _dialogs_build, lambda r, c: build_dialogs(r, c, force=True),
              lambda r, c: [r.dialogs_dir / f"{s}.jsonl" for s in ("train", "valid", "test")]),
        Stage("train", _train_build, train_run, lambda r, c: [r.model_dir / "config.json"]),
        Stage("evaluate", _evaluate_build, evaluate_run, _eval_artifacts),
    ]
}


# --- bookkeeping ------------------------------------------------------------------------------


def fingerprint(stage: str, cfg_dict: Any, upstream: str) -> str:
    """A stable hash of a stage's config and everything upstream of it."""
    blob = json.dumps({"stage": stage, "config": cfg_dict, "upstream": upstream}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _done_records(run: Run) -> dict[str, Any]:
    return dict(run.stage(DEMO_STAGE).get("done", {}))


def _mark_done(run: Run, name: str, entry: dict[str, Any]) -> None:
    done = _done_records(run)
    done[name] = entry
    run.record(DEMO_STAGE, {"done": done})


def _forget_from(run: Run, name: str) -> None:
    """Drop the records of ``name`` and every later stage before ``name`` runs again."""
    done = _done_records(run)
    later = STAGES[STAGES.index(name):]
    if any(s in done for s in later):
        run.record(DEMO_STAGE, {"done": {k: v for k, v in done.items() if k not in later}})


def _complete(run: Run, stage: Stage, stage_cfg: Any, fp: str, rec: dict[str, Any] | None) -> bool:
    """Recorded as done with this very config and upstream, and its artifacts are there."""
    if not rec or rec.get("fingerprint") != fp:
        return False
    return all(p.exists() and (p.is_file() or any(p.iterdir())) for p in stage.artifacts(run, stage_cfg))


def _cpu_seconds() -> float:
    import resource

    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _brief(info: Any) -> dict[str, Any]:
    """A small JSON-safe summary of what a stage returned (scalars only)."""
    if not isinstance(info, dict):
        return {}
    return {k: v for k, v in info.items() if isinstance(v, (int, float, str, bool)) or v is None}


def plan(run: Run, cfg: DemoConfig) -> list[StageStatus]:
    """What ``run_demo`` would do now: each stage ``done`` (would be skipped) or ``pending``."""
    return [StageStatus(s.name, "done" if ok else "pending") for s, ok in _states(run, cfg)]


def _states(run: Run, cfg: DemoConfig) -> list[tuple[Stage, bool]]:
    done = _done_records(run)
    upstream, out, stale = "", [], False
    for name in _stage_names(cfg):
        stage = PIPELINE[name]
        try:
            stage_cfg = stage.build(cfg)
        except TalkPlayError:
            out.append((stage, False))
            stale = True
            continue
        fp = fingerprint(name, _config_dict(stage_cfg), upstream)
        ok = not stale and _complete(run, stage, stage_cfg, fp, done.get(name))
        stale = stale or not ok
        out.append((stage, ok))
        upstream = fp
    return out


def _stage_names(cfg: DemoConfig) -> tuple[str, ...]:
    if cfg.stop_after is None:
        return cfg.stages
    return cfg.stages[: cfg.stages.index(cfg.stop_after) + 1]


def run_demo(run: Run, cfg: DemoConfig, on_status: StatusCallback | None = None) -> dict[str, Any]:
    """Run every stage that is not already complete; returns per-stage statuses and results.

    ``on_status(all_statuses, changed)`` is called on every change (the CLI draws the stage
    list from it). Exceptions, KeyboardInterrupt included, propagate after the running
    stage is marked ``failed``; nothing is recorded for it, so the next call reruns it.
    """
    t_start = time.perf_counter()
    names = _stage_names(cfg)
    for name in cfg.stages:  # a mistyped option fails now, not after twenty minutes of work
        try:
            PIPELINE[name].build(cfg)
        except InputError:
            raise
        except TalkPlayError:
            pass  # a stage missing from this install fails when the pipeline reaches it
    run.path.mkdir(parents=True, exist_ok=True)
    run.record(DEMO_STAGE, {"config": dataclasses.asdict(cfg)})
    statuses = [StageStatus(n) for n in names]
    done = _done_records(run)

    def emit(st: StageStatus) -> None:
        if on_status is not None:
            on_status(statuses, st)

    upstream, stale, results = "", False, {}
    for st in statuses:
        stage = PIPELINE[st.name]
        try:
            stage_cfg = stage.build(cfg)
        except TalkPlayError as e:
            st.status, st.note = "failed", str(e)
            emit(st)
            raise
        cfg_dict = _config_dict(stage_cfg)
        fp = fingerprint(st.name, cfg_dict, upstream)
        upstream = fp
        rec = done.get(st.name)
        if not stale and _complete(run, stage, stage_cfg, fp, rec):
            assert rec is not None
            st.status, st.note, st.summary = "skipped", "already complete", rec.get("summary", {})
            st.seconds, st.cpu_seconds = rec.get("seconds"), rec.get("cpu_seconds")
            emit(st)
            continue
        stale = True
        _forget_from(run, st.name)
        st.status = "running"
        emit(st)
        t0, c0 = time.perf_counter(), _cpu_seconds()
        try:
            info = stage.execute(run, stage_cfg)
        except BaseException as e:
            st.status, st.seconds = "failed", round(time.perf_counter() - t0, 2)
            st.note = "interrupted" if isinstance(e, KeyboardInterrupt) else str(e).splitlines()[0][:200]
            emit(st)
            raise
        st.seconds = round(time.perf_counter() - t0, 2)
        st.cpu_seconds = round(_cpu_seconds() - c0, 2)
        missing = [str(p) for p in stage.artifacts(run, stage_cfg) if not p.exists()]
        if missing:
            st.status, st.note = "failed", f"finished without writing {', '.join(missing)}"
            emit(st)
            raise TalkPlayError(f"stage '{st.name}' finished without writing {', '.join(missing)}")
        st.summary = _brief(info)
        results[st.name] = info
        _mark_done(run, st.name, {"fingerprint": fp, "seconds": st.seconds, "cpu_seconds": st.cpu_seconds,
                                   "config": cfg_dict,
                                   "summary": st.summary})
        st.status = "done"
        emit(st)
    total = round(time.perf_counter() - t_start, 2)
    run.record(DEMO_STAGE, {"last_seconds": total})
    return {"run": str(run.path), "seconds": total,
            "stages": [dataclasses.asdict(s) for s in statuses],
            "evaluation": evaluation_summary(run, cfg) if "evaluate" in names else None}


def evaluation_summary(run: Run, cfg: DemoConfig | None = None) -> dict[str, Any] | None:
    """The evaluation report the evaluate stage wrote under ``eval/`` (None before it ran)."""
    try:
        ecfg = _evaluate_build(cfg or DemoConfig())
    except TalkPlayError:
        return None
    name = getattr(ecfg, "name", None) or getattr(ecfg, "protocol", "")
    p = run.eval_dir / f"{name}.json"
    if not p.exists():
        return None
    return json.loads(p.read_text(encoding="utf-8"))
