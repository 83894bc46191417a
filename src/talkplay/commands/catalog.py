"""`talkplay catalog stats|add`."""

from __future__ import annotations

from pathlib import Path

import typer

from talkplay.commands._common import JSON_HELP, emit_json, run_argument


def register(app: typer.Typer) -> None:
    sub = typer.Typer(help="Inspect and extend a run's catalog.", no_args_is_help=True)
    app.add_typer(sub, name="catalog")

    @sub.command("stats")
    def _stats(
        run: Path = run_argument(),
        sample_render: int = typer.Option(0, "--sample-render",
                                          help="Render this many random works to measure audio coverage."),
        plot: bool = typer.Option(True, "--plot/--no-plot", help="Save run/catalog_stats.png."),
        as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
    ) -> None:
        """Counts and per-modality coverage of a run's catalog, with a coverage plot."""
        from talkplay.run import Run
        from talkplay.sources.stats import StatsConfig, catalog_stats

        stats = catalog_stats(Run(run), StatsConfig(plot=plot, sample_render=sample_render))
        print_stats(stats)
        if as_json:
            emit_json(stats)

    @sub.command("add")
    def _add(
        run: Path = run_argument(),
        file: str = typer.Argument(..., help="JSONL, CSV/TSV or Parquet file of tracks (or, with --source, "
                                             "a file that importer reads)."),
        skip_invalid: bool = typer.Option(False, "--skip-invalid", help="Skip bad rows and summarise them."),
        map_: list[str] = typer.Option([], "--map", help="FIELD=COLUMN, e.g. title=song_name."),
        config: str | None = typer.Option(None, "--config", help="Mapping config (YAML/JSON)."),
        source: str = typer.Option("table", "--source",
                                   help="Importer of FILE: table, or e.g. cpcd / talkplaydata2 to add the "
                                        "tracks a conversation file describes (not its conversations)."),
        as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
    ) -> None:
        """Add tracks to an existing run; they get music tokens if the run has a tokenizer."""
        from talkplay.commands.importing import print_summary
        from talkplay.run import Run
        from talkplay.sources.stats import AddConfig, add_tracks
        from talkplay.sources.table import parse_map

        info = add_tracks(Run(run), AddConfig(file=file, skip_invalid=skip_invalid, map=parse_map(map_),
                                              config=config, source=source))
        if as_json:
            emit_json(info)
        else:
            print_summary(info)
            if info["tokenizer"] is not None:
                typer.echo(f"tokenizer extended: {info['tokenizer']}")


def print_stats(stats: dict) -> None:
    """The coverage table, on stderr so `--json` output stays one object on stdout."""
    from rich.table import Table

    from talkplay.log import stderr_console

    t = Table(title=f"{stats['run']}: {stats['tracks']:,} tracks, {stats['playlists']:,} playlists, "
                    f"{stats['conversations']:,} conversations")
    t.add_column("coverage")
    t.add_column("tracks", justify="right")
    t.add_column("%", justify="right")
    for k, v in stats["coverage"].items():
        t.add_row(k, f"{v:,}", f"{100 * stats['coverage_fraction'][k]:.1f}")
    stderr_console.print(t)
    if "render_sample" in stats:
        rs = stats["render_sample"]
        stderr_console.print(f"audio rendered for {rs['ok']}/{rs['tried']} sampled works "
                             f"({100 * rs['rate']:.0f}%)")
    if "plot" in stats:
        stderr_console.print(f"plot: {stats['plot']}")
