"""The music tokenizer on small synthetic embeddings written into a real run directory."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from talkplay.catalog import Catalog, Track
from talkplay.cli import app
from talkplay.errors import InputError
from talkplay.modalities import MUSIC_CLOSE, MUSIC_OPEN
from talkplay.run import Run
from talkplay.tokenizer import MusicTokenizer, TokenizerConfig, extend_run, tokenize_run

N = 400
DIMS = {"cooccur": 8, "tags": 12, "metadata": 16, "lyrics": 12, "audio": 10}
GENRES = ["jazz", "rock", "folk", "reel", "jig", "blues", "pop", "metal"]


def _tracks(start: int, n: int) -> list[Track]:
    return [Track(id=f"t{i}", title=f"Tune {i}", artists=[f"Artist {i % 10}"],
                  tags=[GENRES[i % 8], "dance" if i % 3 == 0 else "slow"]) for i in range(start, start + n)]


def _embeddings(start: int, n: int, seed: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Clustered rows: tags follow the genre, metadata the artist; rows 0-5 are identical."""
    rng = np.random.default_rng(seed)
    idx = np.arange(start, start + n)
    out = {}
    for j, (m, dim) in enumerate(DIMS.items()):
        centres = np.random.default_rng(100 + j).normal(size=(16, dim)).astype(np.float32)
        label = {"tags": idx % 8, "metadata": idx % 10}.get(m, (idx * 7 + j) % 16)
        x = (centres[label] + 0.2 * rng.normal(size=(n, dim))).astype(np.float32)
        mask = np.ones(n, bool)
        if m == "lyrics":
            mask = idx % 4 != 1  # a quarter of the tracks have no lyrics
        if m == "audio":
            x[idx % 50 == 7] = np.nan  # a broken audio embedding must not become a cluster
        same = idx < 6
        if same.any():
            x[same] = centres[0] + 0.01
            mask[same] = True
        out[m] = (x, mask)
    return out


@pytest.fixture
def run(tmp_path) -> Run:
    r = Run(tmp_path / "run")
    Catalog(_tracks(0, N)).save(r.path)
    r.embeddings_dir.mkdir(parents=True)
    for m, (x, mask) in _embeddings(0, N, seed=0).items():
        np.save(r.embeddings_dir / f"{m}.npy", x)
        np.save(r.embeddings_dir / f"{m}.mask.npy", mask)
    return r


def _brute_next(seqs: list[tuple[int, ...]], prefix: tuple[int, ...]) -> list[int]:
    return sorted({s[len(prefix)] for s in seqs if s[:len(prefix)] == prefix and len(s) > len(prefix)})


def test_every_track_gets_a_unique_fixed_length_sequence_that_decodes_exactly(run):
    diag = tokenize_run(run, TokenizerConfig(k=64))
    tok = MusicTokenizer.load(run.tokenizer_dir)
    ids = run.load_catalog().ids()
    assert tok.track_ids == ids
    seqs = [tuple(tok.track_tokens(t)) for t in ids]
    assert {len(s) for s in seqs} == {6}
    assert len(set(seqs)) == N == diag["unique_sequences"] == diag["tracks"]
    vocab = set(tok.vocab)
    assert len(vocab) == len(tok.vocab) and MUSIC_OPEN not in vocab
    assert all(t in vocab for s in seqs for t in s)
    assert [s[0][:4] for s in seqs[:1]] == ["<cf_"] and seqs[0][-1].startswith("<dup_")
    for t, s in zip(ids, seqs, strict=True):
        assert tok.decode(list(s)) == t
        assert tok.decode([MUSIC_OPEN, *s, MUSIC_CLOSE]) == t
    assert tok.decode(list(seqs[0][:-1])) is None  # a prefix is no track
    assert tok.decode([seqs[0][1], seqs[0][0], *seqs[0][2:]]) is None  # tokens in the wrong slots
    # the six identical tracks collide and are told apart by the last token only
    assert len({s[:-1] for s in seqs[:6]}) == 1 and len({s[-1] for s in seqs[:6]}) == 6
    pre = [s[:-1] for s in seqs]
    assert diag["collision_rate"] == pytest.approx((N - len(set(pre))) / N)
    assert diag["collision_rate"] >= 5 / N and diag["max_collision_group"] >= 6


