"""Constrained generation, ranking, replies, explanations and chat sessions.

``from talkplay.engine import Engine``; ``Engine.load(run_dir).respond(conversation, k=3)``.
"""

from talkplay.engine.chat_session import ChatSession
from talkplay.engine.constraint import ConstraintState, MusicVocab, TrieConstraint
from talkplay.engine.content import ContentEngine  # registers the loader for content-grounded runs
from talkplay.engine.core import (
    Engine,
    EngineConfig,
    Recommendation,
    Response,
    TalkPlayRecommender,
    clean_reply,
)
from talkplay.engine.ranking import rank_tracks
from talkplay.exclusion import session_exclude

__all__ = [
    "ChatSession", "ConstraintState", "ContentEngine", "Engine", "EngineConfig", "MusicVocab",
    "Recommendation", "Response", "TalkPlayRecommender", "TrieConstraint", "clean_reply", "rank_tracks",
    "session_exclude",
]
