"""The engine on a tiny model trained on a synthetic catalog where the right answer is known."""

from __future__ import annotations

import re

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from synth_run import KEYWORDS, held_out_turns, trained_synth_run
from talkplay.catalog import Conversation, Turn
from talkplay.codes import CodesEngine, TrieConstraint
from talkplay.engine import ChatSession, Engine, EngineConfig, TalkPlayRecommender
from talkplay.engine.protocol import Response
from talkplay.recommender import Recommender

RAW = re.compile(r"<\|/?music\|>|<[a-z]+_(\d{4}|unk)>")


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    return trained_synth_run(tmp_path_factory)


@pytest.fixture(scope="session")
def engine(trained):
    return Engine.load(trained[0].path)


def test_known_answer_hit_at_1_and_loss_falls(trained, engine):
    run, summary = trained
    assert summary["final_loss"] < 0.25 * summary["first_loss"]
    turns = held_out_turns(run)
    hits = [engine.recommend(conv, k=1)[0].track_id == gold for conv, gold in turns]
    assert len(hits) >= 40
    assert sum(hits) / len(hits) >= 0.9


def test_new_token_rows_changed_by_training(trained, engine):
    from talkplay.model import expand_vocab, load_base

    model, tok = load_base("tiny")
    expand_vocab(model, tok, engine.music, init="mean_cov", seed=0)
    ids = sorted(set(engine.vocab.code_ids) | {engine.vocab.open_id, engine.vocab.close_id})
    before = model.get_input_embeddings().weight[ids]
    after = engine.model.get_input_embeddings().weight[ids]
    assert before.shape == after.shape
    changed = (before - after).abs().amax(dim=1) > 1e-3
    assert bool(changed.all())


def test_plain_transformers_greedy_matches_engine(trained, engine):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run, _ = trained
    model = AutoModelForCausalLM.from_pretrained(run.model_dir)
    tok = AutoTokenizer.from_pretrained(run.model_dir)
    n = engine.vocab.seq_len + 2
    for conv, _gold in held_out_turns(run)[:6]:
        prompt = engine.prompt_ids(conv)
        ids = torch.tensor([prompt])
        plain = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False,
                               pad_token_id=tok.pad_token_id)[0, len(prompt):].tolist()
        ours = engine.generate(prompt, max_new_tokens=n)
        assert plain == ours
        music = tok.convert_ids_to_tokens(plain[1:n - 1])
        assert engine.music.decode(music) == engine.recommend(conv, k=1)[0].track_id


def test_constraint_keeps_an_untrained_model_inside_the_catalog(engine):
    from talkplay.model import expand_vocab, load_base

    model, tok = load_base("tiny")
    expand_vocab(model, tok, engine.music)
    raw = CodesEngine(model, tok, engine.music, engine.catalog)
    prompt = raw.prompt_ids(Conversation(id="c", turns=[Turn(user="anything")])) + [raw.vocab.open_id]
    allowed_only = {"t3"}
    exclude = set(raw.vocab.sequences) - allowed_only
    out = raw.generate(prompt, max_new_tokens=raw.vocab.seq_len + 1, exclude=exclude)
    assert raw.vocab.track_of[tuple(out[: raw.vocab.seq_len])] == "t3"
    assert out[raw.vocab.seq_len] == raw.vocab.close_id
    # free generation: every music span is a catalog track, none twice, no stray music tokens
    out = raw.generate(prompt[:-1], max_new_tokens=60)
    spans, i, seq = [], 0, out
    music_ids = set(raw.vocab.code_ids) | {raw.vocab.close_id}
    while i < len(seq):
        if seq[i] == raw.vocab.open_id and i + raw.vocab.seq_len < len(seq):
            spans.append(raw.vocab.track_of[tuple(seq[i + 1:i + 1 + raw.vocab.seq_len])])
            assert seq[i + 1 + raw.vocab.seq_len] == raw.vocab.close_id
            i += raw.vocab.seq_len + 2
            continue
        if seq[i] == raw.vocab.open_id:
            break
        assert seq[i] not in music_ids
        i += 1
    assert len(spans) == len(set(spans))


def test_trie_constraint_prunes_exhausted_prefixes(engine):
    vocab = engine.vocab
    first = next(iter(vocab.sequences.values()))[0]
    under = [t for t, s in vocab.sequences.items() if s[0] == first]
    proc = TrieConstraint(vocab, exclude=under)
    assert first not in proc.allowed_next([vocab.open_id])
    scores = torch.zeros(1, engine.model.config.vocab_size)
    out = proc(torch.tensor([[vocab.open_id]]), scores)
    assert torch.isinf(out[0, first])


