"""Rendering conversations with a loss mask (talkplay.dialogs.render) on real tokenizers."""

from __future__ import annotations

import pytest

from talkplay.catalog import Conversation, Turn
from talkplay.dialogs import RenderConfig, RenderError, render, render_prompt
from talkplay.dialogs.render import render_spans
from talkplay.modalities import MUSIC_CLOSE, MUSIC_OPEN
from talkplay.model import add_music_tokens, load_tokenizer, music_token_strings
from talkplay.tokenizer import MusicTokenizer
from test_dialogs_common import make_run


@pytest.fixture(scope="module")
def music(tmp_path_factory):
    run = make_run(tmp_path_factory.mktemp("render_run"))
    return MusicTokenizer.load(run.tokenizer_dir)


@pytest.fixture(scope="module")
def tok(music):
    t = load_tokenizer("tiny")
    add_music_tokens(t, music)
    return t


def _conv(music) -> Conversation:
    ids = music.track_ids
    profile = {"age": 31, "country": "IE", "conversation_goal": {"listener_goal": "hidden aim"}}
    return Conversation(id="c1", profile=profile, turns=[
        Turn(user="Play some jazz for tonight.", assistant="Here is a calm one.",
             recommended=[ids[0], ids[1]], liked=[ids[0]], disliked=[ids[1]]),
        Turn(user="More like the first one.", assistant="Try this, same mood.", recommended=[ids[2]]),
        Turn(user="What is this? ", assistant="That's Song 3.", extra={"user_tracks": [ids[3]]}),
        Turn(user="Something faster.", assistant="This one moves.", recommended=[ids[4], "not-in-catalog"]),
    ])


def _assistant_music_positions(tok, r):
    """Positions of music tokens that sit inside assistant turns (between header and end)."""
    start = tok.convert_tokens_to_ids("<|im_start|>")
    end = tok.convert_tokens_to_ids("<|im_end|>")
    asst = tok("assistant", add_special_tokens=False)["input_ids"]
    inside, out = False, []
    for p, i in enumerate(r.input_ids):
        if i == start:
            inside = r.input_ids[p + 1: p + 1 + len(asst)] == asst
        elif i == end:
            inside = False
        elif inside and p in set(r.music_positions):
            out.append(p)
    return out


def test_mask_covers_assistant_music_and_reply_not_user_text(tok, music):
    conv = _conv(music)
    r = render(conv, tok, music)
    assert len(r.input_ids) == len(r.loss_mask) and sum(r.loss_mask) > 0
    music_ids = set(tok.convert_tokens_to_ids(music_token_strings(music)))
    # every music token of a (non-rejected) track in an assistant turn is supervised
    in_assistant = _assistant_music_positions(tok, r)
    blocks_expected = 2 + len(music.track_tokens(music.track_ids[0]))
    assert len(in_assistant) == 4 * blocks_expected  # ids[0], ids[1], ids[2], ids[4]; unknown track skipped
    rejected = set(range(in_assistant[blocks_expected], in_assistant[blocks_expected] + blocks_expected))
    for p in in_assistant:
        assert r.loss_mask[p] == (0 if p in rejected else 1)
    # music tokens outside assistant turns (feedback, "what is this?") are context only
    for p in set(r.music_positions) - set(in_assistant):
        assert r.input_ids[p] in music_ids and r.loss_mask[p] == 0
    spans, _ = render_spans(conv, tok, music)
    supervised = "".join(t for t, s in spans if s)
    context = "".join(t for t, s in spans if not s)
    for turn in conv.turns:
        assert turn.user.strip() in context and turn.user.strip() not in supervised
        assert turn.assistant in supervised
    assert supervised.count("<|im_end|>") == len(conv.turns)  # the end-of-turn token is learnt
    assert "Listener profile: age: 31; country: IE" in context
    assert "hidden aim" not in context  # a simulated listener's goal is not the recommender's to see
    assert "Liked: #1.\nDisliked: #2.\nMore like the first one." in context


def test_supervise_disliked_and_reply_first_options(tok, music):
    conv = _conv(music)
    r = render(conv, tok, music, RenderConfig(supervise_disliked=True, tracks_first=False, feedback=False))
    in_assistant = _assistant_music_positions(tok, r)
    assert all(r.loss_mask[p] == 1 for p in in_assistant)
    # with feedback off, the only music outside assistant turns is the "what is this?" track
    assert len(set(r.music_positions) - set(in_assistant)) == 2 + len(music.track_tokens(music.track_ids[3]))
    text = tok.decode(r.input_ids)
    assert "Here is a calm one. " + MUSIC_OPEN in text  # reply, then the tracks


