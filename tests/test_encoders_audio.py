"""musicnn port (checkpoint reader, reference outputs) and audio loading, incl. bad files."""

from __future__ import annotations

import importlib.util
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from talkplay.catalog import Track
from talkplay.encoders.audio import AudioEncoder, AudioError, load_audio
from talkplay.encoders.musicnn import (
    CheckpointError,
    Musicnn,
    _varint,
    checkpoint_prefix,
    labels_for,
    load_musicnn,
    log_mel,
    patches,
    read_checkpoint,
)

DATA = Path(__file__).parent / "data"
SR = 16000


def _reference_module():
    spec = importlib.util.spec_from_file_location("make_ref", DATA / "make_musicnn_reference.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _tone(seconds: float = 4.0, freq: float = 440.0, sr: int = SR, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_varint_decodes_protobuf_examples():
    assert _varint(b"\x01", 0) == (1, 1)
    assert _varint(b"\xac\x02", 0) == (300, 2)
    with pytest.raises(CheckpointError):
        _varint(b"\x80", 0)


def test_checkpoint_reader_loads_every_network_variable():
    variables = read_checkpoint(checkpoint_prefix("MSD_musicnn"))
    assert variables["conv2d/kernel"].shape == (7, 38, 1, 204)
    assert variables["dense_1/kernel"].shape == (200, 50)
    net = Musicnn()
    report = net.load_tf(variables)
    assert report["unused"] == []  # nothing in the checkpoint is left out (Adam slots aside)
    # 11 batch norms x 4 + 8 convolutions x 2 + 2 dense layers x 2
    assert len(report["loaded"]) == len(set(report["loaded"])) == 64
    # the moving statistics really arrived (defaults are mean 0, variance 1)
    assert not torch.allclose(net.bn_dense.var, torch.ones_like(net.bn_dense.var))
    missing = dict(variables)
    del missing["batch_normalization_9/moving_variance"]
    with pytest.raises(CheckpointError, match="moving_variance"):
        Musicnn().load_tf(missing)


def test_checkpoint_reader_rejects_damaged_files(tmp_path):
    src = Path(checkpoint_prefix("MSD_musicnn"))
    dst = tmp_path / "ckpt"
    dst.mkdir()
    shutil.copy(src / ".index", dst / ".index")
    data = (src / ".data-00000-of-00001").read_bytes()
    (dst / ".data-00000-of-00001").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="size"):
        read_checkpoint(str(dst) + "/")
    (dst / ".index").write_bytes(b"not a table at all, just text" * 3)
    with pytest.raises(CheckpointError, match="not a TensorFlow checkpoint"):
        read_checkpoint(str(dst) + "/")


def test_port_matches_tensorflow_reference():
    """Reference logits come from musicnn's own TensorFlow graph on the stored input."""
    ref = np.load(DATA / "musicnn_reference.npz")
    net = load_musicnn("MSD_musicnn")
    with torch.no_grad():
        logits, pen = net(torch.from_numpy(ref["x"].astype(np.float32)))
    np.testing.assert_allclose(logits.numpy(), ref["tf_logits"], atol=1e-4)
    np.testing.assert_allclose(pen.numpy(), ref["tf_penultimate"], atol=1e-4)
    np.testing.assert_allclose(logits.numpy(), ref["torch_logits"], atol=1e-4)


def test_log_mel_front_end_is_stable():
    ref = np.load(DATA / "musicnn_reference.npz")
    sig = _reference_module().signals()
    x = np.concatenate([patches(log_mel(s))[:1] for s in sig.values()])
    assert x.shape == (3, 187, 96)
    np.testing.assert_allclose(x, ref["x"].astype(np.float32), atol=2e-2)


def test_tags_are_plausible_for_tone_and_noise():
    enc = AudioEncoder()
    rng = np.random.default_rng(0)
    emb, probs = enc.encode_arrays([_tone(6.0), (0.1 * rng.standard_normal(6 * SR)).astype(np.float32)])
    assert emb.shape == (2, 200) and probs.shape == (2, 50)
    assert np.all((probs > 0) & (probs < 1))
    tone_top = [t for t, _ in enc.top_tags(probs[0], 3)]
    noise_top = [t for t, _ in enc.top_tags(probs[1], 3)]
    assert tone_top[0] != noise_top[0]
    assert np.abs(probs[0] - probs[1]).sum() > 0.5
    assert "electronic" in noise_top  # white noise sounds electronic to an MSD tagger
    assert labels_for("MSD_musicnn")[0] == "rock"


def test_patches_repeat_pad_short_clips():
    spec = np.arange(50 * 96, dtype=np.float32).reshape(50, 96)
    p = patches(spec)
    assert p.shape == (1, 187, 96)
    np.testing.assert_array_equal(p[0, 50:100], spec)


