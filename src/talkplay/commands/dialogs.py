"""`talkplay dialogs RUN`: build training conversations; `--show-mask` prints one rendered."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from talkplay.commands._common import JSON_HELP, emit_json, run_argument


def _example(run: Any, split: str, index: int | None, base_model: str | None) -> dict[str, Any]:
    """Render one conversation and return its (text, supervised) spans and counts."""
    from talkplay.dialogs import load_dialogs
    from talkplay.dialogs.render import render_spans
    from talkplay.errors import InputError
    from talkplay.model import add_music_tokens, load_tokenizer
    from talkplay.tokenizer import MusicTokenizer

    music = MusicTokenizer.load(run.tokenizer_dir)
    convs = load_dialogs(run, split)
    if not convs:
        raise InputError(f"the {split} split is empty", field="--split")
    if index is None:  # the first conversation with several turns and a recommendation
        index = next((i for i, c in enumerate(convs)
                      if len(c.turns) > 1 and any(t.recommended for t in c.turns)), 0)
    if not 0 <= index < len(convs):
        raise InputError(f"the {split} split has {len(convs)} conversations", field="--index")
    if base_model is None and (run.model_dir / "tokenizer_config.json").exists():
        tok = load_tokenizer(run.model_dir)
    else:
        tok = load_tokenizer(base_model or "smollm2-135m")
    add_music_tokens(tok, music)
    spans, rendered = render_spans(convs[index], tok, music)
    return {"conversation": convs[index].id, "split": split, "tokens": len(rendered.input_ids),
            "supervised": sum(rendered.loss_mask), "music_tokens": len(rendered.music_positions),
            "spans": [{"text": t, "supervised": s} for t, s in spans]}


def _print_example(ex: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.text import Text

    console = Console()
    console.rule(f"{ex['conversation']} ({ex['split']}): {ex['tokens']} tokens, "
                 f"{ex['supervised']} supervised, {ex['music_tokens']} music tokens")
    text = Text()
    for span in ex["spans"]:
        text.append(span["text"], style="bold black on green" if span["supervised"] else "dim")
    console.print(text, soft_wrap=True)
    console.rule("[bold black on green] supervised [/] = loss mask 1; dim = context only")


def register(app: typer.Typer) -> None:
    @app.command("dialogs")
    def _cmd(
        run: Path = run_argument(),
        synthesize: int = typer.Option(None, "--synthesize", help="Synthetic conversations to generate "
                                       "(default: one per track, at most 2,000, if the catalog has none)."),
        seed: int = typer.Option(0, "--seed", help="Seed for synthesis and splits."),
        max_turns: int = typer.Option(5, "--max-turns", help="Most turns in a synthetic conversation."),
        no_align: bool = typer.Option(False, "--no-align", help="Skip catalog-alignment examples."),
        no_search: bool = typer.Option(False, "--no-search",
                                       help="Skip the curators' searches of training conversations."),
        follow_ups: bool = typer.Option(False, "--follow-ups/--no-follow-ups",
                                        help="Add a chit-chat variant of each imported training "
                                             "conversation ('love these, keep going'), answered as the "
                                             "curator answered the real request."),
        no_imported: bool = typer.Option(False, "--no-imported", help="Leave out imported conversations."),
        valid_frac: float = typer.Option(0.05, "--valid-frac", help="Share of conversations for validation."),
        test_frac: float = typer.Option(0.1, "--test-frac", help="Share of conversations for test."),
        teacher: str = typer.Option(None, "--teacher", help="OpenAI-compatible base URL that rewrites "
                                    "synthetic turns (e.g. http://localhost:8000/v1)."),
        teacher_model: str = typer.Option(None, "--teacher-model", help="Model name at the teacher endpoint "
                                          "(default: its first listed model)."),
        show_mask: bool = typer.Option(False, "--show-mask", help="Print one rendered conversation with the "
                                       "supervised spans highlighted (builds the dialogs first if missing)."),
        split: str = typer.Option("train", "--split", help="Split to show with --show-mask."),
        index: int = typer.Option(None, "--index", help="Conversation to show with --show-mask."),
        base_model: str = typer.Option(None, "--base-model", help="Tokenizer for --show-mask (default: the "
                                       "run's trained model, else smollm2-135m)."),
        force: bool = typer.Option(False, "--force",
                                   help="Replace the dialogs even when the trained model learnt from them "
                                        "(the model must then be retrained)."),
        as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
    ) -> None:
        """Build train/valid/test conversations (imported, synthetic, catalog alignment)."""
        from talkplay.dialogs import DialogsConfig, build_dialogs
        from talkplay.run import Run

        r = Run(run)
        built = (r.dialogs_dir / "train.jsonl").exists()
        info: dict[str, Any] = {}
        if not (show_mask and built and synthesize is None and teacher is None):
            cfg = DialogsConfig(synthesize=synthesize, seed=seed, max_turns=max_turns, align=not no_align,
                                search=not no_search, follow_ups=follow_ups,
                                include_imported=not no_imported, valid_frac=valid_frac, test_frac=test_frac,
                                teacher=teacher, teacher_model=teacher_model,
                                min_turns=min(2, max_turns))
            info = build_dialogs(r, cfg, force=force)
        if show_mask:
            info["example"] = _example(r, split, index, base_model)
        if as_json:
            emit_json(info)
            return
        if "train" in info:
            from rich.console import Console

            Console().print(
                f"dialogs: {info['train']:,} train, {info['valid']:,} valid, {info['test']:,} test "
                f"conversations ({info['imported']:,} imported, {info['synthesized']:,} synthetic, "
                f"{info['alignment']:,} alignment) in {r.dialogs_dir}")
        if show_mask:
            _print_example(info["example"])