def test_each_music_token_is_exactly_one_id(tok, music):
    for tid in music.track_ids:
        seq = [MUSIC_OPEN, *music.track_tokens(tid), MUSIC_CLOSE]
        ids = tok(" Sure: " + "".join(seq) + " enjoy", add_special_tokens=False)["input_ids"]
        assert [i for i in ids if i in set(tok.convert_tokens_to_ids(seq))] == tok.convert_tokens_to_ids(seq)


def test_render_prompt_is_the_prefix_the_model_continues(tok, music):
    conv = _conv(music)
    prompt = render_prompt(conv, tok, music)
    full = render(conv, tok, music)
    assert full.input_ids[: len(prompt)] == prompt
    nxt = full.input_ids[len(prompt)]
    assert nxt == tok.convert_tokens_to_ids(MUSIC_OPEN)  # the answer starts with a track
    history = render(Conversation("x", conv.turns[:3]), tok, music)
    assert sum(full.loss_mask[: len(prompt)]) == sum(history.loss_mask)
    assert tok.decode(prompt).endswith("Something faster.<|im_end|>\n<|im_start|>assistant\n")


def test_truncation_keeps_whole_recent_turns(tok, music):
    conv = _conv(music)
    full = render(conv, tok, music)
    last_two = render(Conversation("c1", conv.turns[2:], profile=conv.profile), tok, music)
    r = render(conv, tok, music, RenderConfig(max_length=len(last_two.input_ids)))
    assert r.dropped_turns == 2 and r.input_ids == last_two.input_ids
    assert len(r.input_ids) < len(full.input_ids)
    p = render_prompt(conv, tok, music, RenderConfig(max_length=40))
    assert len(p) <= 40


def test_errors_name_the_problem(music):
    plain = load_tokenizer("tiny")
    with pytest.raises(RenderError, match="expand_vocab"):
        render(_conv(music), plain, music)
    with pytest.raises(RenderError, match="no turns"):
        render(Conversation("empty"), plain, music)


def test_templates_with_a_default_system_prompt(music):
    """A SmolLM2-style template (it injects its own system prompt when none is given)."""
    t = load_tokenizer("tiny")
    t.chat_template = (
        "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
        "{{ '<|im_start|>system\nYou are a helpful AI assistant<|im_end|>\n' }}{% endif %}"
        "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
    add_music_tokens(t, music)
    conv = _conv(music)
    spans, r = render_spans(conv, t, music, RenderConfig(system=None, profile=False))
    context = "".join(s for s, sup in spans if not sup)
    assert context.startswith("<|im_start|>system\nYou are a helpful AI assistant")
    assert render(conv, t, music, RenderConfig(system=None, profile=False)).input_ids[
        : len(render_prompt(conv, t, music, RenderConfig(system=None, profile=False)))] == \
        render_prompt(conv, t, music, RenderConfig(system=None, profile=False))


@pytest.mark.slow
def test_smollm2_tokenizer_renders_with_a_mask(music):
    t = load_tokenizer("smollm2-135m")
    add_music_tokens(t, music)
    r = render(_conv(music), t, music)
    assert sum(r.loss_mask) > 0 and len(_assistant_music_positions(t, r)) > 0


def test_feedback_on_a_track_the_answer_did_not_show_is_written_out(tok, music):
    conv = _conv(music)
    r = render(conv, tok, music, RenderConfig(max_tracks=1))
    text = tok.decode(r.input_ids)
    rejected = MUSIC_OPEN + "".join(music.track_tokens(music.track_ids[1])) + MUSIC_CLOSE
    assert "Liked: #1.\nDisliked: " + rejected + ".\nMore like" in text
    assert text.count(rejected) == 1  # not in the answer (max_tracks=1 keeps the liked one)


def test_an_empty_answer_is_not_a_target(tok, music):
    conv = Conversation("e", turns=[
        Turn(user="hello", recommended=["not-in-catalog"]),
        Turn(user="jazz please", assistant="Here.", recommended=[music.track_ids[0]])])
    spans, r = render_spans(conv, tok, music)
    assert [s for s, sup in spans if sup] == [
        MUSIC_OPEN + "".join(music.track_tokens(music.track_ids[0])) + MUSIC_CLOSE + " Here.<|im_end|>"]
