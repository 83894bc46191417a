"""Generation speed: constrained vs unconstrained decoding, and recommend latency.

Run as ``nice python benchmarks/generation.py`` (SmolLM2-135M, a 5,000-track synthetic
catalog) or ``--run RUN`` to use a run's tokenizer (and its trained model when
``RUN/model`` exists), ``--base-model tiny`` for a quick look. Prints two tables:

1. tokens/s of greedy ``model.generate`` of the same number of new tokens from the same
   prompt, with and without the trie ``LogitsProcessor`` (the prompt ends at the
   assistant's turn, so the constrained run writes catalog tracks and then text); runs
   alternate, best of ``--repeats``; the difference is the constraint's cost.
2. ``recommend`` latency (prompt + ranking) for k = 10 and k = 100, by beam search over the
   trie and, with ``--exact``, by exact scoring of every catalog sequence.

Timings from an untrained expanded model are representative: the cost depends on shapes,
not on the weights.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from talkplay.catalog import Catalog, Conversation, Track, Turn
from talkplay.codes import CodesEngine, TrieConstraint
from talkplay.engine import EngineConfig
from talkplay.model import expand_vocab, load_base
from talkplay.tokenizer import MusicTokenizer, TokenizerConfig

QUERY = "upbeat songs for a dance party, something like disco or funk from the seventies"


def synthetic_tokenizer(n: int, seed: int = 0) -> tuple[MusicTokenizer, Catalog]:
    """Clustered random embeddings for n tracks over four modalities, tokenized with k=256."""
    rng = np.random.default_rng(seed)
    styles = rng.integers(0, 512, size=n)
    emb = {}
    for m in ("cooccur", "tags", "metadata", "lyrics"):
        centres = rng.normal(size=(512, 32)).astype(np.float32)
        keep = rng.random(n) < 0.5
        idx = np.where(keep, styles, rng.integers(0, 512, size=n))
        emb[m] = (centres[idx] + 0.3 * rng.normal(size=(n, 32)).astype(np.float32), np.ones(n, bool))
    ids = [f"t{i}" for i in range(n)]
    tok = MusicTokenizer.fit(ids, emb, TokenizerConfig(k=256, seed=seed))
    catalog = Catalog([Track(id=t, title=f"Track {i}", artists=[f"Artist {i % 997}"])
                       for i, t in enumerate(ids)])
    return tok, catalog


def build_engine(args: argparse.Namespace) -> tuple[CodesEngine, str]:
    if args.run and (Path(args.run) / "model" / "config.json").exists():
        return CodesEngine.load(args.run), f"trained model of {args.run}"
    if args.run:
        from talkplay.run import Run

        music = MusicTokenizer.load(Run(args.run).tokenizer_dir)
        catalog = Run(args.run).load_catalog(validate=False)
        where = f"tokenizer of {args.run}"
    else:
        music, catalog = synthetic_tokenizer(args.tracks)
        where = f"synthetic catalog of {args.tracks:,} tracks"
    model, tok = load_base(args.base_model)
    expand_vocab(model, tok, music)
    engine = CodesEngine(model, tok, music, catalog, EngineConfig())
    return engine, f"{args.base_model} (untrained rows), {where}"


@torch.inference_mode()
def gen_speed(engine: CodesEngine, prompt: list[int], n: int, constrained: bool) -> float:
    from transformers import LogitsProcessorList

    procs = LogitsProcessorList([TrieConstraint(engine.vocab)] if constrained else [])
    ids = torch.tensor([prompt])
    t0 = time.perf_counter()
    out = engine.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n,
                                min_new_tokens=n, do_sample=False, logits_processor=procs,
                                pad_token_id=engine.tokenizer.pad_token_id)
    dt = time.perf_counter() - t0
    assert out.shape[1] - ids.shape[1] == n
    return n / dt


def processor_cost(engine: CodesEngine, prompt: list[int], calls: int = 300) -> tuple[float, float]:
    """Mean seconds per ``TrieConstraint`` call outside and inside a music span (vocab-wide scores)."""
    vocab = engine.vocab
    scores = torch.randn(1, engine.model.config.vocab_size)
    seq = next(iter(vocab.sequences.values()))
    inside = torch.tensor([prompt + [vocab.open_id, *seq[:-1]]])
    outside = torch.tensor([prompt + [vocab.open_id, *seq, vocab.close_id, 100]])
    out = []
    for ids in (outside, inside):
        proc = TrieConstraint(vocab)
        proc(ids[:, :len(prompt)], scores)  # marks the prompt
        t0 = time.perf_counter()
        for _ in range(calls):
            proc(ids, scores)
        out.append((time.perf_counter() - t0) / calls)
    return out[0], out[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base-model", default="smollm2-135m")
    ap.add_argument("--run", default=None)
    ap.add_argument("--tracks", type=int, default=5000)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--exact", action="store_true", help="also time exact scoring of every track")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    console = Console(width=160)
    engine, what = build_engine(args)
    conv = Conversation(id="bench", turns=[Turn(user=QUERY)])
    prompt = engine.prompt_ids(conv)
    console.print(f"model: {what}; prompt {len(prompt)} tokens; {len(engine.vocab.sequences):,} tracks of "
                  f"{engine.vocab.seq_len} codes; {torch.get_num_threads()} threads; "
                  f"load average {os.getloadavg()[0]:.1f}")

    gen_speed(engine, prompt, 8, True)  # warm-up
    free, cons = [], []
    for _ in range(args.repeats):
        free.append(gen_speed(engine, prompt, args.tokens, False))
        cons.append(gen_speed(engine, prompt, args.tokens, True))
    t = Table(title=f"greedy generation of {args.tokens} new tokens (best of {args.repeats})")
    for c in ("decoding", "tokens/s", "cost"):
        t.add_column(c)
    t.add_row("unconstrained", f"{max(free):.1f}", "")
    t.add_row("trie-constrained", f"{max(cons):.1f}", f"{100 * (1 - max(cons) / max(free)):+.1f}%")
    console.print(t)
    out_s, in_s = processor_cost(engine, prompt)
    step = 1 / max(free)
    console.print(f"LogitsProcessor alone: {out_s * 1e6:.0f} µs/step outside a span, "
                  f"{in_s * 1e6:.0f} µs/step "
                  f"inside; {100 * max(out_s, in_s) / step:.1f}% of one unconstrained decode step "
                  f"({step * 1e3:.1f} ms)")

    t = Table(title="recommend latency (prompt forward + ranking), best of repeats")
    for c in ("k", "method", "seconds", "tracks returned"):
        t.add_column(c)
    methods = ["beam"] + (["exact"] if args.exact else [])
    for k in (10, 100):
        for method in methods:
            engine.cfg.method = method
            best, n_out = float("inf"), 0
            for _ in range(args.repeats if method == "beam" else 1):
                t0 = time.perf_counter()
                recs = engine.recommend(conv, k=k)
                best = min(best, time.perf_counter() - t0)
                n_out = len(recs)
            label = f"beam (width {max(k, engine.cfg.beam_width)})" if method == "beam" else method
            t.add_row(str(k), label, f"{best:.2f}", str(n_out))
    console.print(t)


if __name__ == "__main__":
    main()
