"""Helpers shared by the subcommand modules: JSON output and the run argument."""

from __future__ import annotations

import json
import sys
from typing import Any

import typer

JSON_HELP = "Print one JSON object on stdout (logs and progress go to stderr)."


def emit_json(obj: Any) -> None:
    """Write ``obj`` as one JSON object on stdout."""
    sys.stdout.write(json.dumps(obj, ensure_ascii=False, default=str) + "\n")
    sys.stdout.flush()


def run_argument() -> Any:
    return typer.Argument(..., help="Run directory.", file_okay=False)
