"""Rendering audio on demand: score -> MIDI -> WAV, local files, caching, failures."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from talkplay.audio_render import AudioRenderError, cache_path, is_renderable, render_audio
from talkplay.catalog import Track

DEMO_WORKS = [  # three demo-catalog works of different formats: ABC, MusicXML, Humdrum
    ("m21:essenFolksong/kinder0.abc#50", "score:essenFolksong/kinder0.abc#50"),
    ("m21:bach/bwv101.7.mxl", "score:bach/bwv101.7.mxl"),
    ("m21:oneills1850/1556-1624.abc#1569", "score:oneills1850/1556-1624.abc#1569"),
]


@pytest.mark.parametrize("tid, ref", DEMO_WORKS)
def test_render_demo_work_gives_playable_wav(tmp_path, tid, ref):
    track = Track(id=tid, title="x", audio=ref)
    path = render_audio(track, tmp_path, sample_rate=16000, max_seconds=20)
    y, sr = sf.read(path)
    assert sr == 16000 and y.ndim == 1
    assert 2.0 < len(y) / sr <= 20.0 + 1e-6
    assert np.sqrt(np.mean(y ** 2)) > 0.01  # not silent
    # cached: the second call returns the same file without rendering
    mtime = path.stat().st_mtime_ns
    assert render_audio(track, tmp_path, sample_rate=16000, max_seconds=20) == path
    assert path.stat().st_mtime_ns == mtime


def test_length_cap_and_sample_rate(tmp_path):
    track = Track(id="long", title="x", audio="score:oneills1850/1556-1624.abc#1569")  # about 38 s
    path = render_audio(track, tmp_path, sample_rate=8000, max_seconds=5)
    info = sf.info(path)
    assert info.samplerate == 8000 and info.channels == 1 and info.frames == 5 * 8000


def test_local_file_is_resampled_to_mono(tmp_path):
    sr = 44100
    t = np.arange(int(sr * 3.0)) / sr
    stereo = np.stack([0.5 * np.sin(2 * np.pi * 440 * t), 0.3 * np.sin(2 * np.pi * 660 * t)], axis=1)
    src = tmp_path / "tone.wav"
    sf.write(src, stereo, sr)
    track = Track(id="tone", title="Tone", audio=str(src))
    assert is_renderable(track)
    y, out_sr = sf.read(render_audio(track, tmp_path / "cache", sample_rate=16000, max_seconds=2))
    assert out_sr == 16000 and y.ndim == 1 and len(y) == 32000 and np.abs(y).max() > 0.5


def test_failures_raise_with_reason_and_are_remembered(tmp_path):
    with pytest.raises(AudioRenderError, match="no audio"):
        render_audio(Track(id="a", title="x"), tmp_path)
    with pytest.raises(AudioRenderError, match="does not exist"):
        render_audio(Track(id="b", title="x", audio=str(tmp_path / "gone.wav")), tmp_path)
    with pytest.raises(AudioRenderError, match="remote audio"):
        render_audio(Track(id="c", title="x", audio="https://example.org/a.mp3"), tmp_path)
    bad = Track(id="d", title="x", audio="score:no/such/score.abc#3")
    with pytest.raises(AudioRenderError, match="cannot parse"):
        render_audio(bad, tmp_path)
    marker = cache_path(bad, tmp_path, 16000, 30.0).with_suffix(".failed")
    assert marker.exists() and "no/such/score.abc" in marker.read_text()
    with pytest.raises(AudioRenderError, match="cannot parse"):  # answered from the cache
        render_audio(bad, tmp_path)
    assert not is_renderable(Track(id="e", title="x", audio="https://example.org/a.mp3"))
