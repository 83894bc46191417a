"""Request and response models of the HTTP API (pydantic; they make the OpenAPI schema).

Requests forbid unknown fields so typos get a clear error, except that the chat request
accepts, and ignores, the standard OpenAI fields TalkPlay has no use for (temperature,
max_tokens, ...) so that existing OpenAI clients work unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from talkplay.errors import InputError


@dataclass
class ServeConfig:
    """Server settings: ``ServeConfig(run_dir=Path("runs/demo"), port=8000)``."""

    run_dir: Path | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    max_concurrency: int = 1  # model calls at once: torch already uses every core for one
    max_queue: int = 32  # admitted requests waiting for a worker (or a batch); beyond that: 429
    # conversations answered in one batch (content-grounded models; 1: one at a time), and how
    # long the first waits for others when the model is idle
    batch_size: int = 16
    batch_wait_ms: float = 10.0
    max_message_chars: int = 2000
    max_messages: int = 64
    max_body_bytes: int = 1_000_000
    default_k: int = 3  # tracks per chat turn
    max_k: int = 50
    request_timeout_s: float = 300.0
    max_sessions: int = 10_000
    cache_dir: Path | None = None  # rendered audio; default run_dir/cache
    reply_tokens: int | None = None  # longest model reply; None = the engine's default

    def validate(self) -> None:
        names = ["max_concurrency", "max_message_chars", "max_messages", "default_k", "max_k", "batch_size"]
        for name in names + (["reply_tokens"] if self.reply_tokens is not None else []):
            if getattr(self, name) < 1:
                raise InputError(f"must be at least 1, got {getattr(self, name)}",
                                 field="--" + name.replace("_", "-"))
        if self.batch_wait_ms < 0:
            raise InputError(f"must not be negative, got {self.batch_wait_ms}", field="--batch-wait-ms")
        if self.max_queue < 0:
            raise InputError(f"must not be negative, got {self.max_queue}", field="--max-queue")
        if not 0 <= self.port <= 65535:
            raise InputError(f"must be a TCP port (0-65535), got {self.port}", field="--port")


# --- shared -------------------------------------------------------------------------


class TrackOut(BaseModel):
    """A recommended (or looked-up) track as the API returns it."""

    id: str
    title: str
    artists: list[str] = Field(default_factory=list)
    album: str | None = None
    year: int | None = None
    tags: list[str] = Field(default_factory=list)
    score: float | None = None
    why: str | None = None
    rank: int | None = None
    audio_url: str | None = Field(None, description="Where to stream audio; null when the track has none.")


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


# --- chat completions (OpenAI-compatible) -------------------------------------------


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class TrackRef(BaseModel):
    """A track echoed back in an assistant message: only ``id`` is read."""

    model_config = ConfigDict(extra="allow")
    id: str


class ChatMessage(BaseModel):
    """One message; assistant messages may carry back the ``tracks`` the server returned."""

    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tracks: list[TrackRef] | None = None
    # standard OpenAI message fields, accepted and ignored
    refusal: Any = None
    annotations: Any = None
    audio: Any = None
    function_call: Any = None
    tool_calls: Any = None
    tool_call_id: Any = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "\n".join(p.text or "" for p in self.content if p.type == "text")


class ChatCompletionRequest(BaseModel):
    """``POST /v1/chat/completions``; ``session_id``, ``k`` and ``exclude`` are extensions."""

    model_config = ConfigDict(extra="forbid")
    messages: list[ChatMessage] = Field(..., description="The conversation; the last one is the user's.")
    model: str | None = None
    stream: bool = False
    n: int = 1
    session_id: str | None = Field(None, description="Keeps feedback and prevents repeats.")
    k: int | None = Field(None, description="How many tracks to recommend (default from the server).")
    exclude: list[str] = Field(default_factory=list, description="Track ids never to recommend.")
    # standard OpenAI fields, accepted and ignored
    stream_options: Any = None
    temperature: Any = None
    top_p: Any = None
    stop: Any = None
    max_tokens: Any = None
    max_completion_tokens: Any = None
    presence_penalty: Any = None
    frequency_penalty: Any = None
    logit_bias: Any = None
    logprobs: Any = None
    top_logprobs: Any = None
    user: Any = None
    seed: Any = None
    response_format: Any = None
    tools: Any = None
    tool_choice: Any = None
    parallel_tool_calls: Any = None
    functions: Any = None
    function_call: Any = None
    metadata: Any = None
    store: Any = None
    service_tier: Any = None
    modalities: Any = None
    audio: Any = None
    prediction: Any = None
    reasoning_effort: Any = None
    web_search_options: Any = None
    prompt_cache_key: Any = None
    safety_identifier: Any = None
    verbosity: Any = None


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str
    tracks: list[TrackOut] = Field(default_factory=list)


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: str = "stop"
    logprobs: None = None


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class ModelCard(BaseModel):
    """One entry of ``GET /v1/models`` in the OpenAI shape."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "talkplay"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage = Field(default_factory=Usage)
    session_id: str | None = None


# --- recommend, tracks, sessions ----------------------------------------------------


class RecommendRequest(BaseModel):
    """``POST /v1/recommend``: give ``query`` or ``messages`` (not both)."""

    model_config = ConfigDict(extra="forbid")
    query: str | None = Field(None, description="A single request, e.g. 'calm piano for reading'.")
    messages: list[ChatMessage] | None = None
    k: int = Field(10, description="How many tracks.")
    exclude: list[str] = Field(default_factory=list)
    session_id: str | None = None


class RecommendResponse(BaseModel):
    object: Literal["recommendation.list"] = "recommendation.list"
    model: str
    session_id: str | None = None
    tracks: list[TrackOut]


class SessionOut(BaseModel):
    id: str
    shown: list[str]
    liked: list[str]
    rejected: list[str]


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    track_id: str
    feedback: Literal["liked", "rejected", "none"]


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    version: str
    model: dict[str, Any]
    catalog: dict[str, Any]
    queue: dict[str, int]
    sessions: int
