"""`talkplay dialogs RUN`: build training conversations; `--show-mask` prints one rendered."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from talkplay.commands._common import JSON_HELP, emit_json, run_argument


def _example(run: Any, split: str, index: int | None, base_model: str | None,
             track_repr: str | None) -> dict[str, Any]:
    """Render one conversation as the model of ``track_repr`` (default: the run's trained
    model's, else content) trains on it: its spans, each supervised or not, and counts."""
    from talkplay.dialogs import load_dialogs
    from talkplay.engine.protocol import track_repr_of
    from talkplay.errors import InputError
    from talkplay.model import load_tokenizer
    from talkplay.train_config import TrainConfig

    convs = load_dialogs(run, split)
    if not convs:
        raise InputError(f"the {split} split is empty", field="--split")
    if index is None:  # the first conversation with several turns and a recommendation
        index = next((i for i, c in enumerate(convs)
                      if len(c.turns) > 1 and any(t.recommended for t in c.turns)), 0)
    if not 0 <= index < len(convs):
        raise InputError(f"the {split} split has {len(convs)} conversations", field="--index")
    trained = (run.model_dir / "config.json").exists()
    track_repr = track_repr or (track_repr_of(run) if trained else TrainConfig.track_repr)
    if base_model is None and (run.model_dir / "tokenizer_config.json").exists():
        tok = load_tokenizer(run.model_dir)
    else:
        tok = load_tokenizer(base_model or "smollm2-135m")
    out = {"conversation": convs[index].id, "split": split, "track_repr": track_repr}
    show = _content_spans if track_repr == "content" else _codes_spans
    return out | show(run, convs[index], tok)


def _codes_spans(run: Any, conv: Any, tok: Any) -> dict[str, Any]:
    """A codes model's view: each track a block of code tokens, every token text or code."""
    from talkplay.dialogs.render import render_spans
    from talkplay.errors import InputError
    from talkplay.model import add_music_tokens

    if not (run.tokenizer_dir / "tokenizer.npz").exists():
        raise InputError(f"{run.tokenizer_dir} holds no music tokenizer: a codes model is trained on "
                         "the codes of `talkplay tokenize`", field="--track-repr")
    from talkplay.tokenizer import MusicTokenizer  # the codes path, only for a codes run

    music = MusicTokenizer.load(run.tokenizer_dir)
    add_music_tokens(tok, music)
    spans, rendered = render_spans(conv, tok, music)
    return {"tokens": len(rendered.input_ids), "supervised": sum(rendered.loss_mask),
            "music_tokens": len(rendered.music_positions),
            "spans": [{"text": t, "supervised": s, "kind": "text"} for t, s in spans]}


def _content_spans(run: Any, conv: Any, tok: Any) -> dict[str, Any]:
    """A content model's view, as ``talkplay.tracks.data.Example`` builds it: a ``<|track|>``
    slot per track (its row, named here by the track's id), the cards after them, the reply
    text (the text loss) and the ``<|music|>`` opens whose next track the track head learns."""
    from talkplay.dialogs.render import render
    from talkplay.model import add_music_tokens
    from talkplay.tracks.data import Example
    from talkplay.tracks.features import TrackSlots
    from talkplay.tracks.meta import ContentMeta, render_config
    from talkplay.train_config import TrainConfig

    catalog = run.load_catalog(validate=False)
    slots = TrackSlots(catalog.ids())
    add_music_tokens(tok, slots)
    if (run.model_dir / "tracks.json").exists():  # as the trained model reads it
        rcfg = ContentMeta.read(run.model_dir).render_config(catalog)
    else:  # as `talkplay train` would, with its defaults
        d = TrainConfig()
        rcfg = render_config(catalog, d.max_length, d.cards, d.cards_history)
    ex = Example.from_rendered(render(conv, tok, slots, rcfg), conv, tok, slots)
    slot_at = {p: slots.track_ids[row] for p, row in ex.slots}
    ranked = {o.position for o in ex.opens if o.target >= 0}
    ids = ex.input_ids
    runs: list[dict[str, Any]] = []  # text runs of one mask value; each slot and ranked open alone
    for p, i in enumerate(ids):
        kind = "slot" if p in slot_at else "open" if p in ranked else "text"
        sup = kind == "open" or (kind == "text" and ex.labels[p] != -100)
        if kind == "text" and runs and runs[-1]["kind"] == "text" and runs[-1]["supervised"] == sup:
            runs[-1]["ids"].append(i)
        else:
            runs.append({"kind": kind, "supervised": sup, "ids": [i], "at": p})
    spans = [{"text": f"<|track|>[{slot_at[r['at']]}]" if r["kind"] == "slot" else tok.decode(r["ids"]),
              "supervised": r["supervised"], "kind": r["kind"]} for r in runs]
    return {"tokens": len(ids), "supervised": sum(x != -100 for x in ex.labels), "slots": len(ex.slots),
            "ranked_opens": len(ranked), "cards": rcfg.cards is not None, "spans": spans}


def _print_example(ex: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.text import Text

    console = Console()
    if ex["track_repr"] == "content":
        counts = (f"{ex['supervised']} text-loss tokens, {ex['slots']} track slots, "
                  f"{ex['ranked_opens']} ranked <|music|>")
    else:
        counts = f"{ex['supervised']} supervised, {ex['music_tokens']} music tokens"
    console.rule(f"{ex['conversation']} ({ex['split']}, {ex['track_repr']}): {ex['tokens']} tokens, {counts}")
    styles = {"slot": "bold cyan", "open": "bold black on magenta"}
    text = Text()
    for span in ex["spans"]:
        style = styles.get(span["kind"]) or ("bold black on green" if span["supervised"] else "dim")
        text.append(span["text"], style=style)
    console.print(text, soft_wrap=True)
    legend = "[bold black on green] supervised [/] = text loss; dim = context only"
    if ex["track_repr"] == "content":
        legend += ("; [bold cyan]<|track|>[id][/] = a track's row; "
                   "[bold black on magenta] <|music|> [/] = the track head learns the next track")
    console.rule(legend)


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
        follow_ups: bool = typer.Option(True, "--follow-ups/--no-follow-ups",
                                        help="A chit-chat variant of each imported training "
                                             "conversation ('love these, keep going'), answered as the "
                                             "curator answered the real request (default: on; it taught "
                                             "chit-chat to go on from the conversation, BENCHMARKS.md)."),
        follow_up_turns: int = typer.Option(1, "--follow-up-turns",
                                            help="Chit-chat variants per conversation, each cut at another "
                                                 "of its 2nd-4th turns (1-3)."),
        chit_chat_prefix: bool = typer.Option(False, "--chit-chat-prefix/--no-chit-chat-prefix",
                                              help="In each chit-chat variant, chit-chat in front of one "
                                                   "earlier real request too ('awesome picks! now some "
                                                   "reggae'), answered as before."),
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
        track_repr: str = typer.Option(None, "--track-repr", help="The model --show-mask shows the "
                                       "training view of: content or codes (default: the run's "
                                       "trained model's, else content)."),
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
                                follow_up_turns=follow_up_turns, chit_chat_prefix=chit_chat_prefix,
                                include_imported=not no_imported, valid_frac=valid_frac, test_frac=test_frac,
                                teacher=teacher, teacher_model=teacher_model,
                                min_turns=min(2, max_turns))
            info = build_dialogs(r, cfg, force=force)
        if show_mask:
            info["example"] = _example(r, split, index, base_model, track_repr)
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