def test_trie_allowed_next_tokens_match_brute_force(run):
    tokenize_run(run, TokenizerConfig(k=16, order=["tags", "metadata", "lyrics"]))
    tok = MusicTokenizer.load(run.tokenizer_dir)
    rng = np.random.default_rng(0)
    ids = rng.permutation(len(tok.vocab)) + 1000  # an LM's ids need not follow vocab order
    token_to_id = dict(zip(tok.vocab, ids.tolist(), strict=True))
    trie = tok.trie_for(token_to_id)
    seqs = [tuple(token_to_id[t] for t in tok.track_tokens(t)) for t in tok.track_ids]
    prefixes = {s[:d] for s in seqs for d in range(len(s) + 1)}
    for p in prefixes:
        assert sorted(trie.allowed(p)) == _brute_next(seqs, p), p
    for s, t in zip(seqs, tok.track_ids, strict=True):
        assert trie.track(s) == t
        assert trie.track(s[:-1]) is None
    # prefixes that lead nowhere: a real token at the wrong place, a valid-looking combination
    first = trie.allowed(())
    assert trie.allowed((seqs[0][1],)) == [] and trie.allowed((999_999,)) == []
    unseen = next(p for p in itertools.product(first, trie.allowed((first[0],)) + first) if p not in prefixes)
    assert trie.allowed(unseen) == []


def test_missing_modalities_get_the_unknown_token(run):
    tokenize_run(run, TokenizerConfig(k=32))
    tok = MusicTokenizer.load(run.tokenizer_dir)
    _, lyr_mask = _embeddings(0, N, seed=0)["lyrics"]
    for i, t in enumerate(tok.track_ids):
        toks = tok.track_tokens(t)
        assert (toks[3] == "<lyr_unk>") == (not lyr_mask[i])
        assert (toks[4] == "<aud_unk>") == (i % 50 == 7 and i >= 6)  # non-finite rows
        assert "<cf_unk>" not in toks
    assert "no lyrics" in tok.describe("<lyr_unk>")


def test_extend_run_keeps_existing_codes_and_adds_no_vocabulary(run):
    tokenize_run(run, TokenizerConfig(k=32))
    before = MusicTokenizer.load(run.tokenizer_dir)
    old = {t: before.track_tokens(t) for t in before.track_ids}
    new_tracks = _tracks(N, 50)
    emb = _embeddings(N, 50, seed=1)
    for m in emb:  # some new tracks copy an existing track's embeddings: forced collisions
        x, mask = emb[m]
        full, full_mask = _embeddings(0, 6, seed=0)[m]
        x[:3], mask[:3] = full[:3], full_mask[:3]
    cat = run.load_catalog()
    for t in new_tracks:
        cat.add_track(t)
    cat.save(run.path)
    summary = extend_run(run, new_tracks, embeddings=emb)
    assert summary["added"] == 50 and summary["tracks"] == N + 50 and summary["skipped"] == 0
    assert summary["unknown"]["lyrics"] == int((~emb["lyrics"][1]).sum())
    after = MusicTokenizer.load(run.tokenizer_dir)
    assert after.vocab == before.vocab
    assert all(after.track_tokens(t) == toks for t, toks in old.items())
    seqs = [tuple(after.track_tokens(t)) for t in after.track_ids]
    assert len(set(seqs)) == N + 50
    vocab = set(before.vocab)
    for t in new_tracks:
        toks = after.track_tokens(t.id)
        assert set(toks) <= vocab and after.decode(toks) == t.id
    token_to_id = {t: i for i, t in enumerate(after.vocab)}
    trie = after.trie_for(token_to_id)
    s = tuple(token_to_id[x] for x in after.track_tokens(new_tracks[0].id))
    assert trie.track(s) == new_tracks[0].id and s[-1] in trie.allowed(s[:-1])
    # again: nothing to do, nothing changes
    again = extend_run(run, new_tracks, embeddings=emb)
    assert again["added"] == 0 and again["skipped"] == 50
    assert run.stage("tokenize")["extended_tracks"] == 50


def test_save_load_round_trip_and_encode_new_without_refit(run, tmp_path):
    diag = tokenize_run(run, TokenizerConfig(k=32, levels=2))
    tok = MusicTokenizer.load(run.tokenizer_dir)
    assert tok.length == 11 and "<tag_r1_0000>" in tok.vocab and diag["levels"] == 2
    tok.save(tmp_path / "copy")
    back = MusicTokenizer.load(tmp_path / "copy")
    assert back.vocab == tok.vocab and back.track_ids == tok.track_ids
    assert np.array_equal(back.codes, tok.codes)
    for name, arr in tok.trie.arrays().items():
        assert np.array_equal(arr, back.trie.arrays()[name]), name
    for m in tok.modalities:
        assert all(np.array_equal(a, b) for a, b in zip(tok.codebooks[m], back.codebooks[m], strict=True))
    token = tok.track_tokens("t10")[1]
    assert back.describe(token) == tok.describe(token) and "tracks" in back.describe(token)
    emb = _embeddings(N, 20, seed=5)
    ids = [f"n{i}" for i in range(20)]
    a, b = tok.encode_new(ids, emb), back.encode_new(ids, emb)
    assert a == b and all(tok.decode(v) == k for k, v in a.items())


