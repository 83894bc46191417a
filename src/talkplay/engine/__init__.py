"""Constrained generation, ranking, replies, explanations and chat sessions.

``from talkplay.engine import Engine``; ``Engine.load(run_dir).respond(conversation, k=3)``.
"""

from talkplay.engine.chat_session import ChatSession
from talkplay.engine.constraint import MusicVocab, TrieConstraint
from talkplay.engine.content import ContentEngine  # registers the loader for content-grounded runs
from talkplay.engine.core import (
    Engine,
    EngineConfig,
    Recommendation,
    Response,
    TalkPlayRecommender,
    clean_reply,
    session_exclude,
)
from talkplay.engine.ranking import rank_tracks

__all__ = [
    "ContentEngine", "Engine", "EngineConfig", "MusicVocab", "Recommendation", "Response", "ChatSession",
    "TalkPlayRecommender", "TrieConstraint", "clean_reply", "rank_tracks", "session_exclude",
]
