"""Training tokens/s of ``talkplay train`` on a GPU, for the scale-out recipes in docs/scaling.md.

Run as ``python benchmarks/gpu_throughput.py --run RUN --tokenizer DIR [--steps 40] [--json OUT]``
where RUN has a tokenizer and dialogs (e.g. the CPCD run) and DIR holds a Hugging Face
tokenizer (the SmolLM2 one: ``~/.cache/talkplay/models/smollm2-135m``). Each setting trains
``--steps`` steps through ``talkplay.train.train_run`` (the code ``talkplay train`` runs) of
the *codes* trainer (``--track-repr codes``: bf16, gradient checkpointing and ``--all-logits``
are its options; the content trainer refuses them) on a scratch copy of RUN and reports
tokens/s (the Trainer's count of non-padding tokens over the whole ``trainer.train()``,
first steps included), seconds per step and peak GPU memory.

The models are the SmolLM2-135M architecture and a Llama-3.2-1B-shaped one (hidden 2048,
16 layers, 32/8 heads, MLP 8192), both random-initialised with the SmolLM2 vocabulary:
throughput does not depend on the weights' values, and this way no multi-GB checkpoint has
to reach the GPU machine. Only the first run of a setting pays CUDA start-up.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from training import copy_for_training  # noqa: E402  (benchmarks/training.py, beside this file)

from talkplay.run import Run  # noqa: E402
from talkplay.train import TrainConfig, train_run  # noqa: E402

SHAPES = {
    # SmolLM2-135M's own config
    "smollm2-135m": dict(hidden_size=576, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                         intermediate_size=1536, head_dim=64),
    # the shape of Llama-3.2-1B, with SmolLM2's vocabulary
    "llama-1b-shape": dict(hidden_size=2048, num_hidden_layers=16, num_attention_heads=32,
                           num_key_value_heads=8, intermediate_size=8192, head_dim=64),
}
SETTINGS = [  # (name, model, TrainConfig overrides); the LM head runs as `talkplay train` defaults
    ("135m fp32 b8", "smollm2-135m", dict(batch_size=8)),
    ("135m bf16 b8", "smollm2-135m", dict(batch_size=8, bf16=True)),
    ("135m bf16 b32", "smollm2-135m", dict(batch_size=32, bf16=True)),
    ("135m bf16 b32 all-logits", "smollm2-135m", dict(batch_size=32, bf16=True, supervised_logits=False)),
    ("135m bf16 b32 grad-ckpt", "smollm2-135m", dict(batch_size=32, bf16=True, gradient_checkpointing=True)),
    ("1b bf16 b8", "llama-1b-shape", dict(batch_size=8, bf16=True)),
    ("1b bf16 b16 grad-ckpt", "llama-1b-shape", dict(batch_size=16, bf16=True, gradient_checkpointing=True)),
    ("1b bf16 b16 LoRA", "llama-1b-shape", dict(batch_size=16, bf16=True, lora=True)),
]


def make_model(shape: str, tokenizer_dir: Path, out: Path) -> Path:
    """A random-initialised Llama of ``shape`` with the tokenizer from ``tokenizer_dir``, saved at ``out``."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    cfg = LlamaConfig(vocab_size=len(tok), tie_word_embeddings=True, max_position_embeddings=8192,
                      rms_norm_eps=1e-5, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id, **SHAPES[shape])
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--tokenizer", type=Path, required=True)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--only", default="", help="comma-separated setting names (default: all)")
    ap.add_argument("--json", type=Path, help="also write the rows here")
    ap.add_argument("--budget-s", type=float, default=420, help="start no new setting after this many s")
    args = ap.parse_args(argv)
    cuda = torch.cuda.is_available()
    device = torch.cuda.get_device_name(0) if cuda else "CPU"
    print(f"device: {device}; torch {torch.__version__}", flush=True)
    wanted = [s for s in SETTINGS if not args.only or s[0] in args.only.split(",")]
    rows = []
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="talkplay-gpu-") as tmp:
        root = Path(tmp)
        models: dict[str, Path] = {}
        for name, shape, overrides in wanted:
            if shape not in models:
                t0 = time.perf_counter()
                models[shape] = make_model(shape, args.tokenizer, root / shape)
                print(f"built {shape} in {time.perf_counter() - t0:.1f} s", flush=True)
            if time.perf_counter() - t_start > args.budget_s:
                print(f"skipped {name}: over the --budget-s of {args.budget_s} s", flush=True)
                continue
            run = Run(copy_for_training(args.run, root / "run"))
            if cuda:
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            cfg = TrainConfig(track_repr="codes", base_model=str(models[shape]), max_steps=args.steps,
                              save_every=10 * args.steps,
                              max_length=args.max_length, lr=1e-4, log_every=10, **overrides)
            try:
                out = train_run(run, cfg)
            except Exception as e:  # one setting failing (e.g. out of memory) must not lose the others
                print(f"FAILED {name}: {type(e).__name__}: {e}", flush=True)
                continue
            row = {"setting": name, "tokens_per_s": out["tokens_per_s"], "steps": out["steps"],
                   "s_per_step": round(out["train_seconds"] / max(out["steps"], 1), 3),
                   "tokens": out["tokens_seen"], "trainable_parameters": out["trainable_parameters"],
                   "peak_gpu_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
                   "loss_first_last": [out["first_loss"], out["final_loss"]],
                   "supervised_logits": out["supervised_logits"]}
            rows.append(row)
            print(json.dumps(row), flush=True)
            if args.json:  # after every setting, so a run cut short still leaves its rows
                args.json.write_text(json.dumps({"device": device, "torch": torch.__version__, "rows": rows},
                                                indent=1))
    print(f"\n| setting | LM head | tokens/s | s/step | peak GPU GiB | trainable params |  ({device})")
    print("|---|---|---|---|---|---|")
    for r in rows:
        head = "supervised positions" if r["supervised_logits"] else "all positions"
        print(f"| {r['setting']} | {head} | {r['tokens_per_s']:,.0f} | {r['s_per_step']} "
              f"| {r['peak_gpu_gib']} | {r['trainable_parameters']:,} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
