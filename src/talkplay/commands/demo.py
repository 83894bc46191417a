"""`talkplay demo`."""

from __future__ import annotations

import typer

from talkplay.commands._common import not_yet


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def _cmd() -> None:
        """Not yet available."""
        not_yet("demo")
