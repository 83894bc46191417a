"""Train the content-grounded model end to end: ``train_content(run, TrainConfig(...))``, which
is ``s = prepare(run, cfg)``, ``step(s, t0)`` until done, ``finish(s)``.

LM (LoRA or full), the track-row network and the query projection learn from one loss:
the reply text's cross-entropy plus each recommended track's cross-entropy (among the tracks
the training conversations hold, less the conversation's own so far; with the playlist still
to come as targets too: ``ContentModel.forward``). Training is bounded by ``cfg.time_budget``
minutes when set: the learning rate decays linearly over whichever runs out first, the budget
or the epochs, so a slower machine takes fewer steps with a complete schedule instead of
overrunning. Checkpoints (``run/checkpoints/content.pt``, atomic) hold the trainable weights,
the optimiser, the step, the time spent and the data order, so ``--resume`` continues where
it stopped.
``run/model`` gets the merged LM (plain transformers), ``tracks.pt`` and ``tracks.json``.
"""

from __future__ import annotations

import contextlib
import hashlib
import random
import resource
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from talkplay import fingerprint
from talkplay.atomic import save_npy_atomic, write_atomic, write_json_atomic, write_jsonl_atomic
from talkplay.cards import Cards
from talkplay.catalog import track_document
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
from talkplay.tracks.words import word_weights

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
                          current_gate=cfg.current_gate, words_gate=cfg.words_gate,
                          own_words=cfg.own_words)
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
    # the RNG too: modality dropout draws from it, and a resumed run must draw what the
    # uninterrupted one would have
    payload = {"weights": _trainable_state(model), "optimizer": opt.state_dict(), "state": state,
               "rng": torch.get_rng_state()}
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


@dataclass
class Session:
    """One training between its steps: what ``prepare`` builds, ``step`` advances and
    ``finish`` saves. ``state`` (step, elapsed, epoch, cursor, tokens) is what a checkpoint
    keeps besides the weights and the optimiser."""

    run: Run
    cfg: Any
    acc: Any
    model: ContentModel
    tok: Any
    feats: TrackFeatures
    examples: list[Example]
    query_index: dict[Any, int]
    queries: torch.Tensor
    opt: torch.optim.Optimizer
    params: list[torch.Tensor]
    info: dict[str, Any]
    reply_tracks: int
    total_steps: int
    per_epoch: int
    state: dict[str, Any]
    resumed: str | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    last_text: float = float("nan")  # the reply-text loss of the last step that had one
    batches: list[list[int]] = field(default_factory=list)

    @property
    def budget_s(self) -> float | None:
        return self.cfg.time_budget * 60 if self.cfg.time_budget else None

    def epoch_order(self, epoch: int) -> list[list[int]]:
        """The batches of ``epoch``; every process gets as many."""
        world = self.acc.num_processes
        order = random.Random(f"{self.cfg.seed}:{epoch}")
        batches = length_batches(self.examples, self.cfg.batch_size, order)
        return batches[: len(batches) // world * world] or batches


def _optimizer(model: ContentModel, cfg: Any) -> tuple[torch.optim.Optimizer, list[torch.Tensor]]:
    """AdamW over the trainable parameters -> (optimiser, those parameters)."""
    params = [p for p in model.parameters() if p.requires_grad]
    # the gates start at zero with nothing to keep and the current gain is one number: they
    # learn at the full rate
    net = model.net
    fast = [*(net.context_gate.parameters() if net.context_gate is not None else []),
            *([net.current_gain] if net.current_gain is not None else []),
            *(net.current_gate.parameters() if net.current_gate is not None else []),
            *(net.words_gate.parameters() if net.words_gate is not None else []),
            *(net.own_words.parameters() if net.own_words is not None else [])]
    net_params = {id(p) for p in net.parameters()} - {id(p) for p in fast}
    # the track network starts where the text encoder already ranks well (BENCHMARKS.md,
    # "Words"); at the LM's LoRA rate its row projections drift toward the few training
    # targets and cold tracks pay, so it learns at cfg.net_lr times that rate.
    groups = [{"params": [p for p in params if id(p) not in net_params], "lr_scale": 1.0},
              {"params": [p for p in params if id(p) in net_params], "lr_scale": cfg.net_lr}]
    opt = torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.lr, weight_decay=0.0)
    return opt, params


