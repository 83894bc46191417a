"""`talkplay tokenize RUN`: fit the music tokenizer and print its diagnostics."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from talkplay.commands._common import JSON_HELP, emit_json, run_argument


def _fmt(x: float | None, pct: bool = True) -> str:
    if x is None:
        return "-"
    return f"{x:.1%}" if pct else f"{x:.2f}"


def _print_table(diag: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"music tokens: {diag['tracks']:,} tracks, {diag['sequence_length']} tokens each")
    for col in ("modality", "clusters", "used", "entropy (bits)", "unknown",
                "artist purity (random)", "tag purity (random)"):
        table.add_column(col, justify="left" if col == "modality" else "right")
    for m, u in diag["usage"].items():
        pur = diag.get("purity", {}).get(m, {})
        cells = []
        for kind in ("artist", "tag"):
            p = pur.get(kind, {})
            cells.append(f"{_fmt(p.get('purity'))} ({_fmt(p.get('random'))})" if p.get("purity") is not None
                         else "-")
        table.add_row(m, str(u["clusters"]), _fmt(u["share_used"]),
                      f"{u['entropy_bits']:.2f} / {u['normalized_entropy']:.0%}", _fmt(u["unknown"]), *cells)
    console = Console()
    console.print(table)
    console.print(f"unique sequences: {diag['unique_sequences']:,} of {diag['tracks']:,}; "
                  f"collision rate before disambiguation: {diag['collision_rate']:.2%} "
                  f"(largest group {diag['max_collision_group']}); vocabulary {diag['vocab_size']:,} tokens; "
                  f"trie {diag['trie_bytes_per_track']:.1f} B/track")
    if diag.get("plot"):
        console.print(f"plot: {diag['plot']}")


def register(app: typer.Typer) -> None:
    @app.command("tokenize")
    def _cmd(
        run: Path = run_argument(),
        k: int = typer.Option(1024, "--k", help="Clusters per codebook (capped at tracks/4 per modality)."),
        levels: int = typer.Option(1, "--levels", help="1 = flat k-means; 2+ = residual k-means levels."),
        order: list[str] = typer.Option(None, "--order",
                                        help="Modality order (repeat or comma-separate); default: the "
                                             "paper's order, keeping modalities with embeddings."),
        seed: int = typer.Option(0, "--seed", help="Random seed for k-means."),
        backend: str = typer.Option("auto", "--backend", help="auto, faiss or sklearn."),
        force: bool = typer.Option(False, "--force",
                                   help="Replace the tokenizer even when the trained model depends on it "
                                        "(the model must then be retrained)."),
        as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
    ) -> None:
        """Give every track a unique sequence of music tokens (k-means per modality)."""
        from talkplay.run import Run
        from talkplay.tokenizer import TokenizerConfig, tokenize_run

        names = [x.strip() for o in (order or []) for x in o.split(",") if x.strip()] or None
        cfg = TokenizerConfig(k=k, levels=levels, order=names, seed=seed, backend=backend)
        diag = tokenize_run(Run(run), cfg, force=force)
        if as_json:
            emit_json(diag)
        else:
            _print_table(diag)
