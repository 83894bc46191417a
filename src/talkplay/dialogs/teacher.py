"""Rewrite synthetic turns more naturally with any OpenAI-compatible chat endpoint.

``rewrite_conversations(convs, catalog, url="http://localhost:8000/v1", model=None)`` asks
the teacher to reword each turn's user message and reply. A rewrite is kept only when it
is valid JSON with both fields and the reply still names the recommended track's title,
so facts survive; otherwise the template text stays. The original texts are kept in the
turn's ``extra["template"]``.
"""

from __future__ import annotations

import json
import os
from typing import Any

from talkplay.catalog import Catalog, Conversation
from talkplay.errors import TalkPlayError
from talkplay.log import get_logger, progress

log = get_logger(__name__)

SYSTEM = ("You rewrite lines of a conversation between a listener and a music assistant so they "
          "sound natural and varied. Keep the meaning. The reply must keep every fact it states "
          "(song title, artist, album, year, tags) and add none. Answer with JSON only: "
          '{"user": "...", "assistant": "..."}')


class TeacherError(TalkPlayError):
    """The teacher endpoint could not be reached or used."""


def _client(url: str) -> Any:
    try:
        from openai import OpenAI
    except ImportError:
        raise TeacherError("--teacher needs the openai package: pip install openai") from None

    key = os.environ.get("OPENAI_API_KEY") or "none"  # local servers accept any key
    return OpenAI(base_url=url, api_key=key, timeout=60.0, max_retries=1)


def pick_model(client: Any, model: str | None) -> str:
    """The named model, or the endpoint's first listed one."""
    if model:
        return model
    try:
        models = client.models.list().data
    except Exception as e:  # any transport or API failure is the user's endpoint problem
        raise TeacherError(f"cannot list models at the teacher endpoint: {e}") from e
    if not models:
        raise TeacherError("the teacher endpoint lists no models; pass --teacher-model")
    return models[0].id


def _parse(text: str) -> dict[str, str] | None:
    text = text.strip()
    if text.startswith("```"):
        text = text.strip("`")
        text = text[text.find("{"):]
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end < start:
        return None
    try:
        d = json.loads(text[start: end + 1])
    except json.JSONDecodeError:
        return None
    fields = ("user", "assistant")
    if not isinstance(d, dict) or not all(isinstance(d.get(k), str) and d[k].strip() for k in fields):
        return None
    return {"user": d["user"].strip(), "assistant": d["assistant"].strip()}


def rewrite_conversations(convs: list[Conversation], catalog: Catalog, url: str, model: str | None = None,
                          max_conversations: int | None = None) -> dict[str, int]:
    """Reword turns in place; returns ``{"turns", "rewritten", "rejected"}`` counts."""
    client = _client(url)
    name = pick_model(client, model)
    todo = convs if max_conversations is None else convs[:max_conversations]
    stats = {"turns": 0, "rewritten": 0, "rejected": 0}
    for conv in progress(todo, total=len(todo), desc="teacher"):
        for turn in conv.turns:
            stats["turns"] += 1
            titles = [catalog.get(t).title for t in turn.recommended if t in catalog]
            prompt = json.dumps({"user": turn.user, "assistant": turn.assistant}, ensure_ascii=False)
            try:
                resp = client.chat.completions.create(
                    model=name, temperature=0.7, max_tokens=200,
                    messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt}])
            except Exception as e:  # network or server error: tell the user which endpoint failed
                raise TeacherError(f"teacher request to {url} failed: {e}") from e
            got = _parse(resp.choices[0].message.content or "")
            if got is None or any(t not in got["assistant"] for t in titles) or "<|" in got["assistant"]:
                stats["rejected"] += 1
                continue
            turn.extra["template"] = {"user": turn.user, "assistant": turn.assistant}
            turn.user, turn.assistant = got["user"], got["assistant"]
            stats["rewritten"] += 1
    log.info("teacher %s rewrote %d of %d turns", name, stats["rewritten"], stats["turns"])
    return {**stats, "model": name}
