"""Dialog building and rendering on a real run: speed and sequence lengths.

Run as ``nice python benchmarks/dialogs.py RUN [--base-model smollm2-135m]`` on a run that
has a catalog and a music tokenizer (``talkplay import``, ``encode``, ``tokenize``). It
builds the dialogs (``build_dialogs`` with default settings) unless ``--no-build``, then
renders every train conversation with the base model's tokenizer and prints, per source:
conversations, rendering speed, tokens per conversation (mean, median, p95, max), the
share of tokens under the loss mask, and the share of music tokens. Token counts are what
training pays for, so they size a CPU training budget.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import defaultdict
from pathlib import Path

from rich.console import Console
from rich.table import Table

from talkplay.dialogs import DialogsConfig, build_dialogs, load_dialogs, render
from talkplay.model import add_music_tokens, load_tokenizer
from talkplay.run import Run
from talkplay.tokenizer import MusicTokenizer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--base-model", default="smollm2-135m")
    ap.add_argument("--no-build", action="store_true", help="Use the dialogs already in the run.")
    ap.add_argument("--synthesize", type=int, default=None)
    args = ap.parse_args()
    run = Run(args.run)
    console = Console(width=150)
    if not args.no_build:
        t0 = time.perf_counter()
        info = build_dialogs(run, DialogsConfig(synthesize=args.synthesize))
        console.print(f"build_dialogs: {time.perf_counter() - t0:.1f} s; train {info['train']:,}, "
                      f"valid {info['valid']:,}, test {info['test']:,} conversations "
                      f"({info['imported']:,} imported, {info['synthesized']:,} synthetic, "
                      f"{info['alignment']:,} alignment)")
    music = MusicTokenizer.load(run.tokenizer_dir)
    tok = load_tokenizer(args.base_model)
    add_music_tokens(tok, music)
    convs = load_dialogs(run, "train")
    stats: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for conv in convs:
        t0 = time.perf_counter()
        r = render(conv, tok, music)
        s = stats[conv.source or "unknown"]
        s["sec"].append(time.perf_counter() - t0)
        s["len"].append(len(r.input_ids))
        s["sup"].append(sum(r.loss_mask))
        s["music"].append(len(r.music_positions))
    table = Table(title=f"rendering {len(convs):,} train conversations with the {args.base_model} tokenizer")
    for col in ("source", "convs", "convs/s", "tokens mean", "median", "p95", "max", "total tokens",
                "supervised", "music tokens"):
        table.add_column(col, justify="left" if col == "source" else "right")
    for src, s in sorted(stats.items()):
        lens = sorted(s["len"])
        total = sum(lens)
        table.add_row(src, f"{len(lens):,}", f"{len(lens) / sum(s['sec']):,.0f}", f"{total / len(lens):.0f}",
                      f"{statistics.median(lens):.0f}", f"{lens[int(0.95 * (len(lens) - 1))]}", f"{lens[-1]}",
                      f"{total:,}", f"{sum(s['sup']) / total:.0%}", f"{sum(s['music']) / total:.0%}")
    console.print(table)


if __name__ == "__main__":
    main()
