"""The HTTP API against a real `talkplay serve` process on loopback with a tiny trained run.

One server per module (max concurrency 1, queue 4); every hostile input must get a JSON
error with a clear message, and the server must keep serving after each.
"""

from __future__ import annotations

import json
import threading
from urllib.parse import quote

import httpx
import pytest

from conftest import HOSTILE_TITLE

CHAT = "/v1/chat/completions"
HI = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def server(served_url):
    return served_url


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server, timeout=120) as c:
        yield c


def assert_error(r: httpx.Response, status: int, *words: str) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    err = r.json()["error"]
    assert err["message"]
    for w in words:
        assert w.lower() in err["message"].lower(), err
    return err


def assert_alive(http) -> None:
    r = http.get("/health")
    assert r.status_code == 200 and r.json()["status"] == "ok"


# --- health, tracks, recommend --------------------------------------------------------


def test_health_reports_model_and_catalog(http, served_run):
    h = http.get("/health").json()
    assert h["catalog"]["tracks"] > 0
    assert h["model"]["run"] == str(served_run)
    assert h["model"]["name"]
    assert h["queue"]["max_concurrency"] == 1 and h["queue"]["max_queue"] == 4


def test_openapi_schema_lists_endpoints(http):
    paths = http.get("/openapi.json").json()["paths"]
    for p in ("/v1/chat/completions", "/v1/recommend", "/v1/tracks/{track_id}", "/health"):
        assert p in paths


def test_recommend_query_returns_ranked_distinct_catalog_tracks(http):
    r = http.post("/v1/recommend", json={"query": "calm piano music", "k": 5})
    assert r.status_code == 200, r.text
    tracks = r.json()["tracks"]
    ids = [t["id"] for t in tracks]
    assert len(ids) == 5 and len(set(ids)) == 5
    scores = [t["score"] for t in tracks]
    assert scores == sorted(scores, reverse=True)
    assert [t["rank"] for t in tracks] == [1, 2, 3, 4, 5]
    for t in tracks:
        meta = http.get(f"/v1/tracks/{quote(t['id'], safe='')}")
        assert meta.status_code == 200 and meta.json()["title"] == t["title"]
    again = http.post("/v1/recommend", json={"query": "calm piano music", "k": 5, "exclude": ids[:2]}).json()
    assert not set(ids[:2]) & {t["id"] for t in again["tracks"]}


def test_recommend_with_conversation(http):
    msgs = [{"role": "user", "content": "something upbeat"}, {"role": "assistant", "content": "Try these."},
            {"role": "user", "content": "now slower please"}]
    r = http.post("/v1/recommend", json={"messages": msgs, "k": 3})
    assert r.status_code == 200 and len(r.json()["tracks"]) == 3


def test_session_prevents_repeats_and_keeps_feedback(http):
    sid = http.post("/v1/sessions").json()["id"]
    seen: set[str] = set()
    for _ in range(3):
        r = http.post("/v1/recommend", json={"query": "music", "k": 3}, headers={"X-Session-Id": sid})
        assert r.status_code == 200 and r.headers["x-session-id"] == sid
        ids = {t["id"] for t in r.json()["tracks"]}
        assert ids and not ids & seen
        seen |= ids
    liked, rejected = sorted(seen)[:2]
    r = http.post(f"/v1/sessions/{sid}/feedback", json={"track_id": liked, "feedback": "liked"})
    assert r.status_code == 200
    s = http.post(f"/v1/sessions/{sid}/feedback", json={"track_id": rejected, "feedback": "rejected"}).json()
    assert s["liked"] == [liked] and s["rejected"] == [rejected] and set(s["shown"]) == seen
    # the next turn sees the feedback: neither track (nor anything shown) comes back
    r = http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "more"}],
                                                "session_id": sid, "k": 2})
    assert not {t["id"] for t in r.json()["choices"][0]["message"]["tracks"]} & seen
    assert_error(http.post(f"/v1/sessions/{sid}/feedback", json={"track_id": "no-such", "feedback": "liked"}),
                 404, "unknown track")
    assert_error(http.post(f"/v1/sessions/{sid}/feedback", json={"track_id": liked, "feedback": "love"}), 400,
                 "feedback")


def test_session_that_has_heard_everything_gets_an_empty_list_not_an_error(http):
    n = http.get("/health").json()["catalog"]["tracks"]
    sid = http.post("/v1/sessions").json()["id"]
    first = http.post("/v1/recommend", json={"query": "anything", "k": n, "session_id": sid})
    assert len(first.json()["tracks"]) == n
    again = http.post("/v1/recommend", json={"query": "anything", "k": 3, "session_id": sid})
    assert again.status_code == 200 and again.json()["tracks"] == []
    chat = http.post(CHAT, json={"messages": HI, "session_id": sid})
    assert chat.status_code == 200 and "could not find" in chat.json()["choices"][0]["message"]["content"]


# --- OpenAI compatibility ---------------------------------------------------------------


