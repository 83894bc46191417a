"""The catalog-trie constraint behind the vLLM path: the engine's own trie and rule, driven
the way vLLM calls a per-request processor; the vLLM class only where the extra is installed."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from talkplay.codes.constraint import ConstraintState, MusicVocab, TrieConstraint
from talkplay.tokenizer.trie import IdTrie
from talkplay.vllm_support import (
    XARG_EXCLUDE,
    XARG_OFF,
    ConstraintSpec,
    parse_exclude,
    request_constraint,
)

OPEN, CLOSE, EOS = 1, 2, 0
VOCAB = 40


def small_catalog() -> dict[str, list[int]]:
    # codes live in ids 10..39; the last position disambiguates tracks sharing codes
    return {
        "reel": [10, 20, 30],
        "jig": [10, 20, 31],
        "air": [10, 21, 30],
        "chorale": [11, 22, 30],
    }


def small_vocab() -> MusicVocab:
    return MusicVocab.from_sequences(OPEN, CLOSE, small_catalog())


def allowed(vocab: MusicVocab, prefix: list[int], exclude=()) -> list[int]:
    return vocab.allowed(tuple(prefix), vocab.dead_prefixes(exclude))


def test_trie_allows_only_real_continuations():
    trie = IdTrie.from_sequences(small_catalog())
    assert trie.allowed(()) == [10, 11]
    assert trie.allowed((10,)) == [20, 21]
    assert trie.allowed((10, 20)) == [30, 31]
    assert trie.allowed((11, 21)) == []  # a per-position set would allow this: no such track
    assert trie.track((10, 20, 31)) == "jig"
    assert trie.track((10, 20)) is None
    assert trie.allowed((10, 20, 31)) == []


def test_trie_exclusion_prunes_branches_with_no_track_left():
    vocab = small_vocab()
    assert allowed(vocab, [], exclude={"chorale"}) == [10]
    assert allowed(vocab, [10], exclude={"air"}) == [20]
    assert allowed(vocab, [10, 20], exclude={"reel", "unknown-id"}) == [31]
    assert allowed(vocab, [], exclude=set(small_catalog())) == []


def test_trie_rejects_ambiguous_catalogs():
    with pytest.raises(ValueError, match="share one sequence"):
        IdTrie.from_sequences({"a": [1, 2], "b": [1, 2]})
    with pytest.raises(ValueError, match="same length"):
        IdTrie.from_sequences({"a": [1, 2], "b": [1, 2, 3]})
    with pytest.raises(ValueError):
        IdTrie.from_sequences({})
    with pytest.raises(ValueError, match="open/close"):
        MusicVocab.from_sequences(OPEN, 20, small_catalog())


@settings(max_examples=40, deadline=None)
@given(st.dictionaries(st.text("abcdef", min_size=1, max_size=4),
                       st.lists(st.integers(3, 8), min_size=3, max_size=3), min_size=1, max_size=25,
                       dict_class=dict).filter(lambda d: len({tuple(v) for v in d.values()}) == len(d)),
       st.data())
def test_trie_matches_brute_force(catalog, data):
    # ids repeat across positions here, unlike the music tokenizer's
    vocab = MusicVocab.from_sequences(OPEN, CLOSE, catalog)
    exclude = set(data.draw(st.lists(st.sampled_from(sorted(catalog)), max_size=3)))
    seqs = [tuple(v) for k, v in catalog.items() if k not in exclude]
    prefixes = {tuple(v[:n]) for v in catalog.values() for n in range(4)}
    for p in prefixes:
        want = sorted({s[len(p)] for s in seqs if s[: len(p)] == p and len(s) > len(p)})
        assert sorted(allowed(vocab, list(p), exclude)) == want
    for k, v in catalog.items():
        assert vocab.trie.track(tuple(v)) == k


def run_greedy(rc: ConstraintState, scores: np.ndarray, steps: int = 8) -> list[int]:
    """Greedy decoding over fixed per-step scores, as a serving engine would."""
    out: list[int] = []
    for step in range(steps):
        logits = torch.tensor(scores[step % len(scores)], dtype=torch.float32)
        tok = int(torch.argmax(rc(out, logits.clone())))
        out.append(tok)
        if tok == EOS:
            break
    return out


def blocks_of(vocab: MusicVocab, out: list[int]) -> list[str | None]:
    blocks, cur = [], None
    for t in out:
        if t == OPEN:
            cur = []
        elif t == CLOSE:
            blocks.append(vocab.trie.track(tuple(cur)))
            cur = None
        elif cur is not None:
            cur.append(t)
    return blocks


def test_request_constraint_writes_one_catalog_track_then_free_text():
    vocab = small_vocab()
    rc = ConstraintState(vocab, exclude={"reel"}, max_tracks=1, music_first=True)
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(4, VOCAB))
    scores[:, 11] += 50  # the model loves a code that leads only to "chorale" ...
    scores[:, 3] += 5  # ... and a text token
    out = run_greedy(rc, scores)
    assert out[0] == OPEN
    close = out.index(CLOSE)
    assert vocab.trie.track(tuple(out[1:close])) == "chorale"
    # after the block: no code tokens, no second block (max_tracks=1)
    assert not set(out[close + 1:]) & (set(range(10, VOCAB)) | {OPEN})


def test_request_constraint_never_repeats_or_emits_excluded():
    vocab = small_vocab()
    rc = ConstraintState(vocab, exclude={"air"}, max_tracks=5, music_first=True)
    scores = np.zeros((1, VOCAB))
    scores[0, [10, 20, 30, OPEN]] = [9, 9, 9, 8]  # wants "reel" again and again
    blocks = blocks_of(vocab, run_greedy(rc, scores, steps=20))
    assert blocks[0] == "reel"
    assert None not in blocks and "air" not in blocks
    assert len(blocks) == len(set(blocks)) == 3  # reel, jig, chorale; then no track is left


def test_written_and_excluded_tracks_together_prune_a_prefix():
    # "reel" excluded and "jig" written leave nothing under (10, 20): only "air" is left under 10
    state = ConstraintState(small_vocab(), exclude={"reel"})
    assert state.next_rule([OPEN, 10, 20, 31, CLOSE, OPEN, 10]) == ("only", [21])


def test_engine_processor_and_request_rule_decode_alike():
    """The transformers processor (prompt, batch rows) and the per-request rule agree."""
    vocab = small_vocab()
    rng = np.random.default_rng(1)
    scores = rng.normal(size=(6, VOCAB))
    scores[:, [OPEN, 10, 20]] += 4
    rule = run_greedy(ConstraintState(vocab, exclude={"jig"}), scores, steps=24)
    proc, prompt, out = TrieConstraint(vocab, exclude={"jig"}), [5, 6], []
    for step in range(len(rule)):
        row = torch.tensor(scores[step % len(scores)], dtype=torch.float32)[None]
        out.append(int(torch.argmax(proc(torch.tensor([prompt + out]), row)[0])))
        if out[-1] == EOS:
            break
    assert out == rule
    assert len(blocks_of(vocab, rule)) == 3 and "jig" not in blocks_of(vocab, rule)


def test_constraint_resets_when_output_shrinks():
    rc = ConstraintState(small_vocab(), max_tracks=1, music_first=True)
    assert rc.next_rule([OPEN, 10]) == ("only", [20, 21])
    assert rc.next_rule([OPEN]) == ("only", [10, 11])
    assert rc.next_rule([]) == ("only", [OPEN])


def test_request_constraint_from_xargs_and_spec_roundtrip(tmp_path):
    spec = ConstraintSpec(music_open=OPEN, music_close=CLOSE, tracks=small_catalog(),
                          vocab={f"<c_{i:04d}>": i for i in range(10, VOCAB)})
    spec.save(tmp_path)
    loaded = ConstraintSpec.load(tmp_path)
    assert loaded.tracks == spec.tracks and loaded.music_open == OPEN
    vocab = loaded.music_vocab()
    assert vocab.code_ids == list(range(10, VOCAB))  # unused music tokens are banned in text too
    rc = request_constraint(vocab, {XARG_EXCLUDE: json.dumps(["reel", "jig", "air"])})
    assert rc.next_rule([OPEN]) == ("only", [11])
    assert request_constraint(vocab, {XARG_OFF: "true"}) is None
    text = "<|music|><c_0010><c_0020><c_0031><|/music|> A jig for you."
    assert loaded.tracks_in_text(text) == ["jig"]
    assert loaded.tracks_in_text("<|music|><c_0011><c_0021><c_0030><|/music|>") == []


def test_parse_exclude_forms():
    assert parse_exclude('["a", "b,c"]') == ["a", "b,c"]
    assert parse_exclude("a, b") == ["a", "b"]
    assert parse_exclude(None) == []
    with pytest.raises(ValueError):
        parse_exclude("[not json")
    with pytest.raises(ValueError):
        parse_exclude(3)


def test_load_missing_spec_names_the_file(tmp_path):
    from talkplay.errors import InputError

    with pytest.raises(InputError, match="talkplay_constraint.json"):
        ConstraintSpec.load(tmp_path)


def test_vllm_processor_class_plugs_into_vllm():
    pytest.importorskip("vllm", reason="the `vllm` extra is not installed")
    from vllm.v1.sample.logits_processor import LogitsProcessor

    from talkplay import vllm_support

    assert issubclass(vllm_support.CatalogTrieLogitsProcessor, LogitsProcessor)


def test_export_then_constrained_greedy_decoding_writes_a_catalog_track(tmp_path):
    """Export a trained tiny run, then decode with the real model under the per-request rule:
    the text (music tokens kept) names a real track, and excluded tracks never appear."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from synth_run import build_synth_run
    from talkplay.tokenizer import MusicTokenizer
    from talkplay.train import TrainConfig, train_run
    from talkplay.vllm_support import export_for_vllm

    run = build_synth_run(tmp_path / "run", n_train=16, n_test=4)
    train_run(run, TrainConfig(base_model="tiny", track_repr="codes", lora=False, max_steps=1, batch_size=4,
                               max_length=96, save_every=1000))
    info = export_for_vllm(run, tmp_path / "vllm")
    spec = ConstraintSpec.load(tmp_path / "vllm")
    music = MusicTokenizer.load(run.tokenizer_dir)
    assert info["tracks"] == len(spec.tracks) == len(music.track_ids)
    tok = AutoTokenizer.from_pretrained(tmp_path / "vllm")
    for tid in music.track_ids:
        assert tok.convert_ids_to_tokens(spec.tracks[tid]) == music.track_tokens(tid)

    model = AutoModelForCausalLM.from_pretrained(tmp_path / "vllm").eval()
    exclude = set(music.track_ids[:8])
    rc = request_constraint(spec.music_vocab(), {XARG_EXCLUDE: json.dumps(sorted(exclude))})
    prompt = tok("play some jazz music")["input_ids"]
    out: list[int] = []
    with torch.no_grad():
        for _ in range(12):
            logits = model(torch.tensor([prompt + out])).logits[0, -1]
            out.append(int(torch.argmax(rc(out, logits))))
    text = tok.decode(out, skip_special_tokens=False)
    found = spec.tracks_in_text(text)
    assert len(found) == 1 and found[0] in music.track_ids and found[0] not in exclude, text
