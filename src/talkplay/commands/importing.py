"""`talkplay import SOURCE PATH --out RUN`."""

from __future__ import annotations

from pathlib import Path

import typer

from talkplay.commands._common import JSON_HELP, emit_json


def register(app: typer.Typer) -> None:
    @app.command("import")
    def _cmd(
        source: str = typer.Argument(..., help="music21, cpcd, talkplaydata2, mpd or table."),
        path: str = typer.Argument(..., help="File or folder to import ('-' = the music21 corpus)."),
        out: Path = typer.Option(..., "--out", help="Run directory (created if absent; merged into)."),
        skip_invalid: bool = typer.Option(False, "--skip-invalid", help="Skip bad rows and summarise them."),
        map_: list[str] = typer.Option([], "--map", help="table: FIELD=COLUMN, e.g. title=song_name."),
        config: str | None = typer.Option(None, "--config", help="table: mapping config (YAML/JSON)."),
        tracks: str | None = typer.Option(None, "--tracks", help="talkplaydata2 flat schema: track table."),
        collections: str | None = typer.Option(None, "--collections",
                                               help="music21: corpus folders, comma-separated."),
        limit: int | None = typer.Option(None, "--limit",
                                         help="At most this many records (music21: works spread over all "
                                         "collections; mpd: slice files)."),
        as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
    ) -> None:
        """Import a catalog (and conversations) into a run directory; re-running is idempotent."""
        from talkplay.run import Run
        from talkplay.sources import ImportConfig, import_into_run

        opts = {"map": map_ or None, "config": config, "tracks": tracks, "collections": collections,
                "limit": limit}
        info = import_into_run(Run(out), ImportConfig(source=source, path=path, skip_invalid=skip_invalid,
                                                      options=opts))
        if as_json:
            emit_json(info)
        else:
            print_summary(info)


def print_summary(info: dict) -> None:
    """Human summary of an import (or `catalog add`) on the terminal."""
    from rich.console import Console
    from rich.table import Table

    con = Console()
    t = Table(title=f"{info['source']}: {info['path']} -> {info['run']}")
    for col in ("", "read", "new", "run total"):
        t.add_column(col, justify="right" if col else "left")
    for k in ("tracks", "playlists", "conversations"):
        t.add_row(k, f"{info['read'][k]:,}", f"{info['added'][k]:,}", f"{info['total'][k]:,}")
    con.print(t)
    sk = info["skipped"]
    if sk["count"]:
        # soft_wrap: file names and line numbers must stay on one line for grep and tests
        con.print(f"[yellow]skipped {sk['count']} invalid record(s):[/]", soft_wrap=True)
        for reason, n in sk["by_reason"].items():
            con.print(f"  {n:>6}  {reason}", highlight=False, markup=False, soft_wrap=True)
        for ex in sk["examples"]:
            con.print(f"  e.g. {ex}", highlight=False, markup=False, soft_wrap=True)
    con.print(f"done in {info['seconds']} s")
