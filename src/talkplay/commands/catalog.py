"""`talkplay catalog stats|add`."""

from __future__ import annotations

from pathlib import Path

import typer

from talkplay.commands._common import not_yet, run_argument


def register(app: typer.Typer) -> None:
    sub = typer.Typer(help="Inspect and extend a run's catalog.", no_args_is_help=True)
    app.add_typer(sub, name="catalog")

    @sub.command("stats")
    def _stats(run: Path = run_argument()) -> None:
        """Not yet available."""
        not_yet("catalog stats")
