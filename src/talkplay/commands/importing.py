"""`talkplay import SOURCE PATH --out RUN`."""

from __future__ import annotations

from pathlib import Path

import typer

from talkplay.commands._common import not_yet


def register(app: typer.Typer) -> None:
    @app.command("import")
    def _cmd(source: str = typer.Argument(...), path: str = typer.Argument(...),
             out: Path = typer.Option(..., "--out")) -> None:
        """Not yet available."""
        not_yet("import")
