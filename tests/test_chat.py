"""`talkplay recommend` and `talkplay chat` driven as a user would, over the real CLI."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from synth_run import trained_synth_run
from talkplay.serve.api import TrackOut

ENV = {**os.environ, "TALKPLAY_NO_PROGRESS": "1", "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
RAW = re.compile(r"<\|/?music\|>|<[a-z]+_(\d{4}|unk)>")
CARD = re.compile(r"^\s+(\d+)\. (Song \d+) — ", re.M)


@pytest.fixture(scope="session")
def run(tmp_path_factory):
    return trained_synth_run(tmp_path_factory)[0]


def _cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "talkplay.cli", *args], input=stdin, capture_output=True,
                          text=True, env=ENV, timeout=600)


def test_recommend_json(run):
    out = _cli("recommend", str(run.path), "play some polka music", "--k", "5", "--json")
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    ids = [t["id"] for t in res["tracks"]]
    assert len(ids) == 5 and len(set(ids)) == 5
    assert ids[0] == "t2"  # polka is track 2's keyword
    assert all(t["title"] and t["why"] for t in res["tracks"])
    assert res["reply"] and not RAW.search(res["reply"])
    # one shape for a track: the HTTP API's, less the server's audio link
    assert [list(t) for t in res["tracks"]] == [[f for f in TrackOut.model_fields if f != "audio_url"]] * 5
    assert [TrackOut(**t).rank for t in res["tracks"]] == [1, 2, 3, 4, 5]


def test_chat_holds_a_multi_turn_session(run):
    script = "\n".join([
        "play some jazz music", "/like 1", "now some tango", "/reject 2", "switch to polka",
        "/like 9", "more disco now", "/help", "something opera please", "/reset", "i want jazz", "/quit",
        "never read",
    ]) + "\n"
    out = _cli("chat", str(run.path), "--k", "3", stdin=script)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert not RAW.search(text)
    blocks = text.split("started over")
    assert len(blocks) == 2
    before = CARD.findall(blocks[0])
    assert len(before) == 5 * 3
    titles = [t for _, t in before]
    assert len(set(titles)) == len(titles)  # nothing shown twice in one session
    assert titles[0] == "Song 0"  # jazz is track 0's keyword
    assert "liked t0" in text and "rejected" in text and "pick a track between 1 and 3" in text
    assert "commands:" in text
    after = CARD.findall(blocks[1])
    assert [t for _, t in after][0] == "Song 0"  # after /reset jazz may come again
    assert "never read" not in text
