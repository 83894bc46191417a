"""`talkplay eval`."""

from __future__ import annotations

from pathlib import Path

import typer

from talkplay.commands._common import not_yet, run_argument


def register(app: typer.Typer) -> None:
    @app.command("eval")
    def _cmd(run: Path = run_argument()) -> None:
        """Not yet available."""
        not_yet("eval")
