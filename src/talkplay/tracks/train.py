"""Train the content-grounded model end to end: ``train_content(run, TrainConfig(...))``.

LM (LoRA or full), the track-row network and the query projection learn from one loss:
the reply text's cross-entropy plus each recommended track's cross-entropy over the whole
catalog. Training is bounded by ``cfg.time_budget`` minutes when set: the learning rate
decays linearly over whichever runs out first, the budget or the epochs, so a slower
machine takes fewer steps with a complete schedule instead of overrunning. Checkpoints
(``run/checkpoints/content.pt``, atomic) hold the trainable weights, the optimiser, the
step, the time spent and the data order, so ``--resume`` continues where it stopped.
``run/model`` gets the merged LM (plain transformers), ``tracks.pt`` and ``tracks.json``.
"""

from __future__ import annotations

import contextlib
import hashlib
import random
import resource
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from talkplay import fingerprint
from talkplay.atomic import save_npy_atomic, write_atomic, write_json_atomic, write_jsonl_atomic
from talkplay.cards import Cards
from talkplay.dialogs import RenderConfig, load_dialogs
from talkplay.dialogs.render import DEFAULT_SYSTEM, turn_tracks
from talkplay.encoders.text import TextEncoder
from talkplay.errors import TalkPlayError
from talkplay.finetune import (
    add_lora,
    keep_first_layers,
    plot_loss,
    save_model_atomic,
    shared_clock,
    weights_digest,
)
from talkplay.log import ProgressBar, get_logger
from talkplay.modalities import MUSIC_CLOSE, MUSIC_OPEN, TRACK_SLOT
from talkplay.model import expand_vocab, load_base
from talkplay.run import Run
from talkplay.tracks.data import Example, collate, request_key
from talkplay.tracks.exit import decoder_layers, is_early, layer_output
from talkplay.tracks.features import TrackFeatures, TrackSlots
from talkplay.tracks.model import ContentModel
from talkplay.tracks.network import TrackNet, TrackNetConfig

log = get_logger(__name__)
CHECKPOINT = "content.pt"


def encode_queries(run: Run, texts: list[str], enc: Any) -> np.ndarray:
    """``enc``'s (a ``TextEncoder``) embeddings of ``texts``, cached under
    ``run/cache/queries-<hash>.npy``."""
    key = hashlib.sha256("\n\x00".join([str(enc.model_arg), *texts]).encode()).hexdigest()[:16]
    path = run.cache_dir / f"queries-{key}.npy"
    if path.exists():
        return np.load(path)
    unique = list(dict.fromkeys(texts))
    log.info("encoding %d request texts with %s", len(unique), enc.name)
    vecs = enc.encode(unique) if unique else np.zeros((0, enc.dim), dtype=np.float32)
    at = {t: i for i, t in enumerate(unique)}
    vecs = vecs[[at[t] for t in texts]] if texts else vecs
    save_npy_atomic(path, vecs)
    return vecs


