"""`talkplay demo [music21|cpcd] [--run runs/demo] [--serve] [--no-chat] [--json]`.

The catalog is a positional argument, not a ``--catalog`` flag: the demo is always one of
the two, and ``talkplay demo cpcd`` reads as what it does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from talkplay.commands._common import JSON_HELP, emit_json

ICONS = {"pending": "[dim]·[/]", "running": "[yellow]▶[/]", "done": "[green]✓[/]",
         "skipped": "[green]✓[/]", "failed": "[red]✗[/]"}


def _stage_line(st: Any) -> str:
    took = f" {st.seconds:.1f} s" if st.seconds is not None and st.status != "skipped" else ""
    words = {"skipped": "skipped, already complete", "running": "running…"}.get(st.status, st.status)
    note = f" ({st.note})" if st.note and st.status == "failed" else ""
    return f"  {ICONS.get(st.status, ' ')} {st.name:<9} {words}{took}{note}"


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def _cmd(
        catalog: str = typer.Argument("music21", metavar="CATALOG", help=(
            "Which demo: music21 (folk and classical scores, the default) or cpcd (CPCD's "
            "conversations about popular music).")),
        run: Path = typer.Option(None, "--run", help="Run directory (created if missing; default "
                                 "runs/demo, for cpcd runs/demo-cpcd).", file_okay=False),
        serve: bool = typer.Option(False, "--serve", help="Open the web page instead of the terminal chat."),
        no_chat: bool = typer.Option(False, "--no-chat", help="Stop after the evaluation table."),
        catalog_limit: int = typer.Option(None, "--catalog-limit",
                                          help="Tracks to import (cpcd: conversations)."),
        audio_limit: int = typer.Option(None, "--audio-limit", help="Tracks rendered to audio."),
        model: str = typer.Option(None, "--model", help="Base model: alias, hub name or folder."),
        port: int = typer.Option(8000, help="Port for --serve."),
        config: Path = typer.Option(None, "--config", help="JSON file of DemoConfig fields; flags win.",
                                    dir_okay=False),
        as_json: bool = typer.Option(False, "--json", help=JSON_HELP + " Implies --no-chat."),
    ) -> None:
        """Import a catalog, encode, tokenize, build dialogs, train, evaluate, then chat.

        The music21 demo builds its catalog and dialogs from music21's scores; the cpcd demo
        trains on CPCD's own conversations (shipped with talkplay, CC BY 4.0) and evaluates with
        CPCD's protocol. Finished stages are skipped, so a second run goes straight to the chat
        and an interrupted run resumes where it stopped.
        """
        from talkplay.demo import DEFAULT_RUNS, DemoConfig, plan, run_demo
        from talkplay.log import stderr_console
        from talkplay.run import Run

        overrides = {k: v for k, v in {"catalog_limit": catalog_limit, "audio_limit": audio_limit,
                                       "model": model}.items() if v is not None}
        cfg = (DemoConfig.from_file(config, preset=catalog, **overrides) if config
               else DemoConfig.preset(catalog, **overrides))
        run = run or Path(DEFAULT_RUNS[catalog])
        r = Run(run)
        stderr_console.print(f"[bold]talkplay demo[/] → {run}", highlight=False)

        def on_status(_all: list[Any], st: Any) -> None:
            stderr_console.print(_stage_line(st), markup=True, highlight=False)

        for st in plan(r, cfg):
            word = "complete, will be skipped" if st.status == "done" else "to do"
            stderr_console.print(f"  {ICONS[st.status]} {st.name:<9} {word}", markup=True, highlight=False)
        result = run_demo(r, cfg, on_status=on_status)
        stderr_console.print(f"  pipeline ready in {result['seconds']:.1f} s", highlight=False)
        if as_json:
            emit_json(result)
            return
        if result.get("evaluation"):
            from talkplay.evaluate.report import rich_table

            stderr_console.print(rich_table(result["evaluation"]))
        if serve:
            _serve(r, port)
        elif not no_chat:
            _chat(r)


def _serve(run: Any, port: int) -> None:
    import threading
    import webbrowser

    from talkplay.serve import ServeConfig, serve_run

    cfg = ServeConfig(run_dir=run.path, port=port)
    cfg.validate()
    # the server blocks; open the page once it is likely listening
    threading.Timer(2.0, webbrowser.open, args=(f"http://{cfg.host}:{cfg.port}/",)).start()
    serve_run(run, cfg)


def _chat(run: Any) -> None:
    import sys

    from rich.console import Console

    from talkplay.engine import Engine
    from talkplay.engine.chat import chat_loop

    chat_loop(Engine.load(run.path), sys.stdin, Console())
