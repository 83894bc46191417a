"""`talkplay chat RUN`: a terminal conversation with streamed replies and track cards."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from talkplay.commands._common import run_argument


def register(app: typer.Typer) -> None:
    @app.command("chat")
    def _cmd(
        run: Path = run_argument(),
        k: int = typer.Option(3, "--k", help="Tracks per answer."),
        method: str = typer.Option("auto", "--method",
                                   help="Ranking: auto | exact | beam (beam: codes models only)."),
        temperature: float = typer.Option(0.0, "--temperature", help="Reply sampling (0: greedy)."),
    ) -> None:
        """Chat: ask for music; /like N, /reject N, /reset, /quit."""
        from rich.console import Console

        from talkplay.engine import Engine, EngineConfig
        from talkplay.engine.chat import chat_loop

        engine = Engine.load(run, EngineConfig(method=method, temperature=temperature))
        chat_loop(engine, sys.stdin, Console(), k=k)