def learn_word_weights(run: Run, examples: list[Example]) -> dict[str, float]:
    """``talkplay.tracks.words.word_weights`` over the training turns: each turn's own message
    against the documents of the tracks that answer it (its targets, the whole playlist to come
    when it has one: what the loss asks the turn to rank)."""
    catalog = run.load_catalog(validate=False)
    answers: dict[tuple[int, str], set[int]] = {}
    for i, e in enumerate(examples):
        for o in e.opens:
            if o.target >= 0:
                answers.setdefault((i, o.current), set()).update([o.target, *o.goal])
    docs: dict[int, str] = {}

    def doc(row: int) -> str:
        if row not in docs:
            docs[row] = track_document(catalog.tracks[row])
        return docs[row]

    weights = word_weights((msg, [doc(r) for r in sorted(rows)]) for (_, msg), rows in answers.items())
    low = sorted(weights, key=weights.get)[:8]
    log.info("request words weighed from %d training turns; lowest: %s", len(answers),
             ", ".join(f"{w} {weights[w]:.2f}" for w in low))
    return weights


def prepare(run: Run, cfg: Any) -> Session:
    """Everything a training needs before its first step: data, model, optimiser, and the
    checkpoint's weights and state when ``cfg.resume`` finds one."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    acc = _accelerator()
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
    examples = [e for c in convs for e in (Example.build_every_turn(c, tok, slots, rcfg) if cfg.every_turn
                                          else [Example.build(c, tok, slots, rcfg)]) if e.supervised]
    if not examples:
        raise TalkPlayError(f"{run.dialogs_dir / 'train.jsonl'} has no conversation with a supervised turn")
    # how many tracks an answer writes before its reply in the training data; the engine
    # writes as many (at most k) before generating a reply, so the reply sees what it learnt
    per_turn = [n for c in convs for t in c.turns if (n := len(turn_tracks(t, slots, rcfg)))]
    reply_tracks = int(np.median(per_turn)) if per_turn else 1
    if cfg.word_weights and feats.words is not None:
        feats.word_weights = model.net.cfg.word_weights = learn_word_weights(run, examples)
    keys = list(dict.fromkeys(request_key(o) for e in examples for o in e.opens))
    texts = [t for t, _ in keys]
    own = [c for _, c in keys]
    with acc.main_process_first():  # the main process encodes and caches; the others read the cache
        current = encode_queries(run, own, encoder) if model.net.reads_current else None
        queries = torch.from_numpy(feats.requests(encode_queries(run, texts, encoder), texts, current,
                                                  own if model.net.current_gain is not None else None))
    if cfg.negatives == "seen":
        model.set_candidates(torch.tensor(sorted({r for e in examples for _, r in e.slots})))
    opt, params = _optimizer(model, cfg)
    state = {"step": 0, "elapsed": 0.0, "epoch": 0, "cursor": 0, "tokens": 0}
    ckpt = run.checkpoints_dir / CHECKPOINT
    resumed = None
    if cfg.resume and ckpt.exists():
        saved = torch.load(ckpt, map_location="cpu", weights_only=False)
        model.load_state_dict(saved["weights"], strict=False)
        opt.load_state_dict(saved["optimizer"])
        state = saved["state"]
        if "rng" in saved:
            torch.set_rng_state(saved["rng"])
        resumed = str(ckpt)
        log.info("resuming from %s at step %d (%.0f s spent)", ckpt, state["step"], state["elapsed"])
    elif cfg.resume:
        log.warning("--resume: no checkpoint at %s; starting from the beginning", ckpt)
    model, opt = acc.prepare(model, opt)
    per_epoch = max(1, len(examples) // (cfg.batch_size * acc.num_processes))
    total_steps = cfg.max_steps if cfg.max_steps > 0 else max(1, int(cfg.epochs * per_epoch))
    s = Session(run=run, cfg=cfg, acc=acc, model=model, tok=tok, feats=feats, examples=examples,
                query_index={k: i for i, k in enumerate(keys)}, queries=queries.to(acc.device), opt=opt,
                params=params, info=info, reply_tracks=reply_tracks, total_steps=total_steps,
                per_epoch=per_epoch, state=state, resumed=resumed)
    s.batches = s.epoch_order(state["epoch"])
    return s


def step(s: Session, t_loop: float) -> dict[str, Any]:
    """One optimiser step on the next batch (``t_loop``: when the loop's clock started, less
    the time spent before a resume) -> the step's log record."""
    cfg, acc, state, net = s.cfg, s.acc, s.state, s.acc.unwrap_model(s.model).net
    world, rank = acc.num_processes, acc.process_index
    if state["cursor"] + world > len(s.batches):
        state["epoch"] += 1
        state["cursor"] = 0
        s.batches = s.epoch_order(state["epoch"])
    picked = [s.examples[i] for i in s.batches[min(state["cursor"] + rank, len(s.batches) - 1)]]
    batch = {k: v.to(acc.device) for k, v in collate(picked, s.tok.pad_token_id, s.query_index).items()}
    state["cursor"] += world
    elapsed = shared_clock(acc, time.perf_counter() - t_loop)
    budget_s = s.budget_s
    done = max(state["step"] / s.total_steps, elapsed / budget_s if budget_s else 0.0)
    warmup = max(1, int(cfg.warmup_ratio * s.total_steps))
    lr = cfg.lr * min(1.0, (state["step"] + 1) / warmup) * max(0.0, 1.0 - done)
    for g in s.opt.param_groups:
        g["lr"] = lr * g["lr_scale"]
    # with an early exit, only every text_every-th step runs the whole stack for the reply
    text_step = net.cfg.exit_layer is None or state["step"] % cfg.text_every == 0
    out = s.model(**batch, queries=s.queries, text_weight=cfg.text_weight if text_step else 0.0,
                  goal_weight=cfg.goal_weight, disliked_weight=cfg.disliked_weight)
    acc.backward(out["loss"])
    acc.clip_grad_norm_(s.params, 1.0)
    s.opt.step()
    s.opt.zero_grad(set_to_none=True)
    state["step"] += 1
    state["tokens"] += int((batch["input_ids"] != s.tok.pad_token_id).sum()) * world
    state["elapsed"] = time.perf_counter() - t_loop
    if text_step:
        s.last_text = round(float(out["text_loss"]), 4)
    rec = {"step": state["step"], "loss": round(float(out["loss"].detach()), 4),
           "text_loss": s.last_text if text_step else None,
           "track_loss": round(float(out["track_loss"]), 4),
           "goal_loss": round(float(out["goal_loss"]), 4) if cfg.goal_weight else None, "lr": lr,
           "seconds": round(state["elapsed"], 1)}
    s.history.append(rec)
    return rec


