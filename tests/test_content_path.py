"""The content model's path stands on its own: nothing on it imports the codes modules.

The walk is static and follows every import statement, those inside functions too, so a
lazy import of the codes path from the content side fails here as well as an eager one.
``talkplay.train`` (the dispatcher) and ``Engine.load`` name both representations and are
not on either path; their runtime behaviour is checked in ``test_fresh_interpreter``.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import talkplay

PACKAGE_DIR = Path(talkplay.__file__).parent
# the codes path (``talkplay tokenize``'s command registers with the CLI and imports it lazily)
CODES = ("talkplay.codes", "talkplay.tokenizer")
CONTENT_ROOTS = ("talkplay.engine", "talkplay.engine.content", "talkplay.engine.chat",
                 "talkplay.engine.recommender", "talkplay.tracks.train", "talkplay.tracks.data",
                 "talkplay.tracks.model")


def module_file(name: str) -> Path | None:
    base = PACKAGE_DIR.parent.joinpath(*name.split("."))
    for path in (base / "__init__.py", base.with_suffix(".py")):
        if path.exists():
            return path
    return None


def imports_of(name: str) -> set[str]:
    """The talkplay modules ``name``'s source imports anywhere in its body."""
    path = module_file(name)
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level:  # relative: from the package upward
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join([*up, mod]).strip(".")
            out.add(mod)
            out |= {f"{mod}.{a.name}" for a in node.names if module_file(f"{mod}.{a.name}")}
    return {m for m in out if m.split(".")[0] == "talkplay" and module_file(m)}


def is_codes(name: str) -> bool:
    return any(name == c or name.startswith(c + ".") for c in CODES)


def test_no_module_on_the_content_path_imports_the_codes_path():
    seen: dict[str, str] = {}  # module -> who imported it
    todo = [(r, "(root)") for r in CONTENT_ROOTS]
    while todo:
        name, by = todo.pop()
        if name in seen:
            continue
        seen[name] = by
        parts = name.split(".")  # importing a.b.c runs a and a.b first
        todo += [(".".join(parts[:i]), name) for i in range(2, len(parts))]
        todo += [(m, name) for m in imports_of(name)]
    bad = sorted(f"{m} (imported by {seen[m]})" for m in seen if is_codes(m))
    assert not bad, bad
    assert len(seen) > 20  # the walk did follow the imports


def test_the_walk_finds_a_codes_import():
    """The detector itself: the codes engine's own imports are codes modules."""
    assert any(is_codes(m) for m in imports_of("talkplay.codes.engine") - {"talkplay.codes"})


def test_fresh_interpreter():
    """Importing the CLI, the engine, the trainer, the server, `catalog add`, evaluation and the
    demo loads no codes module (they import it only for a run that has codes)."""
    code = ("import sys, json, talkplay.cli, talkplay.engine, talkplay.train, talkplay.serve.app, "
            "talkplay.sources.stats, talkplay.evaluate.runner, talkplay.demo\n"
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith('talkplay.'))))")
    env = {**os.environ,
           "PYTHONPATH": os.pathsep.join([str(PACKAGE_DIR.parent), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    loaded = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "talkplay.engine.content" in loaded
    assert not [m for m in loaded if is_codes(m)]
