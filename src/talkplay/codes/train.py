"""Training a codes model: supervised fine-tuning of a base LM on a run's dialogs, with an
expanded music vocabulary (one token per code).

``train_codes(Run("runs/codes"), TrainConfig(track_repr="codes", base_model="tiny",
max_steps=300))`` (what ``talkplay.train.train_run`` calls for a codes run) loads the base
(``talkplay.model.load_base``), adds the music tokens (``expand_vocab``), renders
``dialogs/train.jsonl`` with ``talkplay.dialogs.render`` (labels only where the loss mask is
1) and trains with ``transformers.Trainer`` (full fine-tuning, or LoRA through peft with the
new token rows trained as ``trainable_token_indices``). It writes checkpoints under
``run/checkpoints`` every ``save_every`` steps, the log and a loss plot under ``run/train``,
and finally ``run/model``: a ``save_pretrained`` folder (LoRA merged, tokenizer with music
tokens included) that plain ``transformers`` loads, written atomically.

Multi-process data parallel needs no flag: launch the same command with
``torchrun --nproc_per_node N -m talkplay.cli train RUN ...`` (or ``accelerate launch``);
the Trainer sees the process group (gloo on CPU, NCCL on GPUs).
"""

from __future__ import annotations

import os
import resource
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from talkplay import fingerprint
from talkplay.atomic import write_json_atomic, write_jsonl_atomic
from talkplay.catalog import Conversation
from talkplay.dialogs import RenderConfig, load_dialogs, render
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
from talkplay.model import expand_vocab, load_base, music_token_strings
from talkplay.run import Run
from talkplay.tokenizer import MusicTokenizer
from talkplay.train_config import TrainConfig

log = get_logger(__name__)


# --- data ---------------------------------------------------------------------------


def encode_dialogs(convs: list[Conversation], tokenizer: Any, music: Any, max_length: int) -> list[dict]:
    """Render conversations to ``{"input_ids", "labels"}`` rows (rows with no target dropped)."""
    rcfg = RenderConfig(max_length=max_length)
    rows = []
    for c in convs:
        r = render(c, tokenizer, music, rcfg)
        if any(r.loss_mask):
            rows.append({"input_ids": r.input_ids, "labels": r.labels()})
    return rows


class Collator:
    """Right-pads a batch: ``Collator(pad_id)(rows)`` -> input_ids, labels.

    No attention mask on purpose: with right padding and causal attention no real token
    ever attends to a pad, and pads carry no loss, so the mask changes nothing but moves
    attention off the fused causal kernel onto the slower masked path.
    """

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        n = max(len(r["input_ids"]) for r in rows)
        ids = torch.full((len(rows), n), self.pad_id, dtype=torch.long)
        labels = torch.full((len(rows), n), -100, dtype=torch.long)
        for i, r in enumerate(rows):
            m = len(r["input_ids"])
            ids[i, :m] = torch.tensor(r["input_ids"])
            labels[i, :m] = torch.tensor(r["labels"])
        return {"input_ids": ids, "labels": labels}


# --- model --------------------------------------------------------------------------


def music_token_ids(tokenizer: Any, music: Any) -> list[int]:
    return [int(i) for i in tokenizer.convert_tokens_to_ids(music_token_strings(music))]


# --- loss at supervised positions only ----------------------------------------------