def train_content(run: Run, cfg: Any) -> dict[str, Any]:
    """Train on ``run``'s dialogs and write ``run/model``; returns a summary dict.

    Several processes (``torchrun --nproc_per_node N -m talkplay.cli train RUN``) each take
    every N-th batch; gradients are averaged, and the time budget stops all of them at once.
    """
    t_start = time.perf_counter()
    s = prepare(run, cfg)
    acc, state = s.acc, s.state
    log.info("training %s (content-grounded tracks) on %d conversations (%s tokens), %s trainable "
             "parameters%s%s", cfg.base_model, len(s.examples), f"{_tokens(s):,}",
             f"{sum(p.numel() for p in s.params):,}", " (LoRA)" if cfg.lora else "",
             f", time budget {cfg.time_budget:g} min" if s.budget_s else "")
    s.model.train()
    t_loop = time.perf_counter() - state["elapsed"]
    bar = ProgressBar(total=s.total_steps, desc="train") if acc.is_main_process else None
    with bar or contextlib.nullcontext():
        if bar:
            bar.update(state["step"])
        while state["step"] < s.total_steps:
            rec = step(s, t_loop)
            rate = state["tokens"] / max(state["elapsed"], 1e-9)
            if bar:
                bar.update(1, status=f"text {s.last_text:.2f} · tracks {rec['track_loss']:.2f} · "
                                     f"{rate:,.0f} tok/s")
            if acc.is_main_process and state["step"] % 25 == 0:  # a line in logs too, where no bar is drawn
                log.info("step %d: text loss %.3f, track loss %.3f, %.0f tokens/s, %.0f s", state["step"],
                         s.last_text, rec["track_loss"], rate, state["elapsed"])
            if state["step"] % cfg.save_every == 0 and acc.is_main_process:
                _save_checkpoint(run.checkpoints_dir / CHECKPOINT, acc.unwrap_model(s.model), s.opt, state)
            # rank 0's clock decides for all: every process stops at the same step (or the
            # others would wait forever) and uses the same learning rate (or replicas drift)
            if s.budget_s and shared_clock(acc, state["elapsed"]) >= s.budget_s:
                log.info("time budget of %g min reached after %d steps", cfg.time_budget, state["step"])
                break
    summary = finish(s)
    if acc.is_main_process:
        summary["seconds"] = round(time.perf_counter() - t_start, 1)
        run.record("train", summary)
    return summary


