"""How good is each initialisation of the new music-token rows before any training?

Run as ``nice python benchmarks/vocab_init.py RUN [--base-model smollm2-135m] [--n 16]`` on
a run with a music tokenizer and dialogs. For each ``init`` of ``expand_vocab``
(``mean_cov``: the paper's mean and covariance of the old rows; ``describe``: the mean
embedding of each token's cluster description; plus ``mean_cov`` scaled to 1e-4 of the
covariance, close to Hugging Face's mean resizing) it renders ``--n`` conversations from the
run's ``test`` split and reports the untrained model's mean cross-entropy on supervised
music tokens and on supervised text tokens, and the probability mass the model puts on any
music token right where a track starts. Lower music loss at step 0 is a better start; text
loss shows whether the new rows disturb the model's language (tied heads share the rows).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from talkplay.dialogs import load_dialogs, render
from talkplay.model import expand_vocab, load_base, music_token_strings
from talkplay.run import Run
from talkplay.tokenizer import MusicTokenizer


@torch.no_grad()
def score(model, tok, music, convs) -> dict[str, float]:
    music_ids = torch.tensor(sorted(set(tok.convert_tokens_to_ids(music_token_strings(music)))))
    is_music = torch.zeros(len(tok), dtype=torch.bool)
    is_music[music_ids] = True
    open_id = tok.convert_tokens_to_ids("<|music|>")
    sums = {"music": 0.0, "text": 0.0, "open_mass": 0.0}
    counts = {"music": 0, "text": 0, "open_mass": 0}
    for conv in convs:
        r = render(conv, tok, music)
        ids = torch.tensor([r.input_ids])
        logits = model(ids).logits[0, :-1].float()
        target = ids[0, 1:]
        mask = torch.tensor(r.loss_mask[1:], dtype=torch.bool)
        nll = torch.nn.functional.cross_entropy(logits, target, reduction="none")
        mus = is_music[target] & mask
        txt = ~is_music[target] & mask
        sums["music"] += nll[mus].sum().item()
        counts["music"] += int(mus.sum())
        sums["text"] += nll[txt].sum().item()
        counts["text"] += int(txt.sum())
        starts = (target == open_id) & mask
        if starts.any():
            probs = logits[starts].softmax(-1)
            sums["open_mass"] += probs[:, is_music].sum(-1).sum().item()
            counts["open_mass"] += int(starts.sum())
    return {k: sums[k] / max(1, counts[k]) for k in sums}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--base-model", default="smollm2-135m")
    ap.add_argument("--n", type=int, default=16, help="Test conversations scored.")
    ap.add_argument("--inits", default="mean_cov,mean_cov@1e-4,describe",
                    help="Comma-separated INIT or INIT@COV_SCALE settings.")
    args = ap.parse_args()
    settings = [(x.split("@")[0], float(x.split("@")[1]) if "@" in x else 1.0) for x in args.inits.split(",")]
    run = Run(args.run)
    music = MusicTokenizer.load(run.tokenizer_dir)
    convs = [c for c in load_dialogs(run, "test") if any(t.recommended for t in c.turns)][: args.n]
    table = Table(title=f"untrained {args.base_model} on {len(convs)} test conversations of {run.path.name}")
    for col in ("init", "music-token loss", "text loss", "P(music token) at a track start", "seconds"):
        table.add_column(col, justify="left" if col == "init" else "right")
    for init, scale in settings:
        model, tok = load_base(args.base_model)
        t0 = time.perf_counter()
        expand_vocab(model, tok, music, init=init, cov_scale=scale)
        s = score(model, tok, music, convs)
        name = init if scale == 1.0 else f"{init} (cov x {scale:g})"
        table.add_row(name, f"{s['music']:.2f}", f"{s['text']:.2f}", f"{s['open_mass']:.3f}",
                      f"{time.perf_counter() - t0:.0f}")
    Console(width=150).print(table)


if __name__ == "__main__":
    main()
