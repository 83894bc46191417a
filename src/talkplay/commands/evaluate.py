"""`talkplay eval RUN [--protocol cpcd|next-track] [--systems bm25,dense,...] [--name NAME] [--json]`."""

from __future__ import annotations

from pathlib import Path

import typer

from talkplay.commands._common import JSON_HELP, emit_json, run_argument


def register(app: typer.Typer) -> None:
    @app.command("eval")
    def _cmd(
        run: Path = run_argument(),
        protocol: str = typer.Option("cpcd", "--protocol", help="cpcd (multi-turn, official) or next-track."),
        systems: str = typer.Option(None, "--systems",
                                    help="Comma-separated: random, popularity, bm25, bm25-all, dense, "
                                         "cooccur, hybrid, talkplay. Default: all baselines, plus talkplay "
                                         "when RUN/model exists."),
        split: str = typer.Option("test", "--split", help="Held-out split to score: test or valid."),
        conversations: Path = typer.Option(None, "--conversations",
                                           help="Score a new test file (CPCD, TalkPlayData 2 or own JSONL) "
                                                "instead of the run's split; its tracks must be in the "
                                                "catalog (`talkplay catalog add`)."),
        fmt: str = typer.Option(None, "--format", help="Format of --conversations (cpcd, talkplaydata2, "
                                                        "own); detected by default."),
        pool: bool = typer.Option(False, "--pool",
                                  help="next-track: rank only each session's candidate pool."),
        predictions_out: Path = typer.Option(None, "--predictions-out",
                                             help="Write per-turn rankings in CPCD's JSONL format here."),
        limit: int = typer.Option(None, "--limit", help="Score only the first N conversations."),
        n_boot: int = typer.Option(1000, "--n-boot", help="Bootstrap resamples for the 95% CIs."),
        seed: int = typer.Option(0, "--seed", help="Seed for random baselines and the bootstrap."),
        leak_probe: bool = typer.Option(False, "--leak-probe",
                                        help="Add the reference row that ranks test-only tracks first."),
        replies: int = typer.Option(60, "--replies",
                                    help="TalkPlay also answers the last scored turn of up to N "
                                         "conversations; replies are scored for faithfulness, loops, "
                                         "cut-offs and fluency (0: none)."),
        follow_ups: bool = typer.Option(True, "--follow-ups/--no-follow-ups",
                                        help="The follow-up probe: every system after generic chit-chat "
                                             "('thank you!', 'more please'), its echo rate and ranking."),
        no_plots: bool = typer.Option(False, "--no-plots", help="Skip the PNG plots."),
        name: str = typer.Option(None, "--name",
                                 help="Report name: writes RUN/eval/NAME.{json,md,png}. Default: the "
                                      "protocol (plus the --conversations file's name)."),
        as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
    ) -> None:
        """Score baselines and TalkPlay side by side on held-out conversations (the run is not changed)."""
        from talkplay.evaluate import EvalConfig, evaluate_run
        from talkplay.evaluate.report import rich_reply_table, rich_slices_tables, rich_table
        from talkplay.run import Run

        cfg = EvalConfig(
            protocol=protocol,
            systems=[s.strip() for s in systems.split(",") if s.strip()] if systems else None,
            split=split, conversations=conversations, conversations_format=fmt, pool=pool,
            predictions_out=predictions_out, limit=limit, n_boot=n_boot, seed=seed,
            leak_probe=leak_probe, plots=not no_plots, name=name, replies=replies, follow_ups=follow_ups,
        )
        result = evaluate_run(Run(run), cfg)
        if as_json:
            emit_json(result)
            return
        import sys

        from rich.console import Console

        # Piped output has no width to fit; keep the side-by-side table on one line per row.
        console = Console(width=None if sys.stdout.isatty() else 200)
        console.print(rich_table(result))
        if any(s["cold"]["n_turns"] for s in result["systems"].values()):
            console.print(rich_table(result, part="cold"))
        for table in rich_slices_tables(result):
            console.print(table)
        replies_table = rich_reply_table(result)
        if replies_table is not None:
            console.print(replies_table)
        for key, path in result["files"].items():
            console.print(f"[dim]{key}: {path}[/]", highlight=False)