def _tokens(s: Session) -> int:
    return sum(len(e.input_ids) for e in s.examples)


def finish(s: Session) -> dict[str, Any]:
    """The summary of a finished (or budget-stopped) training; the main process also writes
    ``run/model``, the log and the loss plot."""
    cfg, acc, state, run = s.cfg, s.acc, s.state, s.run
    world, rank = acc.num_processes, acc.process_index
    train_s = state["elapsed"]
    model = acc.unwrap_model(s.model)
    model.eval()
    history = s.history
    summary: dict[str, Any] = {
        "config": asdict(cfg),
        "track_repr": "content",
        "steps": state["step"],
        "epochs": round(state["step"] / s.per_epoch, 3),
        "conversations": len(s.examples),
        "dataset_tokens": _tokens(s),
        "tokens_seen": state["tokens"],
        "tokens_per_s": round(state["tokens"] / max(train_s, 1e-9), 1),
        "train_seconds": round(train_s, 1),
        "first_loss": history[0]["loss"] if history else None,
        "final_loss": float(np.mean([h["loss"] for h in history[-10:]])) if history else None,
        "final_track_loss": float(np.mean([h["track_loss"] for h in history[-10:]])) if history else None,
        "trainable_parameters": sum(p.numel() for p in s.params),
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        "kept_layers": s.info["kept_layers"],
        "resumed_from": s.resumed,
        "model_dir": str(run.model_dir),
        "features": s.feats.fingerprint(),
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
    save_content_model(model, s.tok, run.model_dir, {
        "track_repr": "content", "base_model": cfg.base_model, "init": cfg.init, "lora": cfg.lora,
        "kept_layers": s.info["kept_layers"], "exit_layer": model.net.cfg.exit_layer, "steps": state["step"],
        "text_model": s.feats.text_model,
        "features": s.feats.fingerprint(), "n_tracks": len(s.feats.ids), "max_length": cfg.max_length,
        "reply_tracks": s.reply_tracks, "cards": cfg.cards,
        "cards_history": cfg.cards_history,
        **fingerprint.model_record(run, modalities=list(s.feats.arrays))})
    write_jsonl_atomic(train_dir / "log.jsonl", history)
    plot_loss(history, train_dir / "loss.png")
    summary["loss_plot"] = str(train_dir / "loss.png")
    return summary
