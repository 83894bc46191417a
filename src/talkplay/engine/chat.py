"""Terminal front ends over an ``Engine``: one-shot recommendation and the chat loop.

``recommend_once(run_dir, RecommendConfig(query="upbeat dance songs", k=10))`` -> a dict
with the tracks, their "why" and the reply. ``chat_loop(engine, lines, console)`` reads user
lines (an iterator, e.g. ``sys.stdin``), prints track cards and streams each reply; the
commands ``/like N``, ``/reject N``, ``/reset``, ``/help`` and ``/quit`` act on the session.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from talkplay.catalog import Conversation, Turn
from talkplay.engine.chat_session import ChatSession
from talkplay.engine.protocol import Engine, EngineConfig, Recommendation, Response
from talkplay.engine.reply import clean_reply
from talkplay.errors import TalkPlayError

HELP = ("commands: /like N, /reject N (N = card number), /reset (start over), /help, /quit; "
        "anything else is a request")


@dataclass
class RecommendConfig:
    """``talkplay recommend`` settings: the query, how many tracks, ranking method."""

    query: str
    k: int = 10
    method: str = "auto"
    reply_tokens: int = 80

    def validate(self) -> None:
        if not self.query.strip():
            raise TalkPlayError("the query is empty")
        if self.k < 1:
            raise TalkPlayError("--k must be at least 1")


def track_card(engine: Engine, rank: int, rec: Recommendation) -> dict[str, Any]:
    """``track_card(engine, 1, rec)``: a track as JSON, in the shape the HTTP API's
    ``TrackOut`` has (id, title, artists, album, year, tags, score, why, rank; the API adds
    ``audio_url``)."""
    t = engine.catalog.get(rec.track_id) if rec.track_id in engine.catalog else None
    return {"id": rec.track_id, "title": t.title if t else rec.track_id,
            "artists": list(t.artists) if t else [], "album": t.album if t else None,
            "year": t.year if t else None, "tags": list(t.tags) if t else [],
            "score": round(rec.score, 4), "why": rec.why, "rank": rank}


def recommend_once(run_dir: str | Path, cfg: RecommendConfig) -> dict[str, Any]:
    """Load the run's engine and answer one query: ``{"query", "tracks", "reply", "method"}``."""
    cfg.validate()
    engine = Engine.load(run_dir, EngineConfig(method=cfg.method, reply_tokens=cfg.reply_tokens))
    conv = Conversation(id="query", turns=[Turn(user=cfg.query)])
    resp = engine.respond(conv, k=cfg.k)
    return {"query": cfg.query, "tracks": [track_card(engine, i + 1, r) for i, r in
                                           enumerate(resp.recommendations)],
            "reply": resp.reply, "method": resp.method}


def print_cards(console: Console, cards: list[dict[str, Any]]) -> None:
    for c in cards:
        who = ", ".join(c["artists"]) or "unknown artist"
        album = f" · {c['album']}" if c["album"] else ""
        title = escape(c["title"])
        console.print(f"  [bold]{c['rank']}.[/] [bold cyan]{title}[/] — {escape(who)}{escape(album)}",
                      highlight=False)
        if c["why"]:
            console.print(f"     [dim]{escape(c['why'])}[/]", highlight=False)


def _command(session: ChatSession, line: str, console: Console) -> bool:
    """Handle a /command; returns False when the chat should end."""
    name, _, arg = line[1:].partition(" ")
    name = name.lower()
    if name in ("quit", "exit", "q"):
        return False
    if name == "help":
        console.print(HELP)
    elif name == "reset":
        session.reset()
        console.print("[green]started over[/]")
    elif name in ("like", "reject", "dislike"):
        try:
            n = int(arg.strip())
        except ValueError:
            console.print(f"[red]usage: /{name} N[/]")
            return True
        try:
            tid = session.like(n) if name == "like" else session.reject(n)
        except TalkPlayError as e:
            console.print(f"[red]{escape(str(e))}[/]")
            return True
        verb = "liked" if name == "like" else "rejected"
        console.print(f"[green]{verb}[/] {escape(tid)}; it will not come again")
    else:
        console.print(f"[red]unknown command /{escape(name)}[/]; {HELP}")
    return True


def chat_loop(engine: Engine, lines: Iterable[str], console: Console, k: int = 3,
              session: ChatSession | None = None) -> ChatSession:
    """Run the chat over ``lines`` until /quit or end of input; returns the final session."""
    session = session or ChatSession()
    console.print(f"[bold]TalkPlay[/] · {len(engine.catalog):,} tracks · {HELP}")
    it = iter(lines)
    while True:
        console.print("[bold green]you>[/] ", end="")
        try:
            line = next(it)
        except StopIteration:
            console.print()
            break
        line = line.strip()
        if not line:
            continue
        if line.startswith("/"):
            if not _command(session, line, console):
                break
            continue
        conv = session.ask(line)
        recs: list[Recommendation] = []
        chunks: list[str] = []
        console.print("[bold magenta]talkplay>[/]")
        for item in engine.stream_respond(conv, k=k):
            if isinstance(item, Recommendation):
                recs.append(item)
                print_cards(console, [track_card(engine, len(recs), item)])
                continue
            if not chunks:
                console.print("  ", end="")
            chunks.append(item)
            console.print(escape(item), end="", highlight=False, soft_wrap=True)
            console.file.flush()
        console.print()
        session.answer(Response(recs, clean_reply("".join(chunks))))
    return session
