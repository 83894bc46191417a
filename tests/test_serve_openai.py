"""The official ``openai`` client against a real `talkplay serve` of the tiny trained run:
``models.list()``, ``models.retrieve()``, chat with and without ``stream=True``, usage counts."""

from __future__ import annotations

import pytest

openai = pytest.importorskip("openai")


@pytest.fixture(scope="module")
def client(served_url):
    return openai.OpenAI(base_url=served_url + "/v1", api_key="unused", max_retries=0, timeout=120)


def test_models_list_and_retrieve_in_the_openai_shape(client):
    models = list(client.models.list())
    assert len(models) == 1
    m = models[0]
    assert m.object == "model" and m.id.startswith("talkplay") and m.owned_by == "talkplay"
    assert isinstance(m.created, int) and m.created > 0
    assert client.models.retrieve(m.id).id == m.id
    with pytest.raises(openai.NotFoundError, match="unknown model"):
        client.models.retrieve("gpt-4o")


def test_chat_through_the_listed_model_counts_usage(client):
    model = next(iter(client.models.list())).id
    resp = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "calm piano music please"}])
    assert resp.object == "chat.completion" and resp.model == model
    msg = resp.choices[0].message
    assert msg.role == "assistant" and msg.content and len(msg.model_extra["tracks"]) == 3
    u = resp.usage
    assert u.prompt_tokens > 5 and u.completion_tokens >= 1
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens


def test_stream_ends_with_usage_matching_the_unstreamed_answer(client):
    messages = [{"role": "user", "content": "some loud rock"}]
    whole = client.chat.completions.create(model="talkplay", messages=messages)
    chunks = list(client.chat.completions.create(model="talkplay", messages=messages, stream=True,
                                                 stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content  # temperature 0: the same answer
    usage = chunks[-1].usage
    assert not chunks[-1].choices and usage is not None
    assert usage.model_dump() == whole.usage.model_dump()
    # without include_usage no usage chunk, as in the OpenAI API
    plain = list(client.chat.completions.create(model="talkplay", messages=messages, stream=True))
    assert all(c.usage is None for c in plain) and plain[-1].choices[0].finish_reason == "stop"
