"""`talkplay serve RUN`: the HTTP API and web page over a trained run."""

from __future__ import annotations

from pathlib import Path

import typer

from talkplay.commands._common import run_argument


def register(app: typer.Typer) -> None:
    @app.command("serve")
    def _cmd(
        run: Path = run_argument(),
        host: str = typer.Option("127.0.0.1", help="Interface to listen on (0.0.0.0 for all)."),
        port: int = typer.Option(8000, help="TCP port."),
        max_concurrency: int = typer.Option(1, help="Model calls running at once."),
        max_queue: int = typer.Option(32, help="Requests waiting for the model; beyond this, 429."),
        max_message_chars: int = typer.Option(2000, help="Longest accepted message."),
        reply_tokens: int = typer.Option(None, help="Longest model reply in tokens (default: the engine's)."),
        batch_size: int = typer.Option(16, help="Conversations answered in one batch (1: one at a time)."),
        batch_wait_ms: float = typer.Option(10.0, help="How long an idle model waits for a batch to fill."),
    ) -> None:
        """Serve RUN: OpenAI-compatible /v1/chat/completions, /v1/recommend, audio, and a web page."""
        from talkplay.run import Run
        from talkplay.serve import ServeConfig, serve_run

        cfg = ServeConfig(run_dir=run, host=host, port=port, max_concurrency=max_concurrency,
                          max_queue=max_queue, max_message_chars=max_message_chars,
                          reply_tokens=reply_tokens, batch_size=batch_size, batch_wait_ms=batch_wait_ms)
        cfg.validate()
        serve_run(Run(run), cfg)
