"""`talkplay recommend RUN "query" --k 10`: one-shot tracks plus the model's reply."""

from __future__ import annotations

from pathlib import Path

import typer

from talkplay.commands._common import JSON_HELP, emit_json, run_argument


def register(app: typer.Typer) -> None:
    @app.command("recommend")
    def _cmd(
        run: Path = run_argument(),
        query: str = typer.Argument(..., help="What to listen to."),
        k: int = typer.Option(10, "--k", help="How many tracks."),
        method: str = typer.Option("auto", "--method",
                                   help="Ranking: auto | exact | beam (beam: codes models only)."),
        as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
    ) -> None:
        """Recommend k catalog tracks for a request, with reasons and a reply."""
        from rich.console import Console

        from talkplay.engine.chat import RecommendConfig, print_cards, recommend_once

        out = recommend_once(run, RecommendConfig(query=query, k=k, method=method))
        if as_json:
            emit_json(out)
            return
        console = Console()
        print_cards(console, out["tracks"])
        if out["reply"]:
            console.print(out["reply"], highlight=False)