def _supervised_trainer_class() -> Any:
    from transformers import Trainer

    class SupervisedHeadTrainer(Trainer):
        """A Trainer that runs the LM head only where the loss mask is 1.

        The head of a small LM is a large share of its compute (SmolLM2-135M with 8 layers:
        576 x 49k MACs per token, as much as the 8 layers together) and the loss mask covers
        a minority of tokens, so computing logits at every position and dropping most of them
        is the biggest waste in a training step. The model runs as usual (so DDP, FSDP, peft
        and gradient checkpointing wrap it unchanged) with ``logits_to_keep=1``; the head is
        applied to the final hidden states at the supervised positions only. The loss is the
        same sum over supervised tokens divided by the same count as the Trainer's own;
        ``tests/test_train.py`` checks the two give the same losses step by step.
        """

        loss_is_scaled_for_ga = True

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):  # noqa: ANN001
            labels = inputs["labels"]
            out = model(input_ids=inputs["input_ids"], output_hidden_states=True, logits_to_keep=1,
                        use_cache=False)
            target = labels[:, 1:]
            keep = target != -100
            hidden = out.hidden_states[-1][:, :-1][keep]
            head = self.accelerator.unwrap_model(model).get_output_embeddings()
            logits = head(hidden).float()
            loss = torch.nn.functional.cross_entropy(logits, target[keep], reduction="sum")
            if num_items_in_batch is None:  # no token count across accumulation steps: per-batch mean
                loss = loss / keep.sum().clamp(min=1) / self.current_gradient_accumulation_steps
            else:
                loss = loss / num_items_in_batch
                if self.args.average_tokens_across_devices:
                    loss = loss * self.accelerator.num_processes
            return (loss, out) if return_outputs else loss

    return SupervisedHeadTrainer


def head_is_plain(model: Any) -> bool:
    """Whether logits are exactly ``get_output_embeddings()(last hidden state)`` for ``model``:
    false for heads with soft-capping or a logit scale, which then take the Trainer's path."""
    cfg = model.config
    plain = all(getattr(cfg, name, None) is None for name in ("final_logit_softcapping", "logit_scale"))
    return plain and model.get_output_embeddings() is not None


# --- the run ------------------------------------------------------------------------


def _progress_callback() -> Any:
    from transformers import TrainerCallback

    class ProgressCallback(TrainerCallback):
        """Loss and tokens/s on a ``talkplay.log.ProgressBar`` (main process only)."""

        def __init__(self) -> None:
            self.bar: ProgressBar | None = None
            self.loss: float | None = None

        def on_train_begin(self, args, state, control, **kw):  # noqa: ANN001
            if state.is_world_process_zero:
                self.bar = ProgressBar(total=state.max_steps, desc="train").__enter__()
                self.bar.update(state.global_step)
                self.t0, self.tok0 = time.perf_counter(), state.num_input_tokens_seen

        def on_log(self, args, state, control, logs=None, **kw):  # noqa: ANN001
            if logs and "loss" in logs:
                self.loss = float(logs["loss"])

        def on_step_end(self, args, state, control, **kw):  # noqa: ANN001
            if self.bar is not None:
                rate = (state.num_input_tokens_seen - self.tok0) / max(time.perf_counter() - self.t0, 1e-9)
                loss = f"loss {self.loss:.3f} · " if self.loss is not None else ""
                self.bar.update(1, status=f"{loss}{rate:,.0f} tok/s")

        def on_train_end(self, args, state, control, **kw):  # noqa: ANN001
            if self.bar is not None:
                self.bar.__exit__(None, None, None)
                self.bar = None

    return ProgressCallback()


def _budget_callback(minutes: float) -> Any:
    """Stops training once ``minutes`` of wall time have passed since it began, on every
    process at the same step (the main process's clock decides). The learning-rate schedule
    stays the epochs' one: the codes are kept for comparison, not tuned for short budgets."""
    from accelerate import PartialState
    from transformers import TrainerCallback

    class TimeBudgetCallback(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):  # noqa: ANN001
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):  # noqa: ANN001
            # the Trainer runs on accelerate, whose process state says who is the main process
            if shared_clock(PartialState(), time.perf_counter() - self.t0) >= minutes * 60:
                log.info("time budget of %g min reached after %d steps", minutes, state.global_step)
                control.should_training_stop = True

    return TimeBudgetCallback()


def _checkpointing_args(args_cls: Any, on: bool) -> dict[str, Any]:
    """Activation checkpointing flags under the name this transformers version uses
    (``activation_checkpointing`` from 5.2x; ``gradient_checkpointing`` before, now deprecated)."""
    name = ("activation_checkpointing" if "activation_checkpointing" in args_cls.__dataclass_fields__
            else "gradient_checkpointing")
    return {name: True, f"{name}_kwargs": {"use_reentrant": False}} if on else {name: False}


