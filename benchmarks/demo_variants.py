"""Demo-model variants side by side, scored on many held-out dialogs and per request kind.

Run as ``python benchmarks/demo_variants.py --base RUN [--variants default,levels2]
[--limit 60] [--systems talkplay,bm25] [--json OUT]`` where RUN is a finished ``talkplay demo``
run. Each variant copies RUN's catalog, embeddings and records into a scratch run and calls
the demo's own ``run_demo`` with that variant's ``DemoConfig`` overrides: import and encode
are reused (same fingerprints), and tokenize, dialogs, train and evaluate run exactly as the
demo runs them, on whatever device torch finds. The table gives hit@10 over all turns and per
request kind (from the evaluation's per-turn predictions), the training time, and the
ceiling: each synthesized turn's gold is a uniform pick among ``extra["candidates"]``
equally fitting tracks, so no ranking can expect more than min(1, 10 / candidates).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from training import copy_for_training  # noqa: E402  (benchmarks/training.py, beside this file)

from talkplay.demo import DemoConfig, run_demo  # noqa: E402
from talkplay.evaluate.metrics import turn_metrics, uniform_choice_metrics  # noqa: E402
from talkplay.run import Run  # noqa: E402

# DemoConfig overrides per variant; stage dicts are merged over the demo's own defaults
VARIANTS: dict[str, dict] = {
    "default": {},
    "levels2": {"tokenize": {"levels": 2}},
    "k12": {"tokenize": {"k": 12}},
    "k50": {"tokenize": {"k": 50}},
    "steps180": {"train": {"max_steps": 180}},
    "len256-steps135": {"train": {"max_length": 256, "max_steps": 135}},
}

def variant_config(name: str, limit: int, systems: list[str], predictions: Path, model: str | None = None,
                   max_steps: int | None = None) -> DemoConfig:
    base = DemoConfig()
    over = VARIANTS[name]
    merged = {stage: {**getattr(base, stage), **over.get(stage, {})} for stage in ("tokenize", "train")}
    if max_steps is not None:  # quick checks of the script itself
        merged["train"]["max_steps"] = max_steps
    evaluate = {**base.evaluate, "limit": limit, "systems": systems, "predictions_out": str(predictions),
                "plots": False}
    return DemoConfig(**merged, evaluate=evaluate, model=model or base.model)


def test_turns(run: Run) -> dict[str, dict]:
    """``"<dialog id>:<turn>"`` -> that held-out turn's ``extra`` (request kind, candidates)."""
    out = {}
    for line in (run.dialogs_dir / "test.jsonl").read_text(encoding="utf-8").splitlines():
        d = json.loads(line)
        for i, t in enumerate(d["turns"]):
            out[f"{d['id']}:{i}"] = {**(t.get("extra") or {}), "gold": (t.get("recommended") or [None])[0]}
    return out


def per_kind(values: list[tuple[str, float]]) -> dict[str, float]:
    """Means per request kind, plus ``all``."""
    groups: dict[str, list[float]] = defaultdict(list)
    for kind, v in values:
        groups[kind].append(v)
        groups["all"].append(v)
    return {k: sum(v) / len(v) for k, v in groups.items()}


def hits(pred_file: Path, turns: dict[str, dict]) -> dict[str, float]:
    """``"<dialog id>:<turn>"`` -> hit@10, for every turn in a predictions file."""
    out = {}
    for line in pred_file.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        ranked = [n["docid"] for n in row["neighbor"]]
        out[row["docid"]] = turn_metrics(ranked, {turns[row["docid"]]["gold"]}, ks=(10,))["hit@10"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", required=True, type=Path, help="a finished `talkplay demo` run")
    ap.add_argument("--variants", default="default,levels2",
                    help=f"comma-separated, of: {', '.join(VARIANTS)}")
    ap.add_argument("--limit", type=int, default=60, help="held-out dialogs to score")
    ap.add_argument("--systems", default="talkplay,bm25")
    ap.add_argument("--work", type=Path, default=None, help="where the scratch runs go (default: a temp dir)")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--model", default=None, help="base model (default: the demo's)")
    ap.add_argument("--max-steps", type=int, default=None,
                    help="override every variant's steps (smoke tests)")
    args = ap.parse_args()
    names = [v for v in args.variants.split(",") if v]
    for v in names:
        if v not in VARIANTS:
            raise SystemExit(f"unknown variant {v!r} (known: {', '.join(VARIANTS)})")
    systems = [s for s in args.systems.split(",") if s]
    work = args.work or Path(tempfile.mkdtemp(prefix="talkplay-variants-"))
    rows: list[dict] = []
    for name in names:
        # the import and encode outputs, with their demo records, so only later stages run
        run = Run(copy_for_training(args.base, work / name, folders=("embeddings",)))
        preds = work / f"{name}-predictions"
        t0 = time.perf_counter()
        result = run_demo(run, variant_config(name, args.limit, systems, preds, args.model, args.max_steps))
        wall = time.perf_counter() - t0
        stages = {s["name"]: s for s in result["stages"]}
        turns = test_turns(run)
        kind = {docid: t.get("kind", "?") for docid, t in turns.items()}
        for s in systems:
            h = hits(next(preds.glob(f"{s}.*.jsonl")), turns)
            rows.append({"variant": name, "system": s, "hits": per_kind([(kind[d], v) for d, v in h.items()]),
                         "wall_s": round(wall, 1), "train_s": stages["train"]["seconds"],
                         "n": dict(Counter(kind[d] for d in h), all=len(h))})
        if name == names[0]:  # the best expected hit@10 of the scored turns: see evaluate.ceiling_turns
            best = [(kind[d], uniform_choice_metrics(turns[d]["candidates"], ks=(10,))["hit@10"])
                    for d in h if turns[d].get("candidates")]
            rows.insert(0, {"variant": "ceiling", "system": "-", "n": {}, "hits": per_kind(best)})
        print(json.dumps(rows[-len(systems):]), flush=True)
        if args.json:
            args.json.write_text(json.dumps(rows, indent=1))
    kinds_all = sorted({k for r in rows for k in r["hits"] if k != "all"})
    print("| variant | system | all | " + " | ".join(kinds_all) + " | train s |")
    print("|---|---|---|" + "---|" * len(kinds_all) + "---|")
    for r in rows:
        cells = [f"{r['hits'].get(k, float('nan')):.3f}" for k in ["all", *kinds_all]]
        print(f"| {r['variant']} | {r['system']} | " + " | ".join(cells) + f" | {r.get('train_s') or '-'} |")
    if len(rows) > 1:
        print("turns per kind: " + ", ".join(f"{k} {n}" for k, n in sorted(rows[1]["n"].items())))


if __name__ == "__main__":
    main()