def length_batches(examples: list[Example], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Batches of similar length (less padding), in random order."""
    order = list(range(len(examples)))
    rng.shuffle(order)
    window = batch_size * 16
    batches = []
    for s in range(0, len(order), window):
        chunk = sorted(order[s: s + window], key=lambda i: len(examples[i].input_ids))
        batches += [chunk[i: i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def _row_norm(lm: Any) -> float:
    w = lm.get_input_embeddings().weight.detach()
    return float(w.norm(dim=-1).mean())


@torch.no_grad()
def residual_norm(lm: Any, tok: Any, text: str = DEFAULT_SYSTEM, layer: int | None = None) -> float:
    """Median norm of the residual stream entering the LM's final norm, on ``text`` (or
    leaving ``layer``, the track head's exit, when it is an earlier one).

    The request is added to the input at ``<|music|>`` and must survive every layer to the
    head; how large it must be for that depends on how much the layers write into the stream
    (SmolLM2-135M: about 110 after 8 layers, 700 after 30), so its size is set relative to this.
    """
    norm = getattr(getattr(lm, "model", None), "norm", None)
    if norm is None:
        return _row_norm(lm)
    seen: dict[str, torch.Tensor] = {}
    if is_early(lm, layer):
        hook = decoder_layers(lm)[layer - 1].register_forward_hook(
            lambda m, i, o: seen.__setitem__("x", layer_output(o)))
    else:
        hook = norm.register_forward_hook(lambda m, i, o: seen.__setitem__("x", i[0]))
    try:
        lm(tok(text, return_tensors="pt").input_ids, use_cache=False)
    finally:
        hook.remove()
    return float(seen["x"][0, 1:].norm(dim=-1).median())  # the first position is an outlier in many LMs


def build_model(run: Run, cfg: Any, feats: TrackFeatures, encoder: Any = None) -> tuple[
        ContentModel, Any, dict[str, Any]]:
    """Base LM with the three track tokens, wrapped with a fresh ``TrackNet`` (LoRA if asked).
    ``encoder``: the request ``TextEncoder`` (default: the one behind the run's text modalities)."""
    lm, tok = load_base(cfg.base_model)
    layers = keep_first_layers(lm, cfg.keep_layers) if cfg.keep_layers else None
    slots = TrackSlots(feats.ids)
    vocab_info = expand_vocab(lm, tok, slots, init=cfg.init, seed=cfg.seed)
    new_ids = [int(i) for i in tok.convert_tokens_to_ids([MUSIC_OPEN, MUSIC_CLOSE, TRACK_SLOT])]
    query_dim = (encoder or TextEncoder(feats.text_model)).dim
    row_norm = _row_norm(lm)
    exit_layer = cfg.exit_layer if is_early(lm, cfg.exit_layer) else None
    gain = cfg.inject_gain * residual_norm(lm, tok, layer=exit_layer) / row_norm
    ncfg = TrackNetConfig(dims=feats.dims, hidden=lm.config.hidden_size, query_dim=query_dim,
                          text_modalities=feats.text_modalities, row_norm=row_norm,
                          inject_gain=gain, seed=cfg.seed, unit_query=True, context=cfg.context,
                          words_gain=cfg.words_gain, current=cfg.current, exit_layer=exit_layer,
                          current_gate=cfg.current_gate)
    net = TrackNet.create(ncfg)
    if cfg.lora:
        lm = add_lora(lm, cfg, new_ids)
    model = ContentModel(lm, net, feats, cfg.modality_dropout)
    return model, tok, {"vocab": vocab_info, "kept_layers": layers, "new_ids": new_ids}


def _trainable_state(model: ContentModel) -> dict[str, torch.Tensor]:
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    return {k: v.detach().cpu() for k, v in model.state_dict().items() if k in names}


def _save_checkpoint(path: Path, model: ContentModel, opt: torch.optim.Optimizer,
                     state: dict[str, Any]) -> None:
    payload = {"weights": _trainable_state(model), "optimizer": opt.state_dict(), "state": state}
    write_atomic(path, lambda p: torch.save(payload, p), suffix=".pt")


def save_content_model(model: ContentModel, tok: Any, target: Path, extra: dict[str, Any]) -> None:
    """Merged LM + tokenizer + ``tracks.pt``/``tracks.json`` into ``target``, atomically."""
    lm = model.lm
    if hasattr(lm, "merge_and_unload"):
        lm = lm.merge_and_unload()
    lm.eval()
    lm.config.use_cache = True
    net = model.net

    def write_net(folder: Path) -> None:
        torch.save(net.state_dict(), folder / "tracks.pt")
        write_json_atomic(folder / "tracks.json", net.cfg.to_dict())

    save_model_atomic(lm, tok, target, extra, write_extra=write_net)


def _accelerator() -> Any:
    """One process, or data parallel under ``torchrun`` / ``accelerate launch`` (gloo on CPU)."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    # a modality every track has leaves its "missing" row without a gradient
    ddp = DistributedDataParallelKwargs(find_unused_parameters=True)
    return Accelerator(cpu=not torch.cuda.is_available(), kwargs_handlers=[ddp])


def train_content(run: Run, cfg: Any) -> dict[str, Any]:
    """Train on ``run``'s dialogs and write ``run/model``; returns a summary dict.

    Several processes (``torchrun --nproc_per_node N -m talkplay.cli train RUN``) each take
    every N-th batch; gradients are averaged, and the time budget stops all of them at once.
    """
    t_start = time.perf_counter()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    acc = _accelerator()
    world, rank = acc.num_processes, acc.process_index
    feats = TrackFeatures.from_run(run, modalities=cfg.modalities.split(",") if cfg.modalities else None,
                                   words=cfg.words)
    if not feats.arrays:
        raise TalkPlayError(f"no embeddings in {run.embeddings_dir}; run `talkplay encode {run.path}` first")
    convs = load_dialogs(run, "train")
    encoder = TextEncoder(feats.text_model)  # one load serves the net's shape and the requests
    model, tok, info = build_model(run, cfg, feats, encoder)
    slots = TrackSlots(feats.ids)
    cards = Cards(run.load_catalog(validate=False)) if cfg.cards else None
    rcfg = RenderConfig(max_length=cfg.max_length, cards=cards, cards_history=cfg.cards_history)
    examples = [e for e in (Example.build(c, tok, slots, rcfg) for c in convs) if e.supervised]
    if not examples:
        raise TalkPlayError(f"{run.dialogs_dir / 'train.jsonl'} has no conversation with a supervised turn")
    # how many tracks an answer writes before its reply in the training data; the engine
    # writes as many (at most k) before generating a reply, so the reply sees what it learnt
    per_turn = [n for c in convs for t in c.turns if (n := len(turn_tracks(t, slots, rcfg)))]
    reply_tracks = int(np.median(per_turn)) if per_turn else 1
    keys = list(dict.fromkeys(request_key(o) for e in examples for o in e.opens))
    query_index = {k: i for i, k in enumerate(keys)}
    texts = [t for t, _ in keys]
    own = [c for _, c in keys]
    with acc.main_process_first():  # the main process encodes and caches; the others read the cache
        current = encode_queries(run, own, encoder) if model.net.reads_current else None
        queries = torch.from_numpy(feats.requests(encode_queries(run, texts, encoder), texts, current,
                                                  own if model.net.current_gain is not None else None))
    device = acc.device
    queries = queries.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    trainable = sum(p.numel() for p in params)
    # the context gate starts at zero with nothing to keep and the current gain is one number:
    # both learn at the full rate
    net = model.net
    gate = list(net.context_gate.parameters()) if net.context_gate is not None else []
    gain = [net.current_gain] if net.current_gain is not None else []
    gain += list(net.current_gate.parameters()) if net.current_gate is not None else []
    net_params = {id(p) for p in net.parameters()} - {id(p) for p in gate + gain}
    # the track network starts where the text encoder already ranks well (BENCHMARKS.md,
    # "Words"); at the LM's LoRA rate its row projections drift toward the few training
    # targets and cold tracks pay, so it learns at cfg.net_lr times that rate.
    groups = [{"params": [p for p in params if id(p) not in net_params], "lr_scale": 1.0},
              {"params": [p for p in params if id(p) in net_params], "lr_scale": cfg.net_lr}]
    opt = torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.lr, weight_decay=0.0)
    anchored = list(groups[1]["params"]) if cfg.anchor else []
    start = [p.detach().clone() for p in anchored]
    start_size = sum(float((s ** 2).sum()) for s in start) or 1.0
    ckpt = run.checkpoints_dir / CHECKPOINT
    state = {"step": 0, "elapsed": 0.0, "epoch": 0, "cursor": 0, "tokens": 0}
    resumed = None
    if cfg.resume and ckpt.exists():
        saved = torch.load(ckpt, map_location="cpu", weights_only=False)
        model.load_state_dict(saved["weights"], strict=False)
        opt.load_state_dict(saved["optimizer"])
        state = saved["state"]
        resumed = str(ckpt)
        log.info("resuming from %s at step %d (%.0f s spent)", ckpt, state["step"], state["elapsed"])
    elif cfg.resume:
        log.warning("--resume: no checkpoint at %s; starting from the beginning", ckpt)
    model, opt = acc.prepare(model, opt)
    per_epoch = max(1, len(examples) // (cfg.batch_size * world))
    total_steps = cfg.max_steps if cfg.max_steps > 0 else max(1, int(cfg.epochs * per_epoch))
    budget_s = cfg.time_budget * 60 if cfg.time_budget else None
    warmup = max(1, int(cfg.warmup_ratio * total_steps))
    n_tokens = sum(len(e.input_ids) for e in examples)
    log.info("training %s (content-grounded tracks) on %d conversations (%s tokens), %s trainable "
             "parameters%s%s", cfg.base_model, len(examples), f"{n_tokens:,}", f"{trainable:,}",
             " (LoRA)" if cfg.lora else "", f", time budget {cfg.time_budget:g} min" if budget_s else "")
    history: list[dict[str, Any]] = []
    model.train()

    def epoch_order(epoch: int) -> list[list[int]]:
        batches = length_batches(examples, cfg.batch_size, random.Random(f"{cfg.seed}:{epoch}"))
        return batches[: len(batches) // world * world] or batches  # every process gets as many

    epoch_batches = epoch_order(state["epoch"])
    t_loop = time.perf_counter() - state["elapsed"]
    last_text = float("nan")  # the reply-text loss of the last step that had one
    bar = ProgressBar(total=total_steps, desc="train") if acc.is_main_process else None
    with bar or contextlib.nullcontext():
        if bar:
            bar.update(state["step"])
        while state["step"] < total_steps:
            if state["cursor"] + world > len(epoch_batches):
                state["epoch"] += 1
                state["cursor"] = 0
                epoch_batches = epoch_order(state["epoch"])
            picked = [examples[i] for i in epoch_batches[min(state["cursor"] + rank, len(epoch_batches) - 1)]]
            batch = {k: v.to(device) for k, v in collate(picked, tok.pad_token_id, query_index).items()}
            state["cursor"] += world
            elapsed = shared_clock(acc, time.perf_counter() - t_loop)
            done = max(state["step"] / total_steps, elapsed / budget_s if budget_s else 0.0)
            lr = cfg.lr * min(1.0, (state["step"] + 1) / warmup) * max(0.0, 1.0 - done)
            for g in opt.param_groups:
                g["lr"] = lr * g["lr_scale"]
            # with an early exit, only every text_every-th step runs the whole stack for the reply
            text_step = net.cfg.exit_layer is None or state["step"] % cfg.text_every == 0
            out = model(**batch, queries=queries, text_weight=cfg.text_weight if text_step else 0.0)
            loss = out["loss"]
            if anchored:  # L2-SP: the drift from the start, relative to its size
                loss = loss + cfg.anchor * sum(((p - s) ** 2).sum() for p, s in zip(
                    anchored, start, strict=True)) / start_size
            acc.backward(loss)
            acc.clip_grad_norm_(params, 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            state["step"] += 1
            state["tokens"] += int((batch["input_ids"] != tok.pad_token_id).sum()) * world
            state["elapsed"] = time.perf_counter() - t_loop
            if text_step:
                last_text = round(float(out["text_loss"]), 4)
            rec = {"step": state["step"], "loss": round(float(out["loss"].detach()), 4),
                   "text_loss": last_text if text_step else None,
                   "track_loss": round(float(out["track_loss"]), 4), "lr": lr,
                   "seconds": round(state["elapsed"], 1)}
            history.append(rec)
            rate = state["tokens"] / max(state["elapsed"], 1e-9)
            if bar:
                bar.update(1, status=f"text {last_text:.2f} · tracks {rec['track_loss']:.2f} · "
                                     f"{rate:,.0f} tok/s")
            if acc.is_main_process and state["step"] % 25 == 0:  # a line in logs too, where no bar is drawn
                log.info("step %d: text loss %.3f, track loss %.3f, %.0f tokens/s, %.0f s", state["step"],
                         last_text, rec["track_loss"], rate, state["elapsed"])
            if state["step"] % cfg.save_every == 0 and acc.is_main_process:
                _save_checkpoint(ckpt, acc.unwrap_model(model), opt, state)
            # rank 0's clock decides for all: every process stops at the same step (or the
            # others would wait forever) and uses the same learning rate (or replicas drift)
            if budget_s and shared_clock(acc, state["elapsed"]) >= budget_s:
                log.info("time budget of %g min reached after %d steps", cfg.time_budget, state["step"])
                break
    train_s = state["elapsed"]
    model = acc.unwrap_model(model)
    model.eval()
    summary: dict[str, Any] = {
        "config": asdict(cfg),
        "track_repr": "content",
        "steps": state["step"],
        "epochs": round(state["step"] / per_epoch, 3),
        "conversations": len(examples),
        "dataset_tokens": n_tokens,
        "tokens_seen": state["tokens"],
        "tokens_per_s": round(state["tokens"] / max(train_s, 1e-9), 1),
        "train_seconds": round(train_s, 1),
        "first_loss": history[0]["loss"] if history else None,
        "final_loss": float(np.mean([h["loss"] for h in history[-10:]])) if history else None,
        "final_track_loss": float(np.mean([h["track_loss"] for h in history[-10:]])) if history else None,
        "trainable_parameters": trainable,
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        "kept_layers": info["kept_layers"],
        "resumed_from": resumed,
        "model_dir": str(run.model_dir),
        "features": feats.fingerprint(),
        "world_size": world,
        "rank": rank,
    }
    train_dir = run.path / "train"
    if world > 1:
        write_json_atomic(train_dir / f"replica-{rank}.json", {"rank": rank, "step": state["step"],
                                                               "weights_sha256": weights_digest(model)})
    if not acc.is_main_process:
        return summary
    model.to("cpu")
    save_content_model(model, tok, run.model_dir, {
        "track_repr": "content", "base_model": cfg.base_model, "init": cfg.init, "lora": cfg.lora,
        "kept_layers": info["kept_layers"], "exit_layer": model.net.cfg.exit_layer, "steps": state["step"],
        "text_model": feats.text_model,
        "features": feats.fingerprint(), "n_tracks": len(feats.ids), "max_length": cfg.max_length,
        "reply_tracks": reply_tracks, "cards": cfg.cards,
        "cards_history": cfg.cards_history,
        **fingerprint.model_record(run, modalities=list(feats.arrays))})
    write_jsonl_atomic(train_dir / "log.jsonl", history)
    plot_loss(history, train_dir / "loss.png")
    summary["seconds"] = round(time.perf_counter() - t_start, 1)
    summary["loss_plot"] = str(train_dir / "loss.png")
    run.record("train", summary)
    return summary