def test_openai_client_chat(server, http):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=server + "/v1", api_key="unused", max_retries=0)
    resp = client.chat.completions.create(
        model="talkplay", messages=[{"role": "system", "content": "You recommend music."},
                                    {"role": "user", "content": "Recommend some calm piano music"}],
        temperature=0.2, max_tokens=64)
    msg = resp.choices[0].message
    assert msg.role == "assistant" and resp.choices[0].finish_reason == "stop"
    tracks = msg.model_extra["tracks"]
    assert len(tracks) == 3
    for t in tracks:
        assert http.get(f"/v1/tracks/{quote(t['id'], safe='')}").status_code == 200
        assert t["title"] in msg.content


def test_openai_client_streaming(server, http):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=server + "/v1", api_key="unused", max_retries=0)
    stream = client.chat.completions.create(
        model="talkplay", messages=[{"role": "user", "content": "Some jazz for tonight"}], stream=True,
        stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    tracks = chunks[0].choices[0].delta.model_extra["tracks"]
    assert len(tracks) == 3
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert all(t["title"] in text for t in tracks)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    assert chunks[-1].usage is not None


def test_raw_sse_ends_with_done(http):
    with http.stream("POST", "/v1/chat/completions",
                     json={"messages": [{"role": "user", "content": "folk songs"}], "stream": True}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        lines = [ln for ln in r.iter_lines() if ln]
    assert lines[-1] == "data: [DONE]"
    objs = [json.loads(ln[6:]) for ln in lines[:-1]]
    assert all(o["object"] == "chat.completion.chunk" for o in objs)


def test_assistant_tracks_echoed_back_are_not_repeated(http):
    first = http.post(CHAT, json={"messages": [{"role": "user", "content": "piano"}]}).json()
    msg = first["choices"][0]["message"]
    ids = {t["id"] for t in msg["tracks"]}
    follow = [{"role": "user", "content": "piano"}, msg, {"role": "user", "content": "more like that"}]
    second = http.post("/v1/chat/completions", json={"messages": follow})
    assert second.status_code == 200, second.text
    assert not ids & {t["id"] for t in second.json()["choices"][0]["message"]["tracks"]}


# --- audio -------------------------------------------------------------------------------


def test_audio_full_and_range_requests(http, served_run):
    from talkplay.catalog import Catalog

    track = next(t for t in Catalog.load(served_run, validate=False).tracks
                 if t.audio and not t.audio.startswith("score:"))
    url = f"/v1/tracks/{quote(track.id, safe='')}/audio"
    full = http.get(url)
    assert full.status_code == 200 and full.headers["content-type"].startswith("audio/")
    assert full.headers.get("accept-ranges") == "bytes"
    data = full.content
    assert data[:4] == b"RIFF" and len(data) > 1000
    part = http.get(url, headers={"Range": "bytes=100-199"})
    assert part.status_code == 206
    assert part.headers["content-range"] == f"bytes 100-199/{len(data)}"
    assert part.content == data[100:200]
    tail = http.get(url, headers={"Range": "bytes=-50"})
    assert tail.status_code == 206 and tail.content == data[-50:]
    bad = http.get(url, headers={"Range": f"bytes={len(data) + 10}-"})
    assert bad.status_code == 416
    assert_alive(http)


def test_score_is_rendered_once_and_served_with_ranges(http, served_run):
    first = http.get("/v1/tracks/t1/audio")
    assert first.status_code == 200, first.text
    assert first.headers["content-type"] == "audio/wav" and first.content[:4] == b"RIFF"
    assert list((served_run / "cache").rglob("*.wav")), "the rendering is cached in the run"
    part = http.get("/v1/tracks/t1/audio", headers={"Range": "bytes=0-43"})
    assert part.status_code == 206 and part.content == first.content[:44]


def test_track_without_audio_and_unknown_tracks(http, served_run):
    from talkplay.catalog import Catalog

    cat = Catalog.load(served_run, validate=False)
    silent = next((t for t in cat.tracks if not t.audio), None)
    if silent is not None:
        assert http.get(f"/v1/tracks/{quote(silent.id, safe='')}").json()["audio_url"] is None
        assert_error(http.get(f"/v1/tracks/{quote(silent.id, safe='')}/audio"), 404, "no audio")
    assert_error(http.get("/v1/tracks/definitely-not-a-track"), 404, "unknown track id")
    assert_error(http.get("/v1/tracks/definitely-not-a-track/audio"), 404, "unknown track id")


@pytest.mark.parametrize("path", [
    "/v1/tracks/..%2F..%2F..%2Fetc%2Fpasswd/audio",
    "/v1/tracks/%2Fetc%2Fpasswd/audio",
    "/v1/tracks/....%2F%2F....%2F%2Fetc%2Fpasswd/audio",
    "/v1/tracks/%252e%252e%252fcatalog.parquet/audio",
    "/v1/tracks/..%5C..%5Cwindows%5Cwin.ini/audio",
])
def test_path_traversal_on_audio_is_refused(http, path):
    r = http.get(path)
    assert r.status_code == 404, r.text
    assert b"root:" not in r.content and b"PAR1" not in r.content
    assert "error" in r.json()
    assert_alive(http)


def test_hostile_title_is_returned_verbatim_as_data(http, served_run):
    from talkplay.catalog import Catalog

    track = next(t for t in Catalog.load(served_run, validate=False).tracks if t.title == HOSTILE_TITLE)
    assert http.get(f"/v1/tracks/{quote(track.id, safe='')}").json()["title"] == HOSTILE_TITLE
    page = http.get("/")
    assert page.status_code == 200 and "script-src 'self'" in page.headers["content-security-policy"]
    assert "http://" not in page.text and "https://" not in page.text  # no external resources


# --- hostile inputs -----------------------------------------------------------------------

HOSTILE = [
    ("malformed JSON", CHAT, b'{"messages": [', 400, "malformed json"),
    ("not an object", CHAT, b"[1, 2, 3]", 400, "object"),
    ("empty body", CHAT, b"", 400, "required"),
    ("unknown field", CHAT, {"messages": HI, "colour": "red"}, 400, "colour"),
    ("unknown message field", CHAT, {"messages": [{**HI[0], "mood": 1}]}, 400, "mood"),
    ("no messages", CHAT, {"messages": []}, 400, "at least one"),
    ("empty message", CHAT, {"messages": [{"role": "user", "content": "   "}]}, 400, "empty"),
    ("last not user", CHAT, {"messages": [{"role": "user", "content": "hi"},
                                          {"role": "assistant", "content": "yo"}]}, 400, "last message"),
    ("bad role", CHAT, {"messages": [{"role": "wizard", "content": "hi"}]}, 400, "role"),
    ("too long", CHAT, {"messages": [{"role": "user", "content": "a" * 501}]}, 400, "limit 500"),
    ("k zero", CHAT, {"messages": HI, "k": 0}, 400, "k must be"),
    ("n two", CHAT, {"messages": HI, "n": 2}, 400, "n=1"),
    ("bad session", CHAT, {"messages": HI, "session_id": "../x y"}, 400,
     "session id"),
    ("unknown exclude", CHAT, {"messages": HI, "exclude": ["nope"]}, 400,
     "unknown track id"),
    ("wrong type", CHAT, {"messages": "hello"}, 400, "messages"),
    ("recommend both", "/v1/recommend", {"query": "x", "messages": [{"role": "user", "content": "y"}]}, 400,
     "exactly one"),
    ("recommend neither", "/v1/recommend", {"k": 3}, 400, "exactly one"),
    ("recommend huge k", "/v1/recommend", {"query": "x", "k": 100000}, 400, "k must be"),
    ("recommend too long", "/v1/recommend", {"query": "b" * 501}, 400, "limit 500"),
    ("recommend unknown field", "/v1/recommend", {"query": "x", "limit": 3}, 400, "limit"),
]


@pytest.mark.parametrize("name,path,body,status,word", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_input_gets_json_error_and_server_keeps_serving(http, name, path, body, status, word):
    if isinstance(body, bytes):
        r = http.post(path, content=body, headers={"Content-Type": "application/json"})
    else:
        r = http.post(path, json=body)
    assert_error(r, status, word)
    assert_alive(http)


def test_oversized_body_and_unknown_endpoint(http):
    big = b'{"messages": [{"role": "user", "content": "' + b"x" * 1_100_000 + b'"}]}'
    assert_error(http.post(CHAT, content=big, headers={"Content-Type": "application/json"}), 413, "limit")
    assert_error(http.get("/v1/nothing-here"), 404, "no such endpoint")
    assert_error(http.get(CHAT), 405, "")
    assert_alive(http)


def test_overload_gets_429_and_health_stays_responsive(server, http):
    """More concurrent requests than 1 worker + 4 queued: the rest get 429, nothing hangs."""
    results: list[int] = []
    health_during: list[dict] = []
    body = {"messages": [{"role": "user", "content": "play me something"}]}

    def hit() -> None:
        with httpx.Client(base_url=server, timeout=300) as c:
            r = c.post(CHAT, json=body)
            if r.status_code == 429:
                assert r.json()["error"]["type"] == "rate_limit_error" and r.headers["retry-after"]
            results.append(r.status_code)

    threads = [threading.Thread(target=hit) for _ in range(16)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        h = http.get("/health", timeout=10)
        assert h.status_code == 200
        health_during.append(h.json()["queue"])
        threads[0].join(0.05)
    for t in threads:
        t.join()
    assert set(results) <= {200, 429} and len(results) == 16
    assert results.count(200) >= 5
    assert 429 in results, "16 simultaneous requests should overflow a queue of 1 + 4"
    assert any(q["running"] >= 1 for q in health_during), "health answered while the model was busy"
    queue = http.get("/health").json()["queue"]
    assert queue["rejected"] >= 1
    assert queue["batch_size"] == 4 and queue["largest_batch"] > 1, "waiting requests shared a batch"
    assert_alive(http)
