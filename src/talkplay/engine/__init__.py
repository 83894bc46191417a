"""Ranking, replies, explanations and chat sessions of a trained run.

``from talkplay.engine import Engine``; ``Engine.load(run_dir).respond(conversation, k=3)``.
A content run gets a ``ContentEngine``; a codes run a ``talkplay.codes.CodesEngine``, which
this package does not import.
"""

from talkplay.engine.chat_session import ChatSession
from talkplay.engine.content import ContentEngine
from talkplay.engine.protocol import Engine, EngineConfig, Recommendation, Response
from talkplay.engine.recommender import TalkPlayRecommender
from talkplay.engine.reply import clean_reply
from talkplay.exclusion import session_exclude

__all__ = [
    "ChatSession", "ContentEngine", "Engine", "EngineConfig", "Recommendation", "Response",
    "TalkPlayRecommender", "clean_reply", "session_exclude",
]
