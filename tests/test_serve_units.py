"""The serving parts that need no model: bounded work queue, sessions, message conversion."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from talkplay.serve.api import ChatMessage, ServeConfig
from talkplay.serve.convert import RequestProblem, check_messages, compose, to_conversation
from talkplay.serve.sessions import BadSessionId, SessionStore
from talkplay.serve.workqueue import Busy, WorkQueue


def test_work_queue_admits_concurrency_plus_queue_then_refuses():
    release = threading.Event()

    async def main() -> list:
        q = WorkQueue(max_concurrency=1, max_queue=2)
        tasks = [asyncio.ensure_future(q.run(release.wait, 10)) for _ in range(3)]
        await asyncio.sleep(0.05)
        with pytest.raises(Busy, match="limit 3"):
            await q.run(release.wait, 10)
        stats = q.stats()
        assert stats["running"] == 1 and stats["waiting"] == 2 and stats["rejected"] == 1
        release.set()
        out = await asyncio.gather(*tasks)
        assert q.stats()["running"] == 0 and q.stats()["waiting"] == 0
        await q.run(lambda: None)  # capacity is back
        q.shutdown()
        return out

    assert asyncio.run(main()) == [True, True, True]


def test_work_queue_stream_yields_items_errors_and_releases():
    async def main() -> None:
        q = WorkQueue(max_concurrency=1, max_queue=0)
        got = [x async for x in q.stream(lambda: iter(["a", "b", "c"]))]
        assert got == ["a", "b", "c"]

        def broken():
            yield "x"
            raise ValueError("boom")

        with pytest.raises(ValueError, match="boom"):
            async for _ in q.stream(broken):
                pass
        assert q.stats()["running"] == 0
        await q.run(lambda: None)  # the failed stream released its slot
        q.shutdown()

    asyncio.run(main())


def test_session_store_feedback_shown_and_bounds():
    store = SessionStore(max_sessions=2)
    s = store.get_or_create("a")
    store.mark_shown("a", ["t1", "t2"])
    store.mark_shown("a", ["t2", "t3"])
    assert s.shown == ["t1", "t2", "t3"]
    store.feedback("a", "t1", "liked")
    store.feedback("a", "t1", "rejected")  # the latest wins
    assert s.liked == [] and s.rejected == ["t1"] and s.exclude() == {"t1", "t2", "t3"}
    store.feedback("a", "t1", "none")
    assert s.rejected == []
    store.get_or_create("b")
    store.get_or_create("c")  # evicts the least recently used
    assert len(store) == 2 and store.get("a") is None
    for bad in ("", "a b", "../etc", "x" * 65):
        with pytest.raises(BadSessionId):
            store.get_or_create(bad)


def test_messages_become_turns_with_feedback():
    store = SessionStore()
    s = store.get_or_create("s")
    store.feedback("s", "t2", "liked")
    store.feedback("s", "t9", "rejected")
    msgs = [ChatMessage(role="system", content="be brief"), ChatMessage(role="user", content="jazz"),
            ChatMessage(role="assistant", content="here", tracks=[{"id": "t1"}, {"id": "t2"}]),
            ChatMessage(role="user", content=[{"type": "text", "text": "more"}])]
    conv = to_conversation(msgs, s)
    assert [t.user for t in conv.turns] == ["jazz", "more"]
    assert conv.turns[0].recommended == ["t1", "t2"] and conv.turns[0].liked == ["t2"]
    assert conv.turns[0].disliked == ["t9"]  # not shown in this conversation: the latest finished turn
    assert conv.turns[1].assistant == "" and conv.extra["system"] == "be brief"


@pytest.mark.parametrize("msgs,word", [
    ([], "at least one"),
    ([ChatMessage(role="user", content="  ")], "empty"),
    ([ChatMessage(role="user", content="x" * 11)], "limit 10"),
    ([ChatMessage(role="user", content="a"), ChatMessage(role="assistant", content="b")], "last message"),
])
def test_check_messages_rejects(msgs, word):
    with pytest.raises(RequestProblem, match=word):
        check_messages(msgs, max_chars=10, max_messages=5)


def test_compose_and_config_validation():
    assert compose("", []).startswith("I could not find")
    from talkplay.errors import InputError

    with pytest.raises(InputError, match="max-queue"):
        ServeConfig(max_queue=-1).validate()
    with pytest.raises(InputError, match="max-concurrency"):
        ServeConfig(max_concurrency=0).validate()
    with pytest.raises(InputError, match="batch-size"):
        ServeConfig(batch_size=0).validate()
    with pytest.raises(InputError, match="batch-wait-ms"):
        ServeConfig(batch_wait_ms=-1).validate()


def test_serve_cli_reports_missing_run_and_bad_flags(tmp_path):
    from typer.testing import CliRunner

    from talkplay.cli import app
    from talkplay.errors import TalkPlayError

    r = CliRunner().invoke(app, ["serve", str(tmp_path / "nope"), "--port", "0"])
    assert isinstance(r.exception, TalkPlayError) and "does not exist" in str(r.exception)
    r = CliRunner().invoke(app, ["serve", str(tmp_path), "--max-queue", "-1"])
    assert isinstance(r.exception, TalkPlayError) and "--max-queue" in str(r.exception)


def test_batched_work_queue_gathers_waiting_jobs_takes_newcomers_and_drops_leavers():
    """A fake batch function: each job is a dict; it yields one item per step per job, asks
    ``more`` between steps, and ends a job after its ``steps``."""
    batches: list[list[str]] = []
    joined: list[str] = []
    gate = threading.Event()

    def batch_fn(jobs, more):
        batches.append([j["name"] for j in jobs])
        live = list(jobs)
        while live:
            gate.wait(5)
            time.sleep(0.01)  # a decode step
            for j in more():
                joined.append(j["name"])
                live.append(j)
            for j in list(live):
                if j.cancelled:
                    live.remove(j)
                    yield j, "gone", True
                    continue
                if j["name"] == "bad":
                    raise ValueError("boom")
                step = j["at"] = j.get("at", -1) + 1
                yield j, step, step + 1 >= j["steps"]
                if step + 1 >= j["steps"]:
                    live.remove(j)

    class Job(dict):
        cancelled = False

    async def main() -> None:
        q = WorkQueue(max_queue=1, batch_fn=batch_fn, batch_size=3, batch_wait_s=0.05)
        assert q.capacity == 4
        a, b = Job(name="a", steps=3), Job(name="b", steps=1)
        run_a = asyncio.ensure_future(collect(q.submit(a)))
        run_b = asyncio.ensure_future(collect(q.submit(b)))
        await asyncio.sleep(0.2)  # the wait bound has passed: a and b are one batch
        c = Job(name="c", steps=2)
        run_c = asyncio.ensure_future(collect(q.submit(c)))
        await asyncio.sleep(0.05)
        gate.set()
        assert await run_a == [0, 1, 2] and await run_b == [0] and await run_c == [0, 1]
        assert batches == [["a", "b"]] and joined == ["c"]  # c joined the running batch
        # a leaver: its row is dropped and its slot freed
        gate.clear()
        d = Job(name="d", steps=10_000)
        it = q.submit(d)
        gate.set()
        assert await it.__anext__() == 0
        await it.aclose()
        assert d.cancelled
        # an error reaches every job still in the batch; the queue keeps serving
        with pytest.raises(ValueError, match="boom"):
            await collect(q.submit(Job(name="bad", steps=3)))
        assert await collect(q.submit(Job(name="e", steps=1))) == [0]
        s = q.stats()
        assert s["running"] == 0 and s["waiting"] == 0 and s["largest_batch"] == 3 and s["batch_size"] == 3
        q.shutdown()

    async def collect(it) -> list:
        return [x async for x in it]

    asyncio.run(main())
