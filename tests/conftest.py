"""Shared fixtures. Tests that need ../shared/data skip with a reason when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TALKPLAY_NO_PROGRESS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("TALKPLAY_SHARED_DATA", REPO.parent / "shared" / "data"))
CPCD_FILE = SHARED_DATA / "cpcd" / "cpcd_v1.dialogs.dev.train.jsonl"
TPD2_DIR = SHARED_DATA / "talkplaydata2"


@pytest.fixture
def cpcd_file() -> Path:
    if not CPCD_FILE.exists():
        pytest.skip(f"CPCD data not found at {CPCD_FILE} (set TALKPLAY_SHARED_DATA)")
    return CPCD_FILE


@pytest.fixture
def tpd2_dir() -> Path:
    if not TPD2_DIR.exists():
        pytest.skip(f"TalkPlayData 2 sessions not found at {TPD2_DIR} (set TALKPLAY_SHARED_DATA)")
    return TPD2_DIR


# --- Serving: a tiny trained run and real server processes ------------------------------

HOSTILE_TITLE = "<img src=x onerror=alert(1)>"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


SERVED_STYLES = [("piano", "calm"), ("rock", "loud"), ("jazz", "smooth"), ("folk", "acoustic")]


@pytest.fixture(scope="session")
def served_run(tmp_path_factory) -> Path:
    """A tiny trained run of 16 tracks: one titled with markup, some with a WAV file, one
    with a score to render; real encoders, tokenizer, dialogs and a few training steps."""
    import numpy as np
    import soundfile as sf

    from talkplay.catalog import Catalog, Track
    from talkplay.dialogs import DialogsConfig, build_dialogs
    from talkplay.encoders import EncodeConfig, encode_run
    from talkplay.run import Run
    from talkplay.tokenizer import TokenizerConfig, tokenize_run
    from talkplay.train import TrainConfig, train_run

    run = Run(tmp_path_factory.mktemp("served") / "run")
    run.path.mkdir(parents=True)
    wav = run.path.parent / "tone.wav"
    t = np.arange(16000 * 2) / 16000
    sf.write(wav, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 16000)
    tracks = [Track(id="t0", title=HOSTILE_TITLE, artists=["<script>alert(2)</script>"], album="<b>A</b>",
                    tags=["piano", "calm"], audio=str(wav)),
              Track(id="t1", title="Chorale", artists=["J. S. Bach"], album="Chorales",
                    tags=["choral", "calm"], audio="score:bach/bwv66.6.mxl")]
    for i in range(2, 16):
        genre, mood = SERVED_STYLES[i % len(SERVED_STYLES)]
        tracks.append(Track(id=f"t{i}", title=f"Song {i}", artists=[f"Artist {i % 5}"],
                            album=f"Album {i % 3}", tags=[genre, mood], audio=str(wav) if i % 2 else None))
    Catalog(tracks).save(run.path)
    encode_run(run, EncodeConfig(modalities=("metadata", "tags")))
    tokenize_run(run, TokenizerConfig(k=4))
    build_dialogs(run, DialogsConfig(synthesize=32))
    train_run(run, TrainConfig(base_model="tiny", max_steps=2, batch_size=4, max_length=256))
    return run.path


@pytest.fixture(scope="session")
def live_server_factory(tmp_path_factory):
    """``with live_server_factory(run_dir, "--max-queue", "4") as url:`` runs `talkplay serve`
    in a subprocess on a free loopback port until the block ends."""
    import contextlib
    import subprocess
    import sys
    import time

    import httpx

    @contextlib.contextmanager
    def start(run_dir: Path, *args: str, timeout: float = 240.0):
        port = _free_port()
        log = tmp_path_factory.mktemp("server") / "server.log"
        cmd = [sys.executable, "-m", "talkplay.cli", "serve", str(run_dir), "--port", str(port), *args]
        with open(log, "wb") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + timeout
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
                try:
                    if httpx.get(url + "/health", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"server did not come up in {timeout} s:\n{log.read_text()[-3000:]}")
                time.sleep(0.25)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    return start


@pytest.fixture(scope="session")
def served_url(served_run, live_server_factory):
    """One `talkplay serve` of ``served_run`` shared by the serving and browser tests: one
    worker, batches of 4 and a queue of 4 (so overload is reachable), 500-character messages,
    short replies."""
    with live_server_factory(served_run, "--max-concurrency", "1", "--max-queue", "4", "--batch-size", "4",
                             "--max-message-chars", "500", "--reply-tokens", "4") as url:
        yield url
