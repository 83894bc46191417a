"""Base-model loading and vocabulary expansion (talkplay.model), on a real music tokenizer."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from talkplay.errors import TalkPlayError
from talkplay.modalities import MUSIC_CLOSE, MUSIC_OPEN
from talkplay.model import (
    _describe_rows,
    _description,
    _mean_cov_rows,
    expand_vocab,
    is_tied,
    load_base,
    load_tokenizer,
    music_token_strings,
)
from talkplay.tokenizer import MusicTokenizer
from test_dialogs_common import make_run


@pytest.fixture(scope="module")
def music(tmp_path_factory):
    run = make_run(tmp_path_factory.mktemp("model_run"))
    return MusicTokenizer.load(run.tokenizer_dir)


def test_tiny_is_offline_seeded_and_chatml():
    m1, tok = load_base("tiny")
    m2, _ = load_base("tiny")
    assert is_tied(m1)
    assert torch.equal(m1.get_input_embeddings().weight, m2.get_input_embeddings().weight)
    text = tok.apply_chat_template([{"role": "user", "content": "play some jazz"}], tokenize=False,
                                   add_generation_prompt=True)
    assert text == "<|im_start|>user\nplay some jazz<|im_end|>\n<|im_start|>assistant\n"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.convert_tokens_to_ids("<|im_start|>") in ids
    assert tok.decode(ids) == text  # byte-level: any text round-trips
    out = m1(torch.tensor([ids]))
    assert out.logits.shape == (1, len(ids), len(tok))
    untied, _ = load_base("tiny-untied")
    assert not is_tied(untied)


def test_unknown_base_model_is_a_clear_error(tmp_path):
    with pytest.raises(TalkPlayError, match="not-a-model"):
        load_base(tmp_path / "not-a-model")


@pytest.mark.parametrize("name", ["tiny", "tiny-untied"])
@pytest.mark.parametrize("init", ["mean_cov", "describe"])
def test_expand_vocab_keeps_old_rows_and_inits_new(name, init, music):
    model, tok = load_base(name)
    n_old = len(tok)
    old_in = model.get_input_embeddings().weight.detach().clone()
    old_out = model.get_output_embeddings().weight.detach().clone()
    info = expand_vocab(model, tok, music, init=init, seed=3)
    strings = music_token_strings(music)
    assert info["added"] == len(strings) == len(tok) - n_old
    assert info["tied"] == (name == "tiny")
    assert is_tied(model) == (name == "tiny")  # resizing keeps the head tied (or untied)
    w_in = model.get_input_embeddings().weight
    w_out = model.get_output_embeddings().weight
    assert w_in.shape[0] == w_out.shape[0] == len(tok) == model.config.vocab_size
    assert torch.equal(w_in[:n_old], old_in)
    assert torch.equal(w_out[:n_old], old_out)
    new_ids = tok.convert_tokens_to_ids(strings)
    assert new_ids == list(range(n_old, n_old + len(strings)))
    new_rows = w_in[new_ids].detach()
    assert torch.isfinite(new_rows).all()
    assert len({tuple(r.tolist()) for r in new_rows}) == len(strings)  # no two alike
    if init == "describe":
        # rows are a linear image of the descriptions' embeddings (their layout is kept),
        # centred on the old rows' mean
        fresh = load_tokenizer(name)
        for w_new, w_old in [(w_in, old_in)] + ([(w_out, old_out)] if name == "tiny-untied" else []):
            desc = torch.stack([w_old[fresh(_description(music, s), add_special_tokens=False)["input_ids"]]
                                .mean(0) for s in strings]).double()
            new = w_new[new_ids].detach().double()
            mu = w_old.double().mean(0)
            assert torch.allclose(new.mean(0), mu, atol=1e-5)
            dev = desc - desc.mean(0)
            fit = torch.linalg.lstsq(dev, new - mu).solution
            assert torch.allclose(dev @ fit, new - mu, atol=1e-4)
        assert "cluster" not in _description(music, strings[5]) and _description(music, strings[5])
    else:
        # mean/cov sampling: new rows sit at the scale of old ones, not at zero or at the mean
        assert new_rows.norm(dim=1).mean() == pytest.approx(old_in.norm(dim=1).mean().item(), rel=0.35)
        if name == "tiny-untied":
            assert not torch.equal(w_out[new_ids], w_in[new_ids])
    # a second call adds nothing and changes nothing
    before = w_in.detach().clone()
    assert expand_vocab(model, tok, music, init=init)["added"] == 0
    assert torch.equal(model.get_input_embeddings().weight, before)


def test_mean_cov_rows_follow_the_old_distribution():
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(3, 3, generator=gen)
    old = torch.randn(4000, 3, generator=gen) @ a + torch.tensor([1.0, -2.0, 0.5])
    rows = _mean_cov_rows(old, 20000, torch.Generator().manual_seed(1), cov_scale=1.0)
    assert torch.allclose(rows.mean(0), old.mean(0), atol=0.05)
    assert torch.allclose(torch.cov(rows.T), torch.cov(old.T), atol=0.08)
    tight = _mean_cov_rows(old, 10, torch.Generator().manual_seed(1), cov_scale=1e-8)
    assert torch.allclose(tight, old.mean(0).expand(10, 3), atol=1e-3)


def test_describe_rows_take_the_old_mean_and_covariance():
    gen = torch.Generator().manual_seed(0)
    old = torch.randn(3000, 6, generator=gen) @ torch.randn(6, 6, generator=gen) + 2.0
    # 300 descriptions, each the mean of 4 sub-tokens out of the first 50 (frequent) rows
    pieces = [torch.randint(0, 50, (4,), generator=gen).tolist() for _ in range(300)]
    rows = _describe_rows(old, pieces, torch.zeros(300, 6), old_count=3000)
    assert torch.allclose(rows.mean(0), old.mean(0), atol=1e-4)
    assert torch.allclose(torch.cov(rows.T), torch.cov(old.T), atol=1e-3)
    same = [pieces[0], list(reversed(pieces[0])), []]  # equal descriptions, equal rows; none: fallback
    rows = _describe_rows(old, pieces[1:] + same, torch.full((302, 6), 7.0), old_count=3000)
    assert torch.allclose(rows[299], rows[300]) and torch.equal(rows[301], torch.full((6,), 7.0))


def test_music_tokens_survive_decode_and_tokenize_to_one_id_each(music):
    model, tok = load_base("tiny")
    expand_vocab(model, tok, music)
    seq = music.track_tokens(music.track_ids[0])
    block = MUSIC_OPEN + "".join(seq) + MUSIC_CLOSE
    ids = tok("play " + block + " now", add_special_tokens=False)["input_ids"]
    assert tok.convert_tokens_to_ids([MUSIC_OPEN, *seq, MUSIC_CLOSE]) == [
        i for i in ids if i >= tok.convert_tokens_to_ids(MUSIC_OPEN)]
    text = tok.decode(ids, skip_special_tokens=True)
    assert block in text
    assert all(not tok.added_tokens_decoder[tok.convert_tokens_to_ids(s)].special for s in seq)


def test_expanded_model_saves_and_reloads_with_plain_transformers(tmp_path, music):
    model, tok = load_base("tiny")
    expand_vocab(model, tok, music, init="describe")
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    m2 = AutoModelForCausalLM.from_pretrained(tmp_path)
    t2 = AutoTokenizer.from_pretrained(tmp_path)
    strings = music_token_strings(music)
    assert t2.convert_tokens_to_ids(strings) == tok.convert_tokens_to_ids(strings)
    assert torch.equal(m2.get_input_embeddings().weight, model.get_input_embeddings().weight)
    assert is_tied(m2)
    m3, t3 = load_base(tmp_path)  # a local folder works as a base model too
    assert len(t3) == len(tok) and t3.chat_template


@pytest.mark.slow
def test_smollm2_alias_converts_once_and_loads_from_cache(music):
    model, tok = load_base("smollm2-135m")
    assert model.config.num_hidden_layers == 30 and is_tied(model)
    assert "<|im_start|>" in tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    old = model.get_input_embeddings().weight[:1000].detach().clone()
    expand_vocab(model, tok, music, init="describe")
    assert torch.equal(model.get_input_embeddings().weight[:1000], old)
    prompt = tok.apply_chat_template([{"role": "user", "content": "Name a jazz song."}],
                                     add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**prompt, max_new_tokens=8, do_sample=False)
    assert out.shape[1] > prompt["input_ids"].shape[1]
