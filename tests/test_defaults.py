"""Defaults are declared once: each command's flag defaults (what `--help` shows) are its config
dataclass's, and the README states the same ones.

README convention, checked here: in a usage line, ``[--flag VALUE]`` with a literal VALUE
shows that flag's default; UPPERCASE words are placeholders and ``a|b`` lists choices.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from talkplay.cli import app
from talkplay.demo import DemoConfig
from talkplay.dialogs.build import AUTO_MAX, DialogsConfig
from talkplay.encoders import EncodeConfig
from talkplay.engine import EngineConfig
from talkplay.engine.chat import RecommendConfig, chat_loop
from talkplay.evaluate import EvalConfig
from talkplay.serve.api import ServeConfig
from talkplay.sources import ImportConfig
from talkplay.sources.stats import AddConfig, StatsConfig
from talkplay.tokenizer import TokenizerConfig
from talkplay.train_config import TrainConfig

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
NOT = object()  # a flag that is no config field (output format, arguments, display choices)

# command -> (config class, {flag parameter: config field, "!field" when the flag negates it,
# or NOT}); parameters named like a field map to it
COMMANDS: dict[tuple[str, ...], tuple[type, dict[str, Any]]] = {
    ("import",): (ImportConfig, {"out": NOT, "map_": NOT, "config": NOT, "tracks": NOT,
                                 "collections": NOT, "limit": NOT}),  # importer options, all unset
    ("catalog", "stats"): (StatsConfig, {}),
    ("catalog", "add"): (AddConfig, {"map_": "map", "config": "config"}),
    ("encode",): (EncodeConfig, {}),
    ("tokenize",): (TokenizerConfig, {}),
    ("dialogs",): (DialogsConfig, {"no_align": "!align", "no_search": "!search",
                                   "no_imported": "!include_imported", "show_mask": NOT, "split": NOT,
                                   "index": NOT, "base_model": NOT, "track_repr": NOT}),
    ("train",): (TrainConfig, {}),
    ("recommend",): (RecommendConfig, {}),
    ("chat",): (EngineConfig, {"k": NOT}),  # checked against chat_loop below
    ("serve",): (ServeConfig, {}),
    ("eval",): (EvalConfig, {"fmt": "conversations_format", "no_plots": "!plots"}),
    # CATALOG picks a preset (DemoConfig.preset), not one field
    ("demo",): (DemoConfig, {"run": NOT, "serve": NOT, "no_chat": NOT, "port": NOT, "config": NOT,
                             "catalog": NOT}),
}
ALWAYS_NOT = {"run", "as_json", "source", "path", "file", "query", "force"}  # force: an action, not a setting


def command(*path: str) -> Any:
    cmd = typer.main.get_command(app)
    for p in path:
        cmd = cmd.commands[p]
    return cmd


def unset(value: Any) -> bool:
    # how a command line spells "not set" for an optional setting
    return value in (None, 0, "", (), [])


@pytest.mark.parametrize("path", list(COMMANDS), ids=" ".join)
def test_flag_defaults_are_the_config_defaults(path):
    cls, mapping = COMMANDS[path]
    fields = {f.name: f for f in dataclasses.fields(cls)}
    instance = cls(**{n: "x" for n, f in fields.items()
                      if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING})
    checked = []
    for p in command(*path).params:
        target = mapping.get(p.name, p.name)
        if target is NOT or p.name in ALWAYS_NOT:
            continue
        negated = isinstance(target, str) and target.startswith("!")
        name = target.lstrip("!")
        assert name in fields, f"`{' '.join(path)}` --{p.name} is no field of {cls.__name__}"
        want = getattr(instance, name)
        if negated:
            assert p.default is (not want), f"--{p.name}: {p.default!r}, {cls.__name__}.{name}={want!r}"
        elif path == ("demo",):  # the demo passes only flags that were given
            assert p.default is None, f"--{p.name}: {p.default!r}; DemoConfig keeps its own default"
        elif name == "modalities" and cls is EncodeConfig:  # none given: every modality
            assert p.default is None and want == EncodeConfig().modalities
        elif want in (None, {}):
            assert unset(p.default), f"--{p.name}: {p.default!r}, {cls.__name__}.{name} is {want!r}"
        else:
            assert p.default == want, f"--{p.name}: {p.default!r}, {cls.__name__}.{name}={want!r}"
        checked.append(p.name)
    assert checked, "nothing compared"


def test_chat_answers_as_many_tracks_as_chat_loop_does():
    k = next(p for p in command("chat").params if p.name == "k")
    assert k.default == inspect.signature(chat_loop).parameters["k"].default


def test_help_shows_the_config_defaults():
    text = CliRunner().invoke(app, ["tokenize", "--help"], env={"COLUMNS": "200"}).output
    assert f"[default: {TokenizerConfig().k}]" in text


def _flag_values_in_readme() -> list[tuple[str, str, str]]:
    """(command, flag, value) for every ``[--flag value]`` in the README's usage lines: a code
    line ``    talkplay CMD ...`` and the deeper-indented lines that continue it."""
    out = []
    cmd = None
    for line in README.splitlines():
        m = re.match(r" {4}talkplay ([a-z]+)", line)
        if m:
            cmd = m.group(1)
        elif not re.match(r" {5,}\[", line):
            cmd = None
        if cmd is None:
            continue
        for flag, value in re.findall(r"\[--([a-z-]+) ([^\]\s]+)\]", line):
            if not (re.fullmatch(r"[A-Z_]+", value) or "|" in value or "," in value):
                out.append((cmd, flag, value))
    return out


def test_readme_usage_lines_show_the_defaults():
    found = _flag_values_in_readme()
    assert ("train", "lora-rank", "16") in found and ("chat", "k", "3") in found
    for cmd, flag, value in found:
        param = next((p for p in command(cmd).params if f"--{flag}" in p.opts), None)
        assert param is not None, f"README shows `talkplay {cmd} --{flag}`, which does not exist"
        default = param.default
        shown = type(default)(float(value)) if isinstance(default, (int, float)) else value
        assert shown == default, f"README: `talkplay {cmd} [--{flag} {value}]`; the default is {default!r}"


def test_readme_prose_states_the_defaults():
    t = TrainConfig()
    recipe = re.search(r"With no flags it trains the CPU recipe below: .*?minutes\.", README, re.S).group(0)
    recipe = " ".join(recipe.split())
    assert f"(`{t.base_model}`" in recipe
    assert t.keep_layers is None and "all 30 layers" in recipe
    assert f"the track head reading layer {t.exit_layer}" in recipe
    assert ("cards" in recipe) == t.cards
    assert f"LoRA r={t.lora_rank}" in recipe and t.lora
    assert f"at most {t.time_budget:g} minutes" in recipe
    assert "content-grounded tracks" in recipe and t.track_repr == "content"
    assert "`--track-repr content`, the default" in README
    assert f"at most {AUTO_MAX:,}" in " ".join(README.split())
