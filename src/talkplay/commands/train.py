"""`talkplay train RUN`: fine-tune a base LM on the run's dialogs (see talkplay.train)."""

from __future__ import annotations

from pathlib import Path

import typer

from talkplay.commands._common import JSON_HELP, emit_json, run_argument
from talkplay.train_config import TrainConfig


def register(app: typer.Typer) -> None:
    d = TrainConfig()  # every default comes from the config dataclass, declared once

    @app.command("train")
    def _cmd(
        run: Path = run_argument(),
        base_model: str = typer.Option(d.base_model, "--base-model",
                                       help="tiny | smollm2-135m | a hub name | a local folder."),
        track_repr: str = typer.Option(
            d.track_repr, "--track-repr",
            help="content: each track is one row computed from its content; codes: k-means music tokens."),
        time_budget: float = typer.Option(
            d.time_budget, "--time-budget",
            help="Minutes of training at most (0: none); the learning-rate schedule fits the budget."),
        init: str = typer.Option(d.init, "--init", help="New-token init: mean_cov | describe."),
        lora: bool = typer.Option(d.lora, "--lora/--full", help="LoRA adapters + new rows, or all weights."),
        lora_rank: int = typer.Option(d.lora_rank, "--lora-rank"),
        epochs: float = typer.Option(d.epochs, "--epochs"),
        max_steps: int = typer.Option(d.max_steps, "--max-steps", help="Stop after N steps (over --epochs)."),
        lr: float = typer.Option(d.lr, "--lr"),
        batch_size: int = typer.Option(d.batch_size, "--batch-size"),
        grad_accum: int = typer.Option(d.grad_accum, "--grad-accum", help="codes only."),
        max_length: int = typer.Option(d.max_length, "--max-length", help="Tokens per conversation."),
        save_every: int = typer.Option(d.save_every, "--save-every", help="Checkpoint interval in steps."),
        resume: bool = typer.Option(d.resume, "--resume", help="Continue from the last checkpoint."),
        keep_layers: int = typer.Option(d.keep_layers or 0, "--keep-layers",
                                        help="Keep only the first N layers (0: all)."),
        exit_layer: int = typer.Option(
            d.exit_layer or 0, "--exit-layer",
            help="content: the layer the track head reads (0: the last); replies read every layer."),
        threads: int = typer.Option(d.threads or 0, "--threads", help="CPU threads (0: torch default)."),
        seed: int = typer.Option(d.seed, "--seed"),
        inject_gain: float = typer.Option(
            d.inject_gain, "--inject-gain",
            help="content: request embedding added at <|music|>, times the LM's final residual norm."),
        text_weight: float = typer.Option(d.text_weight, "--text-weight",
                                          help="content: weight of the reply-text loss."),
        text_every: int = typer.Option(
            d.text_every, "--text-every",
            help="content, with an early --exit-layer: the reply-text loss in one step of N; the "
                 "others run only the layers up to the exit, for the track loss."),
        bf16: bool = typer.Option(d.bf16, "--bf16", help="bfloat16 mixed precision (GPUs with bf16)."),
        gradient_checkpointing: bool = typer.Option(
            d.gradient_checkpointing, "--gradient-checkpointing",
            help="Recompute activations in backward: less memory (codes only)."),
        supervised_logits: bool = typer.Option(
            d.supervised_logits, "--supervised-logits/--all-logits",
            help="codes: run the LM head only where the loss mask is 1 (same loss, less time and memory)."),
        modalities: str = typer.Option(d.modalities or "", "--modalities",
                                       help="content: modalities a track's row reads, e.g. metadata,tags "
                                            "(default: every encoded one)."),
        modality_dropout: float = typer.Option(
            d.modality_dropout, "--modality-dropout",
            help="content: chance a non-text modality (co-occurrence, audio) is hidden from a row "
                 "in training."),
        cards: bool = typer.Option(
            d.cards, "--cards/--no-cards",
            help="Write each track's card (title, artist, facts) into the context after it, in "
                 "training and at inference; replies are written after the cards."),
        cards_history: bool = typer.Option(
            d.cards_history, "--cards-history/--cards-latest",
            help="Cards after the tracks of every answer, or of the latest answer only (the one "
                 "its reply talks about; earlier turns keep more of the window)."),
        words: bool = typer.Option(
            d.words, "--words/--no-words",
            help="content: a track's own words (title, artists, album, tags) as one more modality, "
                 "and the request's words beside its text embedding."),
        net_lr: float = typer.Option(
            d.net_lr, "--net-lr",
            help="content: learning rate of the track network (row and request projections, "
                 "head), as a fraction of --lr; 0 freezes it."),
        current_gate: bool = typer.Option(
            d.current_gate, "--current-gate/--no-current-gate",
            help="content: the turn's own message weighs what its text embedding says (learnt), "
                 "so chit-chat can weigh less than a request; --no-current-gate: one weight for "
                 "every message."),
        words_gate: bool = typer.Option(
            d.words_gate, "--words-gate/--no-words-gate",
            help="content: the request's words weigh what the turn's own message says (learnt), so "
                 "chit-chat's words can go quiet."),
        own_words: bool = typer.Option(
            d.own_words, "--own-words/--no-own-words",
            help="content: the turn's own words taken out of (or added to) the request's words by a "
                 "signed weight its message says (learnt), while the earlier turns' words stay."),
        word_weights: bool = typer.Option(
            d.word_weights, "--word-weights/--no-word-weights",
            help="content: weigh each request word by the square of how much more often than chance "
                 "the training turns whose message holds it were answered by tracks whose words "
                 "hold it too (chit-chat that titles echo goes quiet; a word no training message "
                 "used keeps full weight)."),
        goal_weight: float = typer.Option(
            d.goal_weight, "--goal-weight",
            help="content: weight of the conversation's playlist (its other liked tracks not yet "
                 "written) as targets beside each turn's own track (0: the turn's own only)."),
        disliked_weight: float = typer.Option(
            d.disliked_weight, "--disliked-weight",
            help="content: how many times a track the user turned down at a turn counts among that "
                 "turn's wrong answers (1: as any other track)."),
        every_turn: bool = typer.Option(
            d.every_turn, "--every-turn/--last-turns",
            help="content: a conversation longer than --max-length also trains the oldest turns it "
                 "drops, as one more example ending where they end (--last-turns: they are dropped)."),
        negatives: str = typer.Option(
            d.negatives, "--negatives",
            help="content: what a training target is ranked against: seen (the tracks the training "
                 "conversations hold) or catalog (every track; tracks no conversation has are then "
                 "learnt as worse)."),
        words_gain: float = typer.Option(
            d.words_gain, "--words-gain",
            help="content: weight of the request's words beside its text embedding, at initialisation."),
        context: float = typer.Option(
            d.context, "--context",
            help="content: weight of the conversation's tracks so far beside the request at "
                 "<|music|>, at initialisation (0: the request alone)."),
        current: float = typer.Option(
            d.current, "--current",
            help="content: weight of the turn's own message beside the whole conversation's "
                 "request, at initialisation (0: the conversation's text alone)."),
        as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
    ) -> None:
        """Fine-tune the model: expand the vocabulary, train on dialogs, write RUN/model."""
        from talkplay.run import Run
        from talkplay.train import train_run

        cfg = TrainConfig(base_model=base_model, init=init, lora=lora, lora_rank=lora_rank, epochs=epochs,
                          max_steps=max_steps, lr=lr, batch_size=batch_size, grad_accum=grad_accum,
                          max_length=max_length, save_every=save_every, resume=resume,
                          keep_layers=keep_layers or None, exit_layer=exit_layer or None,
                          threads=threads or None, seed=seed,
                          bf16=bf16, gradient_checkpointing=gradient_checkpointing,
                          supervised_logits=supervised_logits, track_repr=track_repr,
                          time_budget=time_budget, inject_gain=inject_gain, text_weight=text_weight,
                          text_every=text_every,
                          modalities=modalities or None, modality_dropout=modality_dropout, cards=cards,
                          cards_history=cards_history,
                          words=words, net_lr=net_lr, current_gate=current_gate, words_gate=words_gate,
                          own_words=own_words, word_weights=word_weights,
                          negatives=negatives, goal_weight=goal_weight, disliked_weight=disliked_weight,
                          every_turn=every_turn,
                          context=context,
                          words_gain=words_gain, current=current)
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
