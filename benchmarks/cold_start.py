"""Strict cold start on CPCD: the held-out conversations' new tracks join the catalog only after training.

Run as ``python benchmarks/cold_start.py --base runs/cpcd --work runs/cold-start [--budget 20]
[--markdown]``. ``--base`` is an imported CPCD run (its recorded 350/50 split is kept).
The work run gets the base catalog without every track that occurs in a held-out
conversation and in no training conversation, so those tracks are not even rival rows
while the model trains. Then, as a user would: ``talkplay encode`` (metadata),
``talkplay dialogs --no-align --no-search``, ``talkplay train`` (the CPU recipe,
``--time-budget``), ``talkplay catalog add`` of the removed tracks, ``talkplay encode``
again (only the new rows are computed), and ``talkplay eval --protocol cpcd`` with dense,
BM25 and hybrid beside TalkPlay. No retraining after the tracks are added: their rows come
from their embeddings (and words) when the model loads. Prints the overall and cold-slice
table; every step's output goes to ``WORK/cold-start.log``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cpcd_cv import RECIPE  # noqa: E402

from talkplay.catalog import Catalog  # noqa: E402
from talkplay.run import Run  # noqa: E402
from talkplay.splits import SPLIT_STAGE, held_out_ids, training_playlists  # noqa: E402

SYSTEMS = "dense,bm25,hybrid,talkplay"
CELLS = [("all", "hit@10"), ("all", "mrr@100"), ("cold", "hit@10"), ("cold", "mrr@100")]


def held_out_only(catalog: Catalog, test_ids: set[str]) -> list[str]:
    """Tracks of held-out conversations that no training conversation mentions, in catalog order."""
    def tracks(conv):  # noqa: ANN001, ANN202
        named = {t for turn in conv.turns for t in (*turn.recommended, *turn.liked, *turn.disliked)}
        return named | set(conv.goal)

    train = set().union(*(tracks(c) for c in catalog.conversations if c.id not in test_ids))
    test = set().union(*(tracks(c) for c in catalog.conversations if c.id in test_ids))
    return [t for t in catalog.ids() if t in test - train]


def build(base: Path, work: Path) -> tuple[Run, Path, int]:
    """The work run without the held-out-only tracks, and a JSONL file holding them."""
    src = Run(base)
    catalog = src.load_catalog(validate=False)
    test_ids = held_out_ids(src)
    removed = set(held_out_only(catalog, test_ids))
    held_out = [c for c in catalog.conversations if c.id in test_ids]
    if work.exists():
        shutil.rmtree(work)
    run = Run(work)
    kept = [t for t in catalog.tracks if t.id not in removed]
    Catalog(kept, training_playlists(catalog.playlists, held_out), catalog.conversations).save(work)
    run.record(SPLIT_STAGE, {**src.stage(SPLIT_STAGE), "method": f"as {base}"})
    later = work.parent / f"{work.name}-added.jsonl"
    rows = [{"id": t.id, "title": t.title, "artists": t.artists, "album": t.album, "tags": t.tags}
            for t in catalog.tracks if t.id in removed]
    lines = [json.dumps({k: v for k, v in r.items() if v}) + "\n" for r in rows]
    later.write_text("".join(lines), encoding="utf-8")
    return run, later, len(rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", type=Path, required=True)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--budget", type=float, default=20.0, help="training time budget, minutes")
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    run, later, n_added = build(args.base, args.work)
    print(f"{args.work}: {len(run.load_catalog(validate=False))} tracks to train with; {n_added} "
          f"held-out-only tracks in {later}, added after training", flush=True)
    env = {**os.environ, "TALKPLAY_NO_PROGRESS": "1", "HF_HUB_OFFLINE": "1"}
    cli = [sys.executable, "-m", "talkplay.cli"]
    path = str(args.work)
    with open(args.work / "cold-start.log", "w") as log:
        for cmd in (["encode", path, "--modalities", "metadata"],
                    ["dialogs", path, "--no-align", "--no-search"],
                    ["train", path, *RECIPE, "--time-budget", str(args.budget)],
                    ["catalog", "add", path, str(later)],
                    ["encode", path, "--modalities", "metadata"],
                    ["eval", path, "--protocol", "cpcd", "--systems", SYSTEMS, "--name", "cold-start",
                     "--replies", "0", "--no-plots"]):
            print("talkplay " + " ".join(cmd), flush=True)
            subprocess.run([*cli, *cmd], check=True, env=env, stdout=log, stderr=subprocess.STDOUT)
    report = json.loads((args.work / "eval" / "cold-start.json").read_text())
    head = ["system", *[f"{part} {m}" for part, m in CELLS]]
    lines = []
    for name, entry in report["systems"].items():
        if not entry.get("is_system", True):
            continue
        lines.append([name, *[f"{entry[part]['macro'][m]:.3f}" for part, m in CELLS]])
    if args.markdown:
        print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
        print("\n".join("| " + " | ".join(r) + " |" for r in lines))
    else:
        for r in [head, *lines]:
            print("  ".join(f"{c:>14}" for c in r))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
