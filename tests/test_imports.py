"""Every module of the talkplay package imports on its own, first, in a fresh interpreter.

An import cycle only shows when the modules involved are entered in an unlucky order, so
each module is imported alone with no other talkplay module loaded. One fresh interpreter
loads the third-party libraries once, forgets every talkplay module, then forks one child
per module (a plain subprocess per module where there is no fork): about ten seconds in
all instead of a second per module.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import talkplay

PACKAGE_DIR = Path(talkplay.__file__).parent
# optional extras: a module may fail to import only because one of these is not installed
OPTIONAL = ("vllm", "faiss")

DRIVER = r"""
import importlib, json, os, subprocess, sys, traceback

mods = sys.argv[1:]

def attempt(name):
    try:
        importlib.import_module(name)
        return {"ok": True}
    except ModuleNotFoundError as e:
        return {"ok": False, "missing": e.name, "error": traceback.format_exc()}
    except BaseException:
        return {"ok": False, "error": traceback.format_exc()}

results = {}
if hasattr(os, "fork"):
    for m in mods:  # load the third-party libraries once; failures are reported below
        attempt(m)
    for name in [n for n in sys.modules if n == "talkplay" or n.startswith("talkplay.")]:
        del sys.modules[name]
    for m in mods:
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            os.write(w, json.dumps(attempt(m)).encode())
            os._exit(0)
        os.close(w)
        with os.fdopen(r, "rb") as f:
            data = f.read()
        os.waitpid(pid, 0)
        results[m] = json.loads(data) if data else {"ok": False, "error": "the child process died"}
else:
    for m in mods:
        p = subprocess.run([sys.executable, "-c", f"import {m}"], capture_output=True, text=True)
        results[m] = {"ok": p.returncode == 0, "error": p.stderr}
print(json.dumps(results))
"""


def talkplay_modules() -> list[str]:
    """Every module under the package folder, by file (nothing is imported to list them)."""
    out = []
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
        out.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return out


MODULES = talkplay_modules()


@pytest.fixture(scope="module")
def results() -> dict[str, dict]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PACKAGE_DIR.parent),
                                                         os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", DRIVER, *MODULES], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_every_module_is_listed():
    assert {"talkplay", "talkplay.cli", "talkplay.splits", "talkplay.engine.protocol",
            "talkplay.codes.engine"} <= set(MODULES)
    assert len(MODULES) > 60


@pytest.mark.parametrize("module", MODULES)
def test_module_imports_alone(results, module):
    res = results[module]
    if res["ok"]:
        return
    root = (res.get("missing") or "").split(".")[0]
    if root in OPTIONAL and importlib.util.find_spec(root) is None:
        pytest.skip(f"{module} needs the optional package {root}, which is not installed")
    pytest.fail(f"`import {module}` in a fresh interpreter failed:\n{res['error']}")


def test_benchmark_scripts_import_names_that_exist():
    """The scripts under benchmarks/ are run by hand, not by this suite: their talkplay
    imports at least must name modules and attributes that exist."""
    import ast
    import importlib

    scripts = sorted((PACKAGE_DIR.parents[1] / "benchmarks").glob("*.py"))
    if not scripts:
        pytest.skip("no benchmarks/ folder next to this source tree")
    missing = []
    for script in scripts:
        for node in ast.walk(ast.parse(script.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "talkplay":
                if importlib.util.find_spec(node.module) is None:
                    missing.append(f"{script.name}: {node.module}")
                    continue
                module = importlib.import_module(node.module)
                missing += [f"{script.name}: {node.module}.{a.name}" for a in node.names
                            if not hasattr(module, a.name)
                            and importlib.util.find_spec(f"{node.module}.{a.name}") is None]
    assert not missing
