"""TalkPlay: conversational music recommendation as token generation in one language model."""

__version__ = "0.1.0"
