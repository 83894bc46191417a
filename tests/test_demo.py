"""`talkplay demo` end to end on a tiny config: it finishes, a second run skips every stage,
an interrupted run resumes without redoing finished stages, and a changed setting reruns
only what depends on it."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from talkplay import demo
from talkplay.cli import app
from talkplay.demo import STAGES, DemoConfig, run_demo
from talkplay.errors import InputError, TalkPlayError
from talkplay.run import Run


def tiny_config(**over) -> DemoConfig:
    """A few dozen real music21 tracks, a random-init tiny model, a handful of steps."""
    base = dict(
        collections={"bach": 30, "oneills1850": 20},
        audio_limit=0,
        model="tiny",
        tokenize={"k": 8},
        dialogs={"synthesize": 40, "align_reverse": False},
        train={"max_steps": 2, "batch_size": 4, "max_length": 128, "save_every": 1000},
        evaluate={"protocol": "next-track", "systems": ["bm25", "talkplay"], "n_boot": 0, "plots": False},
    )
    base.update(over)
    return DemoConfig(**base)


def artifact_mtimes(run: Run) -> dict[str, int]:
    files = [run.path / "catalog.parquet", *run.embeddings_dir.glob("*.npy"), *run.tokenizer_dir.rglob("*"),
             *run.dialogs_dir.glob("*.jsonl"), *run.model_dir.rglob("*"), *run.eval_dir.rglob("*.json")]
    return {str(p.relative_to(run.path)): p.stat().st_mtime_ns for p in files if p.is_file()}


class Interrupt:
    """Wrap a stage so it does its real work, writes its artifacts, then is interrupted
    before returning (Ctrl-C at the worst moment: output there, record not yet written)."""

    def __init__(self, monkeypatch, name: str) -> None:
        stage = demo.PIPELINE[name]
        real = stage.execute

        def interrupted(run, cfg):
            real(run, cfg)
            raise KeyboardInterrupt

        monkeypatch.setattr(stage, "execute", interrupted)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A tiny demo interrupted in `dialogs`, then resumed to the end."""
    run = Run(tmp_path_factory.mktemp("demo") / "run")
    cfg = tiny_config()
    seen: list[tuple[str, str]] = []
    mp = pytest.MonkeyPatch()
    Interrupt(mp, "dialogs")
    with pytest.raises(KeyboardInterrupt):
        run_demo(run, cfg, on_status=lambda _all, st: seen.append((st.name, st.status)))
    mp.undo()
    first = {"seen": seen, "mtimes": artifact_mtimes(run), "done": sorted(run.stage("demo")["done"])}
    result = run_demo(run, cfg)
    return run, cfg, first, result


def test_interrupted_stage_is_redone_and_finished_ones_are_not(finished_run):
    run, cfg, first, result = finished_run
    assert ("dialogs", "failed") in first["seen"]
    assert first["done"] == ["encode", "import"]  # dialogs wrote files but was never recorded
    statuses = {s["name"]: s["status"] for s in result["stages"]}
    # a content model reads no music codes: no tokenize stage, no tokenizer
    assert statuses == {"import": "skipped", "encode": "skipped", "dialogs": "done",
                        "train": "done", "evaluate": "done"}
    assert not run.tokenizer_dir.exists()
    now = artifact_mtimes(run)
    for name, mtime in first["mtimes"].items():
        if name == "catalog.parquet" or name.startswith("embeddings/"):
            assert now[name] == mtime, f"{name} was rewritten on resume"


def test_finished_demo_has_every_artifact_and_beats_nothing_silently(finished_run):
    run, _, _, result = finished_run
    assert (run.model_dir / "config.json").exists()
    ev = result["evaluation"]
    assert ev is not None and set(ev["systems"]) == {"bm25", "talkplay", "ceiling"}
    assert "hit@10" in ev["systems"]["talkplay"]["all"]["macro"]
    # synthesized dialogs say how many tracks fit each turn: the table shows that ceiling
    assert ev["systems"]["ceiling"]["is_system"] is False
    assert 0 < ev["systems"]["ceiling"]["all"]["macro"]["hit@10"] <= 1
    assert sorted(run.stage("demo")["done"]) == sorted(s for s in STAGES if s != "tokenize")