@dataclass
class TrainInputs:
    """The model to train (music tokens added, LoRA-wrapped if asked) and its encoded rows."""

    model: Any
    tokenizer: Any
    rows: list[dict]
    new_ids: list[int]
    vocab_info: dict[str, Any]
    kept_layers: int | None
    music: Any = None  # the music tokenizer the model's new tokens stand for

    @property
    def n_tokens(self) -> int:
        return sum(len(r["input_ids"]) for r in self.rows)


def prepare_inputs(run: Run, cfg: TrainConfig) -> TrainInputs:
    """``prepare_inputs(run, cfg)``: load the music tokenizer, the train dialogs and the base
    model, add the music tokens and render the dialogs (``TalkPlayError`` when none has a target)."""
    music = MusicTokenizer.load(run.tokenizer_dir)
    convs = load_dialogs(run, "train")
    model, tok = load_base(cfg.base_model)
    layers = keep_first_layers(model, cfg.keep_layers) if cfg.keep_layers else None
    vocab_info = expand_vocab(model, tok, music, init=cfg.init, seed=cfg.seed)
    new_ids = music_token_ids(tok, music)
    rows = encode_dialogs(convs, tok, music, cfg.max_length)
    if not rows:
        raise TalkPlayError(f"{run.dialogs_dir / 'train.jsonl'} has no conversation with a supervised turn")
    if cfg.lora:
        model = add_lora(model, cfg, new_ids)
    model.train()
    return TrainInputs(model, tok, rows, new_ids, vocab_info, layers, music)


def training_arguments(run: Run, cfg: TrainConfig, world: int) -> Any:
    """The ``transformers.TrainingArguments`` for ``cfg`` (gloo for multi-process CPU runs)."""
    from transformers import TrainingArguments

    cuda = torch.cuda.is_available()
    return TrainingArguments(
        output_dir=str(run.checkpoints_dir),
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps if cfg.max_steps > 0 else -1,
        learning_rate=cfg.lr,
        weight_decay=0.0,
        warmup_steps=cfg.warmup_ratio,
        lr_scheduler_type="linear",
        logging_steps=cfg.log_every,
        save_strategy="steps",
        save_steps=cfg.save_every,
        report_to=[],
        disable_tqdm=True,
        seed=cfg.seed,
        data_seed=cfg.seed,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        include_num_input_tokens_seen="non_padding",
        use_cpu=not cuda,
        ddp_backend=None if cuda or world == 1 else "gloo",
        ddp_find_unused_parameters=False,
        bf16=cfg.bf16,
        **_checkpointing_args(TrainingArguments, cfg.gradient_checkpointing),
    )


def make_trainer(inputs: TrainInputs, args: Any, cfg: TrainConfig) -> Any:
    """A Trainer over ``inputs``: the supervised-head one where ``cfg`` and the model allow."""
    from transformers import Trainer
    from transformers.trainer_callback import PrinterCallback

    model, tok = inputs.model, inputs.tokenizer
    trainer_cls = _supervised_trainer_class() if cfg.supervised_logits and head_is_plain(model) else Trainer
    callbacks = [_progress_callback()] + ([_budget_callback(cfg.time_budget)] if cfg.time_budget else [])
    trainer = trainer_cls(model=model, args=args, train_dataset=inputs.rows,
                          data_collator=Collator(tok.pad_token_id), processing_class=tok,
                          callbacks=callbacks)
    trainer.remove_callback(PrinterCallback)  # it prints log dicts on stdout; ours go to stderr
    return trainer


def resume_checkpoint(run: Run, cfg: TrainConfig) -> str | None:
    """The checkpoint ``--resume`` continues from (None, with a warning, when there is none)."""
    from transformers.trainer_utils import get_last_checkpoint

    if not cfg.resume:
        return None
    found = get_last_checkpoint(str(run.checkpoints_dir)) if run.checkpoints_dir.exists() else None
    if found is None:
        log.warning("--resume: no checkpoint in %s; starting from the beginning", run.checkpoints_dir)
    return found