def test_cluster_descriptions_and_purity_follow_the_data(run):
    diag = tokenize_run(run, TokenizerConfig(k=8, order=["tags", "metadata"]))
    tok = MusicTokenizer.load(run.tokenizer_dir)
    tag, artist = diag["purity"]["tags"]["tag"], diag["purity"]["metadata"]["artist"]
    assert tag["purity"] > tag["random"] + 0.2 and artist["purity"] > artist["random"] + 0.2
    t = run.load_catalog().get("t9")  # genre "jig" index 1 of 8: its tags cluster's top tag
    text = tok.describe(tok.track_tokens("t9")[0])
    assert text.startswith("semantic tags cluster") and t.tags[0] in text and '"Tune ' in text
    u = diag["usage"]["tags"]
    assert 0 < u["share_used"] <= 1 and 0 < u["entropy_bits"] <= 3 and u["unknown"] == 0
    assert (run.tokenizer_dir / "diagnostics.png").stat().st_size > 1000


def test_cli_json_and_run_record(run):
    res = CliRunner().invoke(app, ["tokenize", str(run.path), "--k", "32", "--order", "metadata,tags",
                                   "--seed", "3", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout.strip().splitlines()[-1])
    for key in ("tracks", "unique_sequences", "collision_rate", "usage"):
        assert key in out
    assert out["tracks"] == out["unique_sequences"] == N
    assert set(out["usage"]) == {"metadata", "tags"} and out["order"] == ["metadata", "tags"]
    rec = run.stage("tokenize")
    assert rec["config"]["seed"] == 3 and rec["config"]["k"] == 32
    assert rec["modalities"] == ["metadata", "tags"]
    res = CliRunner().invoke(app, ["tokenize", str(run.path), "--k", "32"])
    assert res.exit_code == 0 and "collision rate" in res.stdout
    bad = CliRunner().invoke(app, ["tokenize", str(run.path), "--order", "tags,smell"])
    assert isinstance(bad.exception, InputError) and "--order" in str(bad.exception)
    bad = CliRunner().invoke(app, ["tokenize", str(run.path), "--levels", "0"])
    assert isinstance(bad.exception, InputError) and "--levels" in str(bad.exception)


def test_bad_embedding_files_name_the_file(run):
    np.save(run.embeddings_dir / "tags.npy", np.zeros((N - 1, 12), np.float32))
    with pytest.raises(InputError, match="tags.npy"):
        tokenize_run(run, TokenizerConfig(k=8))


def test_sklearn_backend_and_seeded_determinism(run):
    a = tokenize_run(run, TokenizerConfig(k=16, backend="sklearn", order=["tags", "audio"]))
    codes_a = MusicTokenizer.load(run.tokenizer_dir).codes.copy()
    b = tokenize_run(run, TokenizerConfig(k=16, backend="sklearn", order=["tags", "audio"]))
    assert np.array_equal(codes_a, MusicTokenizer.load(run.tokenizer_dir).codes)
    assert a["unique_sequences"] == b["unique_sequences"] == N


@pytest.mark.slow
def test_real_encoders_then_tokenize_then_extend_with_50_new_tracks(tmp_path):
    """End to end with the bundled text encoder: encode, tokenize, then 50 cold tracks."""
    from talkplay.encoders import EncodeConfig, encode_run

    r = Run(tmp_path / "run")
    Catalog(_tracks(0, 160)).save(r.path)
    encode_run(r, EncodeConfig(modalities=("metadata", "tags")))
    tokenize_run(r, TokenizerConfig(k=16))
    before = MusicTokenizer.load(r.tokenizer_dir)
    old = {t: before.track_tokens(t) for t in before.track_ids}
    new = _tracks(160, 50)
    summary = extend_run(r, new)
    after = MusicTokenizer.load(r.tokenizer_dir)
    assert summary["added"] == 50 and after.vocab == before.vocab
    assert all(after.track_tokens(t) == v for t, v in old.items())
    seqs = {tuple(after.track_tokens(t)) for t in after.track_ids}
    assert len(seqs) == 210 and all(after.decode(after.track_tokens(t.id)) == t.id for t in new)
