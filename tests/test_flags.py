"""Every representation-specific flag acts on its representation or is refused on the other.

``talkplay train`` refuses a codes-only flag on a content run (and a content-only one on a
codes run) before it reads anything, naming the flag and why; ``--method beam`` is refused
by a content engine, which scores every track exactly.
"""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from talkplay.cli import app
from talkplay.engine.content import refuse_codes_options
from talkplay.engine.protocol import EngineConfig
from talkplay.errors import InputError, TalkPlayError
from talkplay.train_config import TrainConfig, only_for

# each flag as given on the command line: codes-only first, then content-only
CODES_FLAGS = [["--grad-accum", "2"], ["--bf16"], ["--gradient-checkpointing"], ["--all-logits"]]
CONTENT_FLAGS = [["--exit-layer", "0"], ["--inject-gain", "2"], ["--text-weight", "0.5"],
                 ["--text-every", "2"], ["--modalities", "metadata"], ["--modality-dropout", "0.1"],
                 ["--no-words"], ["--net-lr", "0.5"], ["--words-gain", "0.5"], ["--context", "0"],
                 ["--current", "0"], ["--no-current-gate"], ["--no-words-gate"], ["--negatives", "catalog"],
                 ["--goal-weight", "0"], ["--disliked-weight", "2"], ["--every-turn"], ["--own-words"],
                 ["--no-word-weights"], ["--no-cards"], ["--cards-latest"]]


def test_every_flag_of_the_table_is_driven():
    assert {f[0] for f in CODES_FLAGS} == {flag for flag, _ in only_for("codes").values()}
    assert {f[0] for f in CONTENT_FLAGS} == {flag for flag, _ in only_for("content").values()}


@pytest.mark.parametrize(("repr_", "other", "flag"), [("content", "codes", f) for f in CODES_FLAGS]
                         + [("codes", "content", f) for f in CONTENT_FLAGS], ids=lambda x: str(x))
def test_train_refuses_a_flag_of_the_other_representation(tmp_path, repr_, other, flag):
    out = CliRunner().invoke(app, ["train", str(tmp_path / "run"), "--track-repr", repr_, *flag])
    assert isinstance(out.exception, TalkPlayError), out.output
    msg = str(out.exception)
    assert msg.startswith(flag[0]) and f"--track-repr {other} only" in msg and "(" in msg
    assert not (tmp_path / "run").exists()  # refused before anything was read or written


def test_the_defaults_and_a_flag_of_the_runs_own_representation_pass():
    TrainConfig().validate()
    TrainConfig(track_repr="codes").validate()
    TrainConfig(track_repr="codes", bf16=True, grad_accum=2, supervised_logits=False).validate()
    TrainConfig(exit_layer=None, cards=False, context=0.0).validate()


def test_a_content_engine_refuses_beam_search():
    refuse_codes_options(EngineConfig())
    refuse_codes_options(EngineConfig(method="exact"))
    with pytest.raises(InputError, match="--method beam applies to codes models only"):
        refuse_codes_options(EngineConfig(method="beam"))