def save_trained(run: Run, cfg: TrainConfig, inputs: TrainInputs, model: Any, steps: int,
                 history: list[dict[str, Any]]) -> Path:
    """Write ``run/model`` (LoRA merged), the training log and the loss plot; returns the plot."""
    if cfg.lora:
        model = model.merge_and_unload()
    model.eval()
    model.config.use_cache = True
    new_ids = inputs.new_ids
    save_model_atomic(model, inputs.tokenizer, run.model_dir, {
        "base_model": cfg.base_model, "init": cfg.init, "lora": cfg.lora, "kept_layers": inputs.kept_layers,
        "music_token_ids": [min(new_ids), max(new_ids)], "steps": steps,
        **fingerprint.model_record(run, music=inputs.music)})
    train_dir = run.path / "train"
    write_jsonl_atomic(train_dir / "log.jsonl", history)
    plot_loss(history, train_dir / "loss.png")
    return train_dir / "loss.png"


def train_codes(run: Run, cfg: TrainConfig) -> dict[str, Any]:
    """Fine-tune on ``run``'s dialogs and write ``run/model``; returns a summary dict. The
    config is validated and the dialogs checked current by ``talkplay.train.train_run``."""
    from transformers import Trainer, set_seed

    t_start = time.perf_counter()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    set_seed(cfg.seed)
    fingerprint.check_tokenizer_inputs(run)
    inputs = prepare_inputs(run, cfg)
    trainable = sum(p.numel() for p in inputs.model.parameters() if p.requires_grad)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    trainer = make_trainer(inputs, training_arguments(run, cfg, world), cfg)
    resume_from = resume_checkpoint(run, cfg)
    log.info("training %s on %d conversations (%s tokens), %s trainable parameters%s", cfg.base_model,
             len(inputs.rows), f"{inputs.n_tokens:,}", f"{trainable:,}", " (LoRA)" if cfg.lora else "")
    t0 = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=resume_from)
    train_s = time.perf_counter() - t0
    state = trainer.state
    history = [h for h in state.log_history if "loss" in h or "train_runtime" in h]

    model = trainer.model
    if hasattr(model, "module"):
        model = model.module
    if world > 1:  # each replica's weights, so a test can check that they agree
        write_json_atomic(run.path / "train" / f"replica-{rank}.json",
                          {"rank": rank, "step": state.global_step, "weights_sha256": weights_digest(model)})
    summary: dict[str, Any] = {
        "config": asdict(cfg),
        "steps": state.global_step,
        "epochs": round(float(state.epoch or 0), 3),
        "conversations": len(inputs.rows),
        "dataset_tokens": inputs.n_tokens,
        "tokens_seen": int(state.num_input_tokens_seen),
        "tokens_per_s": round(state.num_input_tokens_seen / max(train_s, 1e-9), 1),
        "train_seconds": round(train_s, 1),
        "final_loss": next((h["loss"] for h in reversed(history) if "loss" in h), None),
        "first_loss": next((h["loss"] for h in history if "loss" in h), None),
        "train_loss": getattr(result, "training_loss", None),
        "trainable_parameters": trainable,
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        "vocab": inputs.vocab_info,
        "kept_layers": inputs.kept_layers,
        "supervised_logits": type(trainer) is not Trainer,
        "world_size": world,
        "rank": rank,
        "resumed_from": resume_from,
        "model_dir": str(run.model_dir),
    }
    if not trainer.is_world_process_zero():
        return summary
    plot = save_trained(run, cfg, inputs, model, state.global_step, history)
    summary["seconds"] = round(time.perf_counter() - t_start, 1)
    summary["loss_plot"] = str(plot)
    record = {k: v for k, v in summary.items() if k != "vocab"}
    run.record("train", record | {"added_tokens": inputs.vocab_info["added"]})
    return summary