def test_exact_and_wide_beam_agree_and_k_is_served(trained, engine):
    conv, _ = held_out_turns(trained[0])[0]
    prompt = engine.prompt_ids(conv)
    n = len(engine.vocab.sequences)
    engine.cfg.method = "exact"
    exact, used = engine.rank_ids(prompt, k=n)
    assert used == "exact"
    engine.cfg.method, engine.cfg.beam_width = "beam", n
    try:
        beam, used = engine.rank_ids(prompt, k=n)
        narrow, _ = engine.rank_ids(prompt, k=5, exclude={exact[0][0]})
    finally:
        engine.cfg.method, engine.cfg.beam_width = "auto", 16
    assert used == "beam"
    assert [t for t, _ in exact] == [t for t, _ in beam]
    assert [s for _, s in exact] == pytest.approx([s for _, s in beam], abs=1e-4)
    assert len({t for t, _ in narrow}) == 5 and exact[0][0] not in {t for t, _ in narrow}


def test_respond_reply_has_no_music_tokens_and_explains(engine):
    conv = Conversation(id="c", turns=[Turn(user="play some jazz music", recommended=["t0"], liked=["t1"],
                                            assistant="Here is Song 0, pure jazz."),
                                       Turn(user="now some reggae")])
    resp = engine.respond(conv, k=3)
    assert isinstance(resp, Response) and len(resp.recommendations) == 3
    assert resp.reply and not RAW.search(resp.reply)
    ids = [r.track_id for r in resp.recommendations]
    assert "t0" not in ids and "t1" not in ids and len(set(ids)) == 3
    assert all("cluster" in r.why for r in resp.recommendations)
    # t2 shares a playlist with the liked t1 in the synthetic catalog
    why_t2 = engine.explainer.why("t2", liked=["t1"])
    assert "playlist" in why_t2 and "Song 1" in why_t2
    items = list(engine.stream_respond(conv, k=2))
    assert [type(x).__name__ for x in items[:2]] == ["Recommendation", "Recommendation"]
    assert all(isinstance(x, str) for x in items[2:])
    assert "".join(items[2:]).strip()


def test_recommender_protocol(trained):
    rec = TalkPlayRecommender(EngineConfig())
    assert isinstance(rec, Recommender)
    rec.fit(trained[0])
    conv = Conversation(id="c", turns=[Turn(user="i want blues")])
    out = rec.recommend(conv, k=10, exclude={"t4"})
    assert len(out) == 10 and len({t for t, _ in out}) == 10 and "t4" not in {t for t, _ in out}
    scores = [s for _, s in out]
    assert scores == sorted(scores, reverse=True)
    full = rec.recommend(conv, k=100)
    assert len(full) == len(rec.engine.vocab.sequences)  # k beyond the catalog gives every track once


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_property_valid_and_never_repeated_within_a_session(engine, data):
    session = ChatSession()
    words = st.sampled_from(KEYWORDS + ["music", "please", "more", "something", "different", "xyz"])
    for _ in range(data.draw(st.integers(1, 4))):
        text = " ".join(data.draw(st.lists(words, min_size=1, max_size=5)))
        k = data.draw(st.integers(1, 5))
        before = session.exclude
        recs = engine.recommend(session.ask(text), k=k)
        ids = [r.track_id for r in recs]
        assert len(ids) == min(k, len(engine.vocab.sequences) - len(before))
        assert len(set(ids)) == len(ids)
        assert all(t in engine.catalog for t in ids)
        assert not set(ids) & before
        session.answer(Response(recs, "ok"))
        action = data.draw(st.sampled_from(["none", "like", "reject"]))
        if action != "none" and ids:
            n = data.draw(st.integers(1, len(ids)))
            (session.like if action == "like" else session.reject)(n)


def test_engine_device_is_chosen_by_config_and_a_bad_name_is_a_clear_error(trained):
    from talkplay.engine.protocol import resolve_device
    from talkplay.errors import InputError

    eng = Engine.load(trained[0].path, EngineConfig(device="cpu"))
    assert next(eng.model.parameters()).device == torch.device("cpu") and eng.device.type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(InputError, match="unknown torch device 'gpu0'"):
        Engine.load(trained[0].path, EngineConfig(device="gpu0"))
