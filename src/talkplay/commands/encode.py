"""`talkplay encode RUN`: embed every track per modality into RUN/embeddings/."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from talkplay.commands._common import JSON_HELP, emit_json, run_argument
from talkplay.errors import InputError


def _split(values: list[str] | None) -> list[str]:
    out: list[str] = []
    for v in values or []:
        out.extend(x.strip() for x in v.split(",") if x.strip())
    return out


def _parse_shard(value: str | None) -> tuple[int, int] | None:
    if not value:
        return None
    try:
        i, n = (int(x) for x in value.split("/"))
    except ValueError:
        raise InputError(f"expected i/n such as 0/4, got {value!r}", field="--shard") from None
    return i, n


def _print_summary(info: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"embeddings of {info['tracks']:,} tracks in {info['run']}"
                  + (f" (shard {info['shard']})" if info.get("shard") else ""))
    for col in ("modality", "model", "dim", "present", "missing", "encoded", "cached"):
        table.add_column(col, justify="left" if col in ("modality", "model") else "right")
    for m, e in info["modalities"].items():
        table.add_row(m, str(e.get("model", "")), str(e.get("dim", "")), f"{e.get('present', 0):,}",
                      f"{e.get('missing', 0):,}", f"{e.get('encoded', 0):,}", f"{e.get('cached', 0):,}")
    console = Console()
    console.print(table)
    failed = info["modalities"].get("audio", {}).get("failed")
    if failed:
        console.print(f"[yellow]{failed} track(s) had unusable audio (reasons in the warnings above); "
                      "their audio mask is False[/]")
    tags = info["modalities"].get("tags", {})
    if tags.get("from_audio"):
        console.print(f"{tags['from_audio']} tracks without tags use their musicnn top tags")


def register(app: typer.Typer) -> None:
    @app.command("encode")
    def _cmd(
        run: Path = run_argument(),
        modalities: list[str] = typer.Option(None, "--modalities", "-m",
                                             help="Modalities to encode (repeat or comma-separate): "
                                                  "cooccur, tags, metadata, lyrics, audio. Default: all."),
        text_model: str | None = typer.Option(None, "--text-model",
                                              help="A sentence-transformers name or folder (default: "
                                                   "the bundled all-MiniLM-L6-v2, offline)."),
        batch_size: int = typer.Option(64, "--batch-size", help="Texts per text-encoder batch."),
        audio_limit: int | None = typer.Option(None, "--audio-limit",
                                               help="Encode audio for a deterministic sample of N tracks."),
        audio_seconds: float = typer.Option(30.0, "--audio-seconds", help="Centred excerpt per track (s)."),
        cooccur_dim: int = typer.Option(64, "--cooccur-dim", help="Co-occurrence embedding size."),
        shard: str | None = typer.Option(None, "--shard",
                                         help="i/n: encode only rows r %% n == i into a shard file; "
                                              "a later run without --shard merges the shards."),
        force: bool = typer.Option(False, "--force",
                                   help="Recompute everything, ignoring cached rows, even with another model "
                                        "than the trained one was built on (then retrain it)."),
        seed: int = typer.Option(0, "--seed", help="Random seed (co-occurrence SVD)."),
        device: str = typer.Option("cpu", "--device",
                                   help="Torch device for the models: cpu, cuda, cuda:1, mps."),
        as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
    ) -> None:
        """Embed every track per modality (text, audio, co-occurrence); re-runs reuse cached rows."""
        from talkplay.encoders import EncodeConfig, encode_run
        from talkplay.modalities import DEFAULT_ORDER
        from talkplay.run import Run

        cfg = EncodeConfig(modalities=tuple(_split(modalities)) or DEFAULT_ORDER, text_model=text_model,
                           batch_size=batch_size, audio_limit=audio_limit, audio_seconds=audio_seconds,
                           cooccur_dim=cooccur_dim, shard=_parse_shard(shard), force=force, seed=seed,
                           device=device)
        info = encode_run(Run(run), cfg, force=force)
        if as_json:
            emit_json(info)
        else:
            _print_summary(info)
