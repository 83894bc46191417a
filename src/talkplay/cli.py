"""The ``talkplay`` command. Subcommands live in ``talkplay.commands``, one module each,
and are registered here, in one place, by ``COMMANDS`` order."""

from __future__ import annotations

import os
import sys

import typer

from talkplay.commands import COMMANDS
from talkplay.errors import TalkPlayError
from talkplay.log import setup_logging, stderr_console

app = typer.Typer(
    name="talkplay",
    help="Conversational music recommendation as token generation in one language model.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

for _module in COMMANDS:
    _module.register(app)


@app.callback()
def _root(verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging.")) -> None:
    setup_logging("DEBUG" if verbose else os.environ.get("TALKPLAY_LOG", "INFO"))


def main() -> None:
    """Entry point: user-facing errors print one clear line and exit 2, not a traceback."""
    try:
        app(standalone_mode=False)
    except TalkPlayError as e:
        stderr_console.print(f"[bold red]error:[/] {e}", markup=True, highlight=False, soft_wrap=True)
        sys.exit(2)
    except (typer.Exit, SystemExit) as e:
        code = getattr(e, "exit_code", getattr(e, "code", 0))
        sys.exit(code)
    except typer.Abort:
        stderr_console.print("aborted")
        sys.exit(130)
    except KeyboardInterrupt:
        stderr_console.print("interrupted; finished stages are kept, re-run to resume")
        sys.exit(130)
    except Exception as e:
        # usage errors (unknown option, missing argument): click's, or the copy of click
        # that newer typer vendors, whose classes are not click's; both have show()
        if callable(getattr(e, "show", None)) and isinstance(getattr(e, "exit_code", None), int):
            e.show()
            sys.exit(e.exit_code)
        raise


if __name__ == "__main__":
    main()