# --- loading audio files ----------------------------------------------------------------


def test_load_audio_resamples_and_downmixes(tmp_path):
    stereo = np.stack([_tone(2.0, sr=44100), _tone(2.0, sr=44100)], axis=1)
    sf.write(tmp_path / "a.flac", stereo, 44100)
    wave = load_audio(tmp_path / "a.flac")
    assert wave.dtype == np.float32 and abs(len(wave) - 2 * SR) < 50
    sf.write(tmp_path / "b.ogg", _tone(2.0, sr=8000), 8000)
    assert abs(len(load_audio(tmp_path / "b.ogg")) - 2 * SR) < 100
    sf.write(tmp_path / "long.wav", _tone(10.0), SR)
    assert len(load_audio(tmp_path / "long.wav", max_seconds=3)) == 3 * SR


@pytest.fixture
def bad_files(tmp_path) -> dict[str, Path]:
    files = {}
    for ext in ("wav", "ogg", "flac"):
        good = tmp_path / f"good.{ext}"
        sf.write(good, _tone(4.0), SR)
        cut = tmp_path / f"truncated.{ext}"
        cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
        files[f"truncated_{ext}"] = cut
    sf.write(tmp_path / "silence.wav", np.zeros(4 * SR, np.float32), SR)
    files["silence"] = tmp_path / "silence.wav"
    sf.write(tmp_path / "low_rate.wav", _tone(4.0, freq=100, sr=1000), 1000)
    files["wrong_rate"] = tmp_path / "low_rate.wav"
    (tmp_path / "text.ogg").write_text("this is a text file, not audio\n")
    files["text_as_ogg"] = tmp_path / "text.ogg"
    sf.write(tmp_path / "blip.wav", _tone(0.1), SR)
    files["too_short"] = tmp_path / "blip.wav"
    (tmp_path / "empty.wav").write_bytes(b"")
    files["empty"] = tmp_path / "empty.wav"
    files["missing"] = tmp_path / "nowhere.wav"
    return files


EXPECTED = {"truncated_wav": "truncated", "truncated_ogg": "truncated", "truncated_flac": "truncated|corrupt",
            "silence": "silent", "wrong_rate": "sample rate", "text_as_ogg": "not a readable audio",
            "too_short": "long", "empty": "empty", "missing": "not found"}


def test_each_bad_file_gets_a_reason(bad_files):
    for name, path in bad_files.items():
        with pytest.raises(AudioError, match=EXPECTED[name]):
            load_audio(path)


def test_bad_audio_is_masked_with_a_warning_never_a_crash(bad_files, tmp_path, caplog):
    sf.write(tmp_path / "fine.wav", _tone(4.0), SR)
    tracks = [Track(id=name, title=name, audio=str(p)) for name, p in bad_files.items()]
    tracks.insert(3, Track(id="fine", title="fine", audio=str(tmp_path / "fine.wav")))
    tracks.append(Track(id="remote", title="remote", audio="https://example.org/x.ogg"))
    with caplog.at_level(logging.WARNING, logger="talkplay"):
        emb, probs, mask, stats = AudioEncoder().encode_tracks(tracks, batch_size=4)
    assert mask.tolist() == [t.id == "fine" for t in tracks]
    assert np.all(emb[~mask] == 0) and np.any(emb[mask] != 0)
    assert abs(stats["audio_seconds"] - 4.0) < 1e-6 and stats["failed"] == len(tracks) - 1
    warned = {r.getMessage().split("track ")[1].split(":")[0] for r in caplog.records}
    assert warned == {t.id for t in tracks} - {"fine"}


def test_score_works_are_rendered_once_and_encoded(tmp_path):
    pytest.importorskip("talkplay.audio_render")
    tracks = [Track(id="bwv66", title="Chorale", audio="score:bach/bwv66.6.mxl"),
              Track(id="nope", title="Missing score", audio="score:nowhere/none.abc")]
    enc = AudioEncoder(max_seconds=10)
    emb, probs, mask, _ = enc.encode_tracks(tracks, cache_dir=tmp_path)
    assert mask.tolist() == [True, False]
    wavs = list((tmp_path / "audio").glob("*.wav"))
    assert len(wavs) == 1
    stamp = wavs[0].stat().st_mtime_ns
    emb2, _, _, _ = enc.encode_tracks(tracks[:1], cache_dir=tmp_path)
    assert wavs[0].stat().st_mtime_ns == stamp  # the rendering is cached
    np.testing.assert_allclose(emb2[0], emb[0], atol=1e-5)
