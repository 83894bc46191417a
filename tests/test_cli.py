import re
import subprocess
import sys
from pathlib import Path

import pytest

from talkplay.cli import app

REPO = Path(__file__).resolve().parents[1]


def test_cli_lists_every_registered_subcommand():
    out = subprocess.run([sys.executable, "-m", "talkplay.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    names = {c.name for c in app.registered_commands} | {g.name for g in app.registered_groups}
    for name in names:
        assert name in out.stdout


def test_readme_commands_exist():
    """Every `talkplay X` the README shows is a registered subcommand."""
    readme = (REPO / "README.md").read_text()
    names = {c.name for c in app.registered_commands} | {g.name for g in app.registered_groups}
    used = set(re.findall(r"^\s*(?:\$ )?talkplay ([a-z]+)", readme, flags=re.M))
    assert used, "README shows no talkplay commands"
    assert used <= names, f"README mentions unknown subcommands: {used - names}"


@pytest.mark.parametrize("args, message", [(["eval", "runs/x", "--bogus"], "No such option: --bogus"),
                                           (["recommend"], "Missing argument")])
def test_usage_errors_are_a_short_message_not_a_traceback(args, message):
    out = subprocess.run([sys.executable, "-m", "talkplay.cli", *args], capture_output=True, text=True)
    assert out.returncode == 2
    assert message in out.stderr and "--help' for help" in out.stderr
    assert "Traceback" not in out.stderr
