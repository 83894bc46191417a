"""The encode stage on a small synthetic catalog: text, audio, co-occurrence, caching, CLI."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from typer.testing import CliRunner

from talkplay.catalog import Catalog, Conversation, Playlist, Track, Turn
from talkplay.cli import app
from talkplay.encoders import EncodeConfig, TextEncoder, encode_run, encode_tracks, track_text
from talkplay.encoders.cooccur import fit_cooccur
from talkplay.errors import InputError
from talkplay.run import Run

SR = 16000
LONG_LYRICS = "\n".join(f"verse {i}: the river runs by the mill and the night is long" for i in range(120))


def _write_audio(folder: Path) -> dict[str, Path]:
    rng = np.random.default_rng(7)
    t = np.arange(4 * SR) / SR
    paths = {"tone": folder / "tone.wav", "noise": folder / "noise.ogg", "silence": folder / "silence.flac"}
    sf.write(paths["tone"], (0.3 * np.sin(2 * np.pi * 330 * t)).astype(np.float32), SR)
    sf.write(paths["noise"], (0.1 * rng.standard_normal(len(t))).astype(np.float32), SR)
    sf.write(paths["silence"], np.zeros(len(t), np.float32), SR)
    return paths


def make_catalog(folder: Path) -> Catalog:
    a = _write_audio(folder)
    tracks = [
        Track(id="t1", title="Blue in Green", artists=["Miles Davis"], album="Kind of Blue",
              tags=["jazz", "cool jazz"], lyrics=None, audio=str(a["tone"])),
        Track(id="t2", title="Static", artists=["Noise Unit"], tags=[], audio=str(a["noise"])),
        Track(id="t3", title="The Mill", artists=["Folk Trio"], tags=["folk"], lyrics=LONG_LYRICS),
        Track(id="t4", title="Quiet", artists=["Nobody"], audio=str(a["silence"])),
        Track(id="t5", title="Reel of Tulloch", tags=["reel", "scottish"], lyrics="short song\nla la"),
        Track(id="t6", title="Orphan", artists=["Solo"]),
    ]
    playlists = [Playlist("p1", "jazzy", ["t1", "t2", "t3"]), Playlist("p2", "folk", ["t3", "t5"]),
                 Playlist("p3", "dup", ["t1", "t2"])]
    conv = Conversation("c1", turns=[Turn(user="play folk", recommended=["t5", "t4"], liked=["t5", "t4"])])
    return Catalog(tracks, playlists, [conv])


@pytest.fixture(scope="module")
def encoded(tmp_path_factory) -> tuple[Run, dict]:
    folder = tmp_path_factory.mktemp("enc")
    run = Run(folder / "run")
    make_catalog(folder).save(run.path)
    return run, encode_run(run, EncodeConfig(batch_size=4))


# --- text ---------------------------------------------------------------------------------


def test_text_encoder_gives_normalised_meaningful_vectors():
    enc = TextEncoder()
    assert enc.name == "all-MiniLM-L6-v2" and enc.dim == 384
    v = enc.encode(["smooth jazz saxophone", "cool jazz trumpet", "heavy metal guitar riffs"])
    assert v.dtype == np.float32 and v.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert v[0] @ v[1] > v[0] @ v[2]
    assert enc.encode([]).shape == (0, 384)


def test_long_lyrics_are_chunked_and_pooled():
    enc = TextEncoder()
    chunks = enc.chunk(LONG_LYRICS)
    assert len(chunks) > 3 and "verse 119" in chunks[-1]
    pooled = enc.encode_long([LONG_LYRICS])[0]
    head = enc.encode([LONG_LYRICS])[0]  # the plain model only reads the first 256 tokens
    assert abs(np.linalg.norm(pooled) - 1) < 1e-5
    assert pooled @ head < 0.999


def test_track_text_per_modality():
    t = Track(id="x", title="So What", artists=["Miles Davis", "Bill Evans"], album="Kind of Blue",
              tags=["jazz", "modal"])
    want = "Title: So What. Artists: Miles Davis, Bill Evans. Album: Kind of Blue."
    assert track_text(t, "metadata") == want
    assert track_text(t, "tags") == "jazz, modal"
    assert track_text(t, "lyrics") is None and track_text(t, "audio") is None
    bare = Track(id="y", title="Untitled", extra={"audio_tags": ["rock", "pop"]})
    assert track_text(bare, "metadata") == "Title: Untitled."
    assert track_text(bare, "tags") == "rock, pop"
    with pytest.raises(ValueError):
        track_text(t, "smell")


# --- the stage ------------------------------------------------------------------------------


def test_encode_run_writes_every_modality_with_masks(encoded):
    run, info = encoded
    e = run.embeddings_dir
    expected_mask = {
        "metadata": [True] * 6,
        "tags": [True, True, True, False, True, False],  # t2 borrows its musicnn tags
        "lyrics": [False, False, True, False, True, False],
        "audio": [True, True, False, False, False, False],  # t4 is silent
        "cooccur": [True, True, True, True, True, False],  # t6 is in no playlist
    }
    for m, want in expected_mask.items():
        emb, mask = np.load(e / f"{m}.npy"), np.load(e / f"{m}.mask.npy")
        assert emb.dtype == np.float32 and mask.dtype == bool and len(emb) == 6, m
        assert mask.tolist() == want, m
        assert np.all(emb[~mask] == 0) and np.all(np.linalg.norm(emb[mask], axis=1) > 0), m
        assert info["modalities"][m]["present"] == sum(want)
    assert np.load(e / "metadata.npy").shape[1] == 384 and np.load(e / "audio.npy").shape[1] == 200
    assert np.load(e / "audio.tagprobs.npy").shape == (6, 50)


def test_tagless_tracks_use_musicnn_tags_with_their_source(encoded):
    run, info = encoded
    tags = json.loads((run.embeddings_dir / "audio.tags.json").read_text())
    assert tags["source"] == "musicnn" and set(tags["tracks"]) == {"t1", "t2"}
    assert len(tags["tracks"]["t2"]) == 5 and all(0 < p < 1 for _, p in tags["tracks"]["t2"])
    assert info["modalities"]["tags"]["from_audio"] == 1
    # the tags row of t2 is the embedding of its predicted tag text
    text = ", ".join(t for t, _ in tags["tracks"]["t2"])
    want = TextEncoder().encode([text])[0]
    np.testing.assert_allclose(np.load(run.embeddings_dir / "tags.npy")[1], want, atol=1e-5)


def test_run_json_records_models_and_versions(encoded):
    run, _ = encoded
    stage = run.stage("encode")
    assert stage["modalities"]["metadata"]["model"] == "all-MiniLM-L6-v2"
    assert "sentence-transformers" in stage["modalities"]["metadata"]["versions"]
    assert stage["modalities"]["audio"]["model"] == "MSD_musicnn"
    assert stage["modalities"]["cooccur"]["model"] == "ppmi-svd"
    assert stage["config"]["batch_size"] == 4


def test_rerun_is_cached_and_new_tracks_alone_are_encoded(encoded, tmp_path):
    src, _ = encoded
    run = Run(tmp_path / "run")
    shutil.copytree(src.path, run.path)
    before = {m: np.load(run.embeddings_dir / f"{m}.npy") for m in ("metadata", "audio", "lyrics")}
    again = encode_run(run, EncodeConfig(batch_size=4))
    assert all(m["encoded"] == 0 for m in again["modalities"].values())
    for m, arr in before.items():
        np.testing.assert_array_equal(np.load(run.embeddings_dir / f"{m}.npy"), arr)
    cat = run.load_catalog()
    cat.add_track(Track(id="n1", title="New Song", artists=["Fresh"], tags=["pop"]))
    cat.add_track(Track(id="n2", title="Another", lyrics="one line"))
    cat.save(run.path)
    info = encode_run(run, EncodeConfig(modalities=("metadata", "tags", "lyrics"), batch_size=4))
    assert info["modalities"]["metadata"]["encoded"] == 2
    assert info["modalities"]["tags"]["encoded"] == 1 and info["modalities"]["lyrics"]["encoded"] == 1
    meta = np.load(run.embeddings_dir / "metadata.npy")
    assert meta.shape == (8, 384)
    np.testing.assert_array_equal(meta[:6], before["metadata"])


def test_encode_tracks_embeds_new_tracks_without_writing(encoded, tmp_path):
    run, _ = encoded
    stamp = {p.name: p.stat().st_mtime_ns for p in run.embeddings_dir.iterdir()}
    rng = np.random.default_rng(3)
    sf.write(tmp_path / "new.wav", (0.2 * rng.standard_normal(4 * SR)).astype(np.float32), SR)
    cat = run.load_catalog()
    new = [Track(id="n1", title="Brand New", artists=["Someone"], audio=str(tmp_path / "new.wav")),
           cat.get("t1")]
    out = encode_tracks(run, new)
    assert set(out) == {"cooccur", "tags", "metadata", "lyrics", "audio"}
    for emb, mask in out.values():
        assert emb.dtype == np.float32 and len(emb) == len(mask) == 2
    assert out["cooccur"][1].tolist() == [False, False]
    assert out["audio"][1].tolist() == [True, True]
    assert out["tags"][1].tolist() == [True, True]  # n1's tags come from its audio
    np.testing.assert_allclose(out["metadata"][0][1], np.load(run.embeddings_dir / "metadata.npy")[0],
                               atol=1e-6)
    assert {p.name: p.stat().st_mtime_ns for p in run.embeddings_dir.iterdir()} == stamp


def test_shards_merge_into_the_same_result(encoded, tmp_path):
    src, _ = encoded
    run = Run(tmp_path / "run")
    run.path.mkdir()
    for f in ("catalog.parquet", "playlists.parquet", "conversations.parquet"):
        shutil.copy(src.path / f, run.path / f)
    cfg = dict(modalities=("metadata", "lyrics"), batch_size=4)
    s0 = encode_run(run, EncodeConfig(**cfg, shard=(0, 2)))
    s1 = encode_run(run, EncodeConfig(**cfg, shard=(1, 2)))
    assert s0["modalities"]["metadata"]["encoded"] == 3 and s1["modalities"]["metadata"]["encoded"] == 3
    assert not (run.embeddings_dir / "metadata.npy").exists()
    merged = encode_run(run, EncodeConfig(**cfg))
    assert merged["modalities"]["metadata"]["encoded"] == 0
    for m in ("metadata", "lyrics"):
        np.testing.assert_allclose(np.load(run.embeddings_dir / f"{m}.npy"),
                                   np.load(src.embeddings_dir / f"{m}.npy"), atol=1e-5)
        np.testing.assert_array_equal(np.load(run.embeddings_dir / f"{m}.mask.npy"),
                                      np.load(src.embeddings_dir / f"{m}.mask.npy"))


def test_audio_limit_takes_a_stable_sample(encoded, tmp_path):
    src, _ = encoded
    run = Run(tmp_path / "run")
    run.path.mkdir()
    shutil.copy(src.path / "catalog.parquet", run.path / "catalog.parquet")
    a = encode_run(run, EncodeConfig(modalities=("audio",), audio_limit=1))["modalities"]["audio"]
    b = encode_run(run, EncodeConfig(modalities=("audio",), audio_limit=1, force=True))["modalities"]["audio"]
    assert a["sampled"] == b["sampled"] == 1
    mask = np.load(run.embeddings_dir / "audio.mask.npy")
    assert mask.sum() <= 1


# --- co-occurrence ------------------------------------------------------------------------------


def test_cooccur_groups_tracks_that_share_playlists():
    tracks = [Track(id=f"t{i}", title=f"s{i}") for i in range(12)]
    pls = [Playlist(f"a{j}", "a", [f"t{i}" for i in range(0, 6) if (i + j) % 3]) for j in range(6)]
    pls += [Playlist(f"b{j}", "b", [f"t{i}" for i in range(6, 11) if (i + j) % 3]) for j in range(6)]
    cat = Catalog(tracks, pls)
    emb, mask, info = fit_cooccur(cat, dim=8, seed=0)
    assert mask.tolist() == [True] * 11 + [False]
    sim = emb @ emb.T
    within = np.mean([sim[i, j] for i in range(6) for j in range(6) if i != j])
    across = np.mean([sim[i, j] for i in range(6) for j in range(6, 11)])
    assert within > across + 0.3
    emb2, _, _ = fit_cooccur(cat, dim=8, seed=0)
    np.testing.assert_array_equal(emb, emb2)  # seeded and sign-fixed: reproducible


def test_cooccur_with_no_sessions_masks_everything():
    emb, mask, info = fit_cooccur(Catalog([Track(id="a", title="a"), Track(id="b", title="b")]), dim=4)
    assert not mask.any() and info["items"] == 0 and emb.shape[0] == 2


# --- config and CLI -----------------------------------------------------------------------------


def test_config_errors_name_the_flag():
    with pytest.raises(InputError, match="--modalities"):
        EncodeConfig(modalities=("smell",)).validate()
    with pytest.raises(InputError, match="--shard"):
        EncodeConfig(shard=(2, 2)).validate()
    with pytest.raises(InputError, match="--batch-size"):
        EncodeConfig(batch_size=0).validate()
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="--device"):
            EncodeConfig(device="cuda").validate()


def test_cli_encode_json(encoded, tmp_path, caplog):
    src, _ = encoded
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(src.path / "catalog.parquet", run / "catalog.parquet")
    res = CliRunner().invoke(app, ["encode", str(run), "--modalities", "metadata,tags", "--json"])
    assert res.exit_code == 0, res.output
    info = json.loads(res.stdout.strip().splitlines()[-1])
    assert set(info["modalities"]) == {"metadata", "tags"} and info["tracks"] == 6
    assert (run / "embeddings" / "tags.mask.npy").exists()


def test_cli_reports_bad_flags_in_one_line(tmp_path):
    make_catalog(tmp_path).save(tmp_path / "run")
    for args, flag in ((["--modalities", "smell"], "--modalities"), (["--shard", "x"], "--shard")):
        p = subprocess.run([sys.executable, "-m", "talkplay.cli", "encode", str(tmp_path / "run"), *args],
                           capture_output=True, text=True, timeout=120)
        assert p.returncode == 2 and flag in p.stderr and "Traceback" not in p.stderr


def test_bad_audio_in_a_catalog_is_logged_per_track(tmp_path, caplog):
    run = Run(tmp_path / "run")
    (tmp_path / "fake.ogg").write_text("hello")
    bad = Track(id="bad", title="y", audio=str(tmp_path / "fake.ogg"))
    Catalog([Track(id="ok", title="x"), bad]).save(run.path)
    with caplog.at_level(logging.WARNING, logger="talkplay"):
        info = encode_run(run, EncodeConfig(modalities=("audio",)))
    assert info["modalities"]["audio"]["present"] == 0 and info["modalities"]["audio"]["failed"] == 1
    assert any("bad" in r.getMessage() and "fake.ogg" in r.getMessage() for r in caplog.records)


def test_an_interrupted_run_resumes_from_saved_progress(encoded, tmp_path, monkeypatch):
    from talkplay.encoders import pipeline
    from talkplay.encoders.text import TextModalityEncoder

    src, _ = encoded
    run = Run(tmp_path / "run")
    run.path.mkdir()
    shutil.copy(src.path / "catalog.parquet", run.path / "catalog.parquet")
    monkeypatch.setattr(pipeline, "SAVE_EVERY_S", -1.0)  # save after every block
    monkeypatch.setattr(TextModalityEncoder, "block_batches", 1)  # a block is one track
    real_encode = TextModalityEncoder.encode
    calls = []

    def flaky(self, tracks):
        calls.append(len(tracks))
        if len(calls) == 3:
            raise KeyboardInterrupt  # the user presses Ctrl-C mid-way
        return real_encode(self, tracks)

    monkeypatch.setattr(TextModalityEncoder, "encode", flaky)
    with pytest.raises(KeyboardInterrupt):
        encode_run(run, EncodeConfig(modalities=("metadata",), batch_size=1))
    parts = list((run.embeddings_dir / "shards").glob("metadata.part-*.npz"))
    assert len(parts) == 2
    monkeypatch.setattr(TextModalityEncoder, "encode", real_encode)
    info = encode_run(run, EncodeConfig(modalities=("metadata",), batch_size=1))
    assert info["modalities"]["metadata"]["cached"] == 2 and info["modalities"]["metadata"]["encoded"] == 4
    assert not list((run.embeddings_dir / "shards").glob("metadata.part-*.npz"))
    np.testing.assert_allclose(np.load(run.embeddings_dir / "metadata.npy"),
                               np.load(src.embeddings_dir / "metadata.npy"), atol=1e-5)


@pytest.mark.slow
def test_music21_demo_slice_end_to_end(tmp_path):
    """The demo path: import real music21 works, encode every modality, audio for a sample."""
    from talkplay.sources import ImportConfig, import_into_run

    run = Run(tmp_path / "run")
    import_into_run(run, ImportConfig(source="music21", path="-", options={"limit": 40}))
    info = encode_run(run, EncodeConfig(audio_limit=4, audio_seconds=10))
    m = info["modalities"]
    assert m["metadata"]["present"] == 40 and m["tags"]["present"] > 0
    assert m["audio"]["sampled"] == 4 and m["audio"]["present"] >= 3  # a score may fail to render
    assert len(list((run.cache_dir / "audio").glob("*.wav"))) == m["audio"]["present"]
    again = encode_run(run, EncodeConfig(audio_limit=4, audio_seconds=10))
    assert all(e["encoded"] == 0 for e in again["modalities"].values())


def test_cooccur_is_fitted_without_held_out_conversations_and_their_goals(tmp_path):
    """A held-out conversation's goal playlist and liked tracks would put its test gold next
    to its seeds in the embedding; encode must fit on the training side of the run's split,
    and dialogs must hold out the same conversations."""
    from talkplay.dialogs import DialogsConfig, build_dialogs
    from talkplay.splits import held_out_ids

    tracks = [Track(id=f"t{i}", title=f"Song {i}", artists=["A"]) for i in range(24)]
    convs, goals = [], []
    for i in range(8):  # conversation i likes t(2i), t(2i+1); its goal adds t(16+i)
        own = [f"t{2 * i}", f"t{2 * i + 1}"]
        convs.append(Conversation(id=f"c{i}", turns=[Turn(user=f"songs like {i}", liked=own[:1]),
                                                     Turn(user="more", liked=own[1:])],
                                  goal=[*own, f"t{16 + i}"]))
        goals.append(Playlist(id=f"cpcd:goal:c{i}", name=f"goal {i}", track_ids=[*own, f"t{16 + i}"]))
    Catalog(tracks, goals, convs).save(tmp_path)
    run = Run(tmp_path)
    encode_run(run, EncodeConfig(modalities=("cooccur",)))
    test_ids = held_out_ids(run)
    assert len(test_ids) == 1 and run.stage("eval_split")["test_ids"] == sorted(test_ids)
    i = int(next(iter(test_ids))[1:])
    mask = np.load(run.embeddings_dir / "cooccur.mask.npy")
    held = [2 * i, 2 * i + 1, 16 + i]
    assert not mask[held].any()  # in no training session
    assert mask[[j for j in range(24) if j not in held]].all()
    assert run.stage("encode")["modalities"]["cooccur"]["held_out_conversations"] == 1
    build_dialogs(run, DialogsConfig(synthesize=0, align=False))
    test = [json.loads(x)["id"] for x in (run.dialogs_dir / "test.jsonl").read_text().splitlines()]
    assert test == [f"c{i}"]
