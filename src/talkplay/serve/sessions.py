"""Per-user session state: which tracks were shown, liked and rejected.

``store = SessionStore()``; ``s = store.get_or_create("abc")``; ``store.feedback("abc", tid,
"liked")``. A session keeps feedback so that it shapes the next turn, and remembers every
track it was shown so that the same track is not recommended twice. The store is bounded
(least recently used sessions are dropped) and thread-safe.
"""

from __future__ import annotations

import re
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Literal

SESSION_ID_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
Feedback = Literal["liked", "rejected", "none"]


class BadSessionId(ValueError):
    """A session id with characters or a length the server does not accept."""


@dataclass
class ApiSession:
    """What one session has seen and said: ``session.exclude()`` is what not to repeat."""

    id: str
    created: float = field(default_factory=time.time)
    last_used: float = field(default_factory=time.time)
    shown: list[str] = field(default_factory=list)
    liked: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)

    def exclude(self) -> set[str]:
        """Tracks not to recommend again: everything shown or rejected."""
        return set(self.shown) | set(self.rejected)

    def to_dict(self) -> dict:
        return {"id": self.id, "shown": list(self.shown), "liked": list(self.liked),
                "rejected": list(self.rejected)}


class SessionStore:
    """Thread-safe LRU map of session id -> ApiSession: ``SessionStore(max_sessions=10_000)``."""

    def __init__(self, max_sessions: int = 10_000, ttl_s: float = 24 * 3600) -> None:
        self.max_sessions = max_sessions
        self.ttl_s = ttl_s
        self._sessions: OrderedDict[str, ApiSession] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._sessions)

    @staticmethod
    def check_id(session_id: str) -> str:
        """Return ``session_id`` if acceptable, else raise ``BadSessionId``."""
        if not isinstance(session_id, str) or not SESSION_ID_RE.match(session_id):
            raise BadSessionId(
                "session id must be 1-64 characters of letters, digits, '_', '-', '.' or ':'")
        return session_id

    def new(self) -> ApiSession:
        """Create a session with a fresh random id."""
        return self.get_or_create(secrets.token_urlsafe(16))

    def get(self, session_id: str) -> ApiSession | None:
        with self._lock:
            s = self._sessions.get(session_id)
            if s is not None and time.time() - s.last_used > self.ttl_s:
                del self._sessions[session_id]
                return None
            if s is not None:
                s.last_used = time.time()
                self._sessions.move_to_end(session_id)
            return s

    def get_or_create(self, session_id: str) -> ApiSession:
        self.check_id(session_id)
        s = self.get(session_id)
        if s is not None:
            return s
        with self._lock:
            s = self._sessions.get(session_id)
            if s is None:
                s = ApiSession(session_id)
                self._sessions[session_id] = s
                while len(self._sessions) > self.max_sessions:
                    self._sessions.popitem(last=False)
            return s

    def mark_shown(self, session_id: str, track_ids: list[str]) -> None:
        s = self.get_or_create(session_id)
        with self._lock:
            seen = set(s.shown)
            s.shown.extend(t for t in track_ids if t not in seen)

    def feedback(self, session_id: str, track_id: str, kind: Feedback) -> ApiSession:
        """Record ``liked``/``rejected`` (or clear with ``none``) for a track; the latest wins."""
        s = self.get_or_create(session_id)
        with self._lock:
            s.liked = [t for t in s.liked if t != track_id]
            s.rejected = [t for t in s.rejected if t != track_id]
            if kind == "liked":
                s.liked.append(track_id)
            elif kind == "rejected":
                s.rejected.append(track_id)
        return s

    def delete(self, session_id: str) -> bool:
        with self._lock:
            return self._sessions.pop(session_id, None) is not None
