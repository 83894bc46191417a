"""`talkplay train RUN`: fine-tune a base LM on the run's dialogs (see talkplay.train)."""

from __future__ import annotations

from pathlib import Path

import typer

from talkplay.commands._common import JSON_HELP, emit_json, run_argument


def register(app: typer.Typer) -> None:
    @app.command("train")
    def _cmd(
        run: Path = run_argument(),
        base_model: str = typer.Option("tiny", "--base-model",
                                       help="tiny | smollm2-135m | a hub name | a local folder."),
        init: str = typer.Option("mean_cov", "--init", help="New-token init: mean_cov | describe."),
        lora: bool = typer.Option(False, "--lora/--full", help="LoRA adapters + music rows, or all weights."),
        lora_rank: int = typer.Option(16, "--lora-rank"),
        epochs: float = typer.Option(1.0, "--epochs"),
        max_steps: int = typer.Option(-1, "--max-steps", help="Stop after N steps (overrides --epochs)."),
        lr: float = typer.Option(5e-4, "--lr"),
        batch_size: int = typer.Option(8, "--batch-size"),
        grad_accum: int = typer.Option(1, "--grad-accum"),
        max_length: int = typer.Option(512, "--max-length", help="Tokens per conversation."),
        save_every: int = typer.Option(200, "--save-every", help="Checkpoint interval in steps."),
        resume: bool = typer.Option(False, "--resume", help="Continue from the last checkpoint."),
        keep_layers: int = typer.Option(0, "--keep-layers", help="Keep only the first N layers (0: all)."),
        threads: int = typer.Option(0, "--threads", help="CPU threads (0: torch default)."),
        seed: int = typer.Option(0, "--seed"),
        bf16: bool = typer.Option(False, "--bf16", help="bfloat16 mixed precision (GPUs with bf16)."),
        gradient_checkpointing: bool = typer.Option(
            False, "--gradient-checkpointing", help="Recompute activations in backward: less memory."),
        supervised_logits: bool = typer.Option(
            True, "--supervised-logits/--all-logits",
            help="Run the LM head only where the loss mask is 1 (same loss, less time and memory)."),
        track_repr: str = typer.Option(
            "content", "--track-repr",
            help="content: each track is one row computed from its content; codes: k-means music tokens."),
        time_budget: float = typer.Option(
            0.0, "--time-budget", help="Minutes of training at most (0: none); the schedule fits it."),
        inject_gain: float = typer.Option(
            4.0, "--inject-gain",
            help="content: request embedding added at <|music|>, times the LM's final residual norm."),
        text_weight: float = typer.Option(1.0, "--text-weight", help="content: reply-text loss weight."),
        as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
    ) -> None:
        """Fine-tune the model: expand the vocabulary, train on dialogs, write RUN/model."""
        from talkplay.run import Run
        from talkplay.train import TrainConfig, train_run

        cfg = TrainConfig(base_model=base_model, init=init, lora=lora, lora_rank=lora_rank, epochs=epochs,
                          max_steps=max_steps, lr=lr, batch_size=batch_size, grad_accum=grad_accum,
                          max_length=max_length, save_every=save_every, resume=resume,
                          keep_layers=keep_layers or None, threads=threads or None, seed=seed,
                          bf16=bf16, gradient_checkpointing=gradient_checkpointing,
                          supervised_logits=supervised_logits, track_repr=track_repr,
                          time_budget=time_budget, inject_gain=inject_gain, text_weight=text_weight)
        out = train_run(Run(run), cfg)
        if out.get("rank", 0) != 0:  # data-parallel replicas: only the main process reports
            return
        if as_json:
            emit_json(out)
            return
        from talkplay.log import stderr_console

        stderr_console.print(
            f"trained {out['steps']} steps in {out['train_seconds']} s "
            f"({out['tokens_per_s']:,.0f} tokens/s); "
            f"loss {out['first_loss']:.3f} -> {out['final_loss']:.3f}; "
            f"model in {out['model_dir']}")