def test_second_run_skips_everything_via_cli(finished_run):
    run, _, _, _ = finished_run
    before = artifact_mtimes(run)
    # the same DemoConfig as a file, with one field also given as a flag (flags win)
    args = ["demo", "--run", str(run.path), "--config", _config_file(run), "--model", "tiny", "--json",
            "--no-chat"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert {s["status"] for s in out["stages"]} == {"skipped"}
    assert artifact_mtimes(run) == before


def test_changed_training_setting_reruns_only_train_and_evaluate(finished_run, tmp_path):
    run, cfg, _, _ = finished_run
    cfg2 = tiny_config(train={**cfg.train, "max_steps": 3})
    result = run_demo(run, cfg2)
    statuses = [s["status"] for s in result["stages"]]
    assert statuses == ["skipped"] * 3 + ["done", "done"]
    assert run.stage("train")["steps"] == 3


def test_unknown_stage_option_names_the_field(tmp_path):
    with pytest.raises(InputError, match="train.max_stepz"):
        run_demo(Run(tmp_path / "r"), tiny_config(train={"max_stepz": 1}, stop_after="import"))
    with pytest.raises(InputError, match="catalog-limit"):
        DemoConfig(catalog_limit=1)
    bad = tmp_path / "c.json"
    bad.write_text('{"modle": "tiny"}')
    with pytest.raises(InputError, match="modle"):
        DemoConfig.from_file(bad)


def test_demo_refuses_a_catalog_it_did_not_make(tmp_path):
    from talkplay.catalog import Catalog, Track

    Catalog([Track(id="x", title="Mine")]).save(tmp_path)
    with pytest.raises(TalkPlayError, match="did not make"):
        run_demo(Run(tmp_path), tiny_config(stop_after="import"))
    assert Run(tmp_path).load_catalog().ids() == ["x"]


def _config_file(run: Run) -> str:
    path = run.path / "demo-config.json"
    path.write_text(json.dumps({**tiny_config().to_dict(), "model": "not-this-one"}))
    return str(path)


# --- the CPCD demo: `talkplay demo cpcd` ----------------------------------------------------

CPCD_STAGES = ["import", "encode", "dialogs", "train", "evaluate"]


def test_cpcd_demo_via_cli(tmp_path, monkeypatch):
    """`talkplay demo cpcd` on 16 of the shipped conversations: no tokenize stage, metadata
    only, CPCD's own dialogs and protocol, written to runs/demo-cpcd by default."""
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps({
        "catalog_limit": 16,  # conversations, for CPCD
        "model": "tiny",
        "train": {"modalities": "metadata", "max_steps": 2, "batch_size": 4, "max_length": 128,
                  "save_every": 1000},
        "evaluate": {"protocol": "cpcd", "systems": ["bm25", "talkplay"], "n_boot": 0, "plots": False,
                     "replies": 2},
    }))
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, ["demo", "cpcd", "--config", str(config), "--no-chat", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert [(s["name"], s["status"]) for s in out["stages"]] == [(n, "done") for n in CPCD_STAGES]
    run = Run(tmp_path / "runs" / "demo-cpcd")
    assert not run.tokenizer_dir.exists()
    assert run.stage("import")["total"]["conversations"] == 16
    assert run.stage("encode")["config"]["modalities"] == ["metadata"]
    ev = json.loads((run.eval_dir / "cpcd.json").read_text())
    assert ev["protocol"] == "cpcd" and out["evaluation"]["protocol"] == "cpcd"
    assert "hit@10" in ev["systems"]["talkplay"]["all"]["macro"]


def test_presets_check_their_stages():
    cfg = DemoConfig.preset("cpcd")
    assert "tokenize" not in cfg.stages and DemoConfig.preset("music21") == DemoConfig()
    assert DemoConfig.preset("cpcd", stop_after="dialogs").stop_after == "dialogs"
    with pytest.raises(InputError, match="stop_after"):
        DemoConfig.preset("cpcd", stop_after="tokenize")  # a stage this demo does not have
    with pytest.raises(InputError, match="stages"):
        DemoConfig(stages=["train", "import"])
    # tokenize goes with a codes model and only with one: no stage whose output nothing reads
    with pytest.raises(InputError, match="stages"):
        DemoConfig(stages=demo.STAGES)
    with pytest.raises(InputError, match="stages"):
        DemoConfig(train={"track_repr": "codes"})
    assert "tokenize" in DemoConfig(stages=demo.STAGES, train={"track_repr": "codes"}).stages
    with pytest.raises(InputError, match="CATALOG"):
        DemoConfig.preset("spotify")


@pytest.mark.slow
def test_cpcd_demo_real_preset(tmp_path, monkeypatch):
    """The real `talkplay demo cpcd` (all 400 conversations, SmolLM2, 12 minutes of training)."""
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, ["demo", "cpcd", "--no-chat", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert [(s["name"], s["status"]) for s in out["stages"]] == [(n, "done") for n in CPCD_STAGES]
    run = Run(tmp_path / "runs" / "demo-cpcd")
    assert run.stage("import")["total"]["conversations"] == 400
    assert run.stage("train")["config"]["time_budget"] == demo.CPCD_TRAIN_MINUTES
    ev = out["evaluation"]
    assert ev["protocol"] == "cpcd" and "hit@10" in ev["systems"]["talkplay"]["all"]["macro"]
    assert ev["systems"]["talkplay"]["n_replies"] == 20
