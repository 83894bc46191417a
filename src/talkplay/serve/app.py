"""The HTTP server: ``app = create_app(Engine.load(run_dir), ServeConfig(run_dir=run_dir))``.

Routes: ``POST /v1/chat/completions`` (OpenAI-compatible, SSE with ``stream: true``),
``POST /v1/recommend``, ``GET /v1/tracks/{id}``, ``GET /v1/tracks/{id}/audio`` (range
requests), sessions with feedback, ``GET /health``, and the web page at ``/``. Model
calls run in a bounded ``WorkQueue`` off the event loop; every error is JSON in the
OpenAI shape ``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from talkplay import __version__
from talkplay.catalog import Conversation, Track
from talkplay.errors import TalkPlayError
from talkplay.exclusion import session_exclude
from talkplay.log import get_logger
from talkplay.run import Run
from talkplay.serve import convert
from talkplay.serve.api import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionRequest,
    ChatMessage,
    Choice,
    ErrorResponse,
    FeedbackRequest,
    Health,
    ModelCard,
    ModelList,
    RecommendRequest,
    RecommendResponse,
    ServeConfig,
    SessionOut,
    TrackOut,
    Usage,
)
from talkplay.serve.audio import AudioFiles, NoAudio, media_type
from talkplay.serve.convert import RequestProblem
from talkplay.serve.sessions import ApiSession, BadSessionId, SessionStore
from talkplay.serve.workqueue import Busy, WorkQueue

log = get_logger(__name__)
STATIC = Path(__file__).parent / "static"
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "media-src 'self' blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
       "frame-ancestors 'none'; form-action 'self'")
ERRORS: dict = {c: {"model": ErrorResponse} for c in (400, 404, 413, 429, 503)}
ERROR_TYPES = {400: "invalid_request_error", 404: "not_found_error", 405: "invalid_request_error",
               413: "invalid_request_error", 416: "invalid_request_error", 429: "rate_limit_error",
               503: "server_busy_error", 500: "server_error"}


def error(status: int, message: str, param: str | None = None, headers: dict | None = None) -> JSONResponse:
    body = {"error": {"message": message, "type": ERROR_TYPES.get(status, "error"), "param": param,
                      "code": None}}
    return JSONResponse(body, status_code=status, headers=headers)


class ApiError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param = status, message, param


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    errs = exc.errors()
    if not errs:
        return "invalid request", None
    e = errs[0]
    loc = [str(x) for x in e.get("loc", ()) if x != "body"]
    param = ".".join(loc) or None
    kind = e.get("type", "")
    if kind == "json_invalid":
        ctx = e.get("ctx") or {}
        return f"malformed JSON body: {ctx.get('error', e.get('msg'))}", None
    if kind == "extra_forbidden":
        return f"unknown field '{param}'", param
    if kind == "missing":
        if not loc:
            return "request body is required (a JSON object)", None
        return f"field '{param}' is required", param
    if not loc and kind in ("model_attributes_type", "dict_type"):
        return "request body must be a JSON object", None
    more = f" (and {len(errs) - 1} more problems)" if len(errs) > 1 else ""
    return f"{param or 'body'}: {e.get('msg', 'invalid value')}{more}", param


def _model_info(engine: Any, cfg: ServeConfig) -> dict[str, Any]:
    info: dict[str, Any] = {"engine": type(engine).__name__}
    for attr in ("name", "model_name"):
        v = getattr(engine, attr, None)
        if isinstance(v, str):
            info[attr] = v
    if cfg.run_dir is not None:
        run = Run(cfg.run_dir)
        info["run"] = str(cfg.run_dir)
        info["path"] = str(run.model_dir)
        train = run.stage("train")
        tcfg = train.get("config") if isinstance(train.get("config"), dict) else {}
        base = tcfg.get("base_model") or train.get("base_model")
        if isinstance(base, str):
            info["base_model"] = base
        for key, out in (("steps", "steps"), ("kept_layers", "kept_layers"), ("lora", "lora"),
                         ("updated", "trained")):
            value = train.get(key, tcfg.get(key))
            if isinstance(value, (str, int, float, bool)):
                info[out] = value
    # "talkplay-<base>" names the served model the way OpenAI clients expect a model id
    base = info.get("base_model")
    info["name"] = info.get("name") or info.get("model_name") or (
        f"talkplay-{Path(base).name}" if base else "talkplay")
    return info


def _created(info: dict[str, Any]) -> int:
    """When the served model was written (its folder's time), else now: ``ModelCard.created``."""
    path = Path(info["path"]) if "path" in info else None
    return int(path.stat().st_mtime) if path is not None and path.exists() else int(time.time())


def usage_for(engine: Any, conversation: Conversation, reply: str) -> Usage:
    """Token counts as the OpenAI API reports them: the rendered conversation the model read
    (``prompt_tokens``) and the reply it wrote (``completion_tokens``; the track list the
    server appends is not the model's writing)."""
    prompt = engine.prompt(conversation).ids if hasattr(engine, "prompt") else engine.prompt_ids(conversation)
    written = len(engine.tokenizer(reply, add_special_tokens=False)["input_ids"]) if reply else 0
    return Usage(prompt_tokens=len(prompt), completion_tokens=written, total_tokens=len(prompt) + written)


def _batches(engine: Any) -> bool:
    from talkplay.engine.batch import supports_batching  # torch: the engine is loaded already

    return supports_batching(engine)


def _batch_fn(engine: Any):
    """The work queue's batch function over ``talkplay.engine.batch.stream_batch``."""
    from talkplay.engine.batch import Finished, stream_batch

    def run(jobs: list, more):
        for req, item in stream_batch(engine, jobs, more):
            yield req, item, isinstance(item, Finished)

    return run


def _usage(done: Any) -> Usage:
    """``Usage`` from a batch's ``Finished`` item."""
    p, c = done.prompt_tokens, done.completion_tokens
    return Usage(prompt_tokens=p, completion_tokens=c, total_tokens=p + c)


@dataclass
class Prepared:
    """A checked conversation request: what the engine answers and the session it belongs to."""

    conversation: Conversation
    k: int
    exclude: set[str]
    session: ApiSession | None


class Service:
    """What the routes share: ``Service(engine, cfg)`` holds the catalog, sessions, work queue
    and audio files, and the checks every request goes through (``ApiError`` on bad input)."""

    def __init__(self, engine: Any, cfg: ServeConfig) -> None:
        self.engine, self.cfg = engine, cfg
        self.catalog = engine.catalog
        self.model_info = _model_info(engine, cfg)
        self.model_name = str(self.model_info.get("name"))
        self.model_card = ModelCard(id=self.model_name, created=_created(self.model_info))
        self.sessions = SessionStore(max_sessions=cfg.max_sessions)
        self.batched = cfg.batch_size > 1 and _batches(engine)
        self.queue = WorkQueue(cfg.max_concurrency, cfg.max_queue, cfg.request_timeout_s,
                               batch_fn=_batch_fn(engine) if self.batched else None,
                               batch_size=cfg.batch_size if self.batched else 1,
                               batch_wait_s=cfg.batch_wait_ms / 1000)
        cache_dir = cfg.cache_dir or (Run(cfg.run_dir).cache_dir if cfg.run_dir else None)
        self.audio = AudioFiles(cache_dir)
        self.with_audio = sum(1 for t in self.catalog.tracks if convert.audio_available(t))

    def session_for(self, field: str | None, header: str | None) -> ApiSession | None:
        if field and header and field != header:
            raise ApiError(400, "session_id field and X-Session-Id header disagree", "session_id")
        sid = field or header
        return self.sessions.get_or_create(sid) if sid else None

    def check_k(self, k: int, param: str = "k") -> int:
        if not 1 <= k <= self.cfg.max_k:
            raise ApiError(400, f"k must be between 1 and {self.cfg.max_k}, got {k}", param)
        return k

    def check_ids(self, ids: list[str], param: str) -> set[str]:
        unknown = [t for t in ids if t not in self.catalog.index]
        if unknown:
            shown = ", ".join(repr(t[:80]) for t in unknown[:5])
            raise ApiError(400, f"unknown track id(s) in {param}: {shown}", param)
        return set(ids)

    def get_track(self, track_id: str) -> Track:
        track = convert.find_track(self.catalog, track_id)
        if track is None:
            raise ApiError(404, f"unknown track id: {track_id[:200]!r}", "track_id")
        return track

    def prepare(self, messages: list[ChatMessage], k: int, exclude: list[str], session_id: str | None,
                header: str | None) -> Prepared:
        """Check a request's messages, ``k``, ``exclude`` ids and session (in that order), and
        build the conversation with the session's feedback and every track not to repeat."""
        convert.check_messages(messages, self.cfg.max_message_chars, self.cfg.max_messages)
        k = self.check_k(k)
        asked = self.check_ids(exclude, "exclude")
        session = self.session_for(session_id, header)
        conv = convert.to_conversation(messages, session)
        return Prepared(conv, k, session_exclude(conv, asked, session.exclude() if session else ()), session)

    def _job(self, req: Prepared, reply: bool) -> Any:
        from talkplay.engine.batch import BatchRequest

        return BatchRequest(req.conversation, req.k, req.exclude, reply)

    async def recommend(self, req: Prepared) -> list:
        """The engine's ranking for a prepared request (in a batch when the server batches)."""
        if not self.batched:
            return await self.queue.run(self.engine.recommend, req.conversation, req.k, req.exclude)
        return [r async for item in self.queue.submit(self._job(req, False))
                if isinstance(item, list) for r in item]

    async def respond(self, req: Prepared) -> tuple[list, str, Usage]:
        """The engine's answer to a prepared chat request: (recommendations, reply, usage)."""
        if self.batched:
            from talkplay.engine.reply import clean_reply

            recs: list = []
            chunks: list[str] = []
            usage = Usage()
            async for item in self.queue.submit(self._job(req, True)):
                if isinstance(item, list):
                    recs = item
                elif isinstance(item, str):
                    chunks.append(item)
                else:
                    usage = _usage(item)
            return recs, clean_reply("".join(chunks)), usage

        def work() -> tuple[list, str, Usage]:
            resp = self.engine.respond(req.conversation, req.k, req.exclude)
            return resp.recommendations, resp.reply, usage_for(self.engine, req.conversation, resp.reply)

        return await self.queue.run(work)

    def stream(self, req: Prepared):
        """The answer as it is written: recommendations, reply text chunks, then its ``Usage``.
        Admission (``Busy``) is decided here, before a streaming response starts."""
        def work():
            from talkplay.engine.reply import clean_reply  # torch: only once a model answers

            chunks: list[str] = []
            for item in self.engine.stream_respond(req.conversation, req.k, req.exclude):
                if isinstance(item, str):
                    chunks.append(item)
                yield item
            yield usage_for(self.engine, req.conversation, clean_reply("".join(chunks)))

        self.queue.reserve()
        if not self.batched:
            return self.queue.stream(work, reserved=True)
        items = self.queue.submit(self._job(req, True), reserved=True)

        async def batched():
            try:
                async for item in items:
                    yield item if isinstance(item, (list, str)) else _usage(item)
            finally:
                await items.aclose()  # a listener who left: the batch drops the row

        return batched()

    def shown(self, session: ApiSession | None, tracks: list[TrackOut]) -> None:
        if session:
            self.sessions.mark_shown(session.id, [t.id for t in tracks])


def session_headers(s: ApiSession | None) -> dict[str, str]:
    return {"X-Session-Id": s.id} if s else {}


def create_app(engine: Any, cfg: ServeConfig | None = None) -> FastAPI:
    """Build the FastAPI app over a loaded engine (anything with the ``Engine`` methods)."""
    cfg = cfg or ServeConfig()
    cfg.validate()
    svc = Service(engine, cfg)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        svc.queue.shutdown()

    app = FastAPI(title="TalkPlay", version=__version__, docs_url=None, redoc_url=None, lifespan=lifespan,
                  description="Conversational music recommendation: OpenAI-compatible chat, "
                              "ranked recommendations, track metadata and audio.")
    app.state.engine, app.state.queue, app.state.sessions = engine, svc.queue, svc.sessions
    add_error_handlers(app, cfg)
    add_guard(app, cfg)
    add_page_routes(app, svc)
    add_model_routes(app, svc)
    add_track_routes(app, svc)
    add_session_routes(app, svc)
    add_recommend_route(app, svc)
    add_chat_route(app, svc)
    return app


def add_error_handlers(app: FastAPI, cfg: ServeConfig) -> None:
    """Errors are always JSON in the OpenAI shape, never a traceback to the client."""

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        msg, param = _validation_message(exc)
        return error(400, msg, param)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        msg = exc.detail if isinstance(exc.detail, str) else "request failed"
        if exc.status_code == 404 and msg == "Not Found":
            msg = f"no such endpoint: {request.method} {request.url.path}"
        return error(exc.status_code, msg, headers=getattr(exc, "headers", None))

    @app.exception_handler(ApiError)
    async def _api(request: Request, exc: ApiError) -> JSONResponse:
        return error(exc.status, exc.message, exc.param)

    @app.exception_handler(RequestProblem)
    async def _problem(request: Request, exc: RequestProblem) -> JSONResponse:
        return error(exc.status, str(exc), exc.param)

    @app.exception_handler(BadSessionId)
    async def _bad_session(request: Request, exc: BadSessionId) -> JSONResponse:
        return error(400, str(exc), "session_id")

    @app.exception_handler(Busy)
    async def _busy(request: Request, exc: Busy) -> JSONResponse:
        return error(429, str(exc), headers={"Retry-After": "1"})

    @app.exception_handler(TimeoutError)
    async def _timeout(request: Request, exc: TimeoutError) -> JSONResponse:
        return error(503, f"the model did not answer within {cfg.request_timeout_s:.0f} s; retry later")

    @app.exception_handler(TalkPlayError)
    async def _talkplay(request: Request, exc: TalkPlayError) -> JSONResponse:
        return error(400, str(exc))

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error on %s %s", request.method, request.url.path)
        return error(500, f"internal error ({type(exc).__name__}); the server keeps running")


def add_guard(app: FastAPI, cfg: ServeConfig) -> None:
    """Refuse oversized bodies before reading them; security headers on every response."""

    @app.middleware("http")
    async def _guard(request: Request, call_next):
        length = request.headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                return error(400, "invalid Content-Length header")
            if int(length) > cfg.max_body_bytes:
                return error(413, f"request body is {int(length):,} bytes (limit {cfg.max_body_bytes:,})")
        response = await call_next(request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        if response.headers.get("content-type", "").startswith("text/html"):
            response.headers["Content-Security-Policy"] = CSP
            response.headers["Referrer-Policy"] = "no-referrer"
        return response


def add_page_routes(app: FastAPI, svc: Service) -> None:
    """``GET /health``, the web page at ``/`` and its static files."""

    @app.get("/health", response_model=Health, tags=["service"])
    async def health() -> Health:
        """Model and catalog in use, queue state; answers even while the model is busy."""
        return Health(version=__version__, model=svc.model_info,
                      catalog={"tracks": len(svc.catalog), "with_audio": svc.with_audio},
                      queue=svc.queue.stats(), sessions=len(svc.sessions))

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html; charset=utf-8",
                            headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")


def add_model_routes(app: FastAPI, svc: Service) -> None:
    """``GET /v1/models`` and ``GET /v1/models/{id}``: what OpenAI clients ask first."""

    @app.get("/v1/models", response_model=ModelList, tags=["models"])
    async def list_models() -> ModelList:
        """The one served model, as OpenAI's ``models.list()`` reads it."""
        return ModelList(data=[svc.model_card])

    @app.get("/v1/models/{model_id:path}", response_model=ModelCard, tags=["models"], responses=ERRORS)
    async def get_model(model_id: str) -> ModelCard:
        if model_id != svc.model_card.id:
            raise ApiError(404, f"unknown model: {model_id[:200]!r} (this server serves "
                                f"{svc.model_card.id!r})", "model")
        return svc.model_card


def add_track_routes(app: FastAPI, svc: Service) -> None:
    """``GET /v1/tracks/{id}`` and ``GET|HEAD /v1/tracks/{id}/audio``."""

    @app.api_route("/v1/tracks/{track_id:path}/audio", methods=["GET", "HEAD"], tags=["tracks"],
                   responses={200: {"content": {"audio/wav": {}}}, 206: {"description": "Partial content"},
                              404: {"model": ErrorResponse}, 416: {"model": ErrorResponse}})
    async def track_audio(track_id: str, request: Request):
        """Stream the track's audio; honours ``Range: bytes=...`` (206 + Content-Range)."""
        track = svc.get_track(track_id)
        try:  # rendering a score takes seconds of CPU: it queues like model work
            path = svc.audio.direct(track) or await svc.queue.run(svc.audio.path_for, track)
        except NoAudio as e:
            raise ApiError(404, str(e), "track_id") from None
        return FileResponse(path, media_type=media_type(path), headers={"Cache-Control": "max-age=3600"})

    @app.get("/v1/tracks/{track_id:path}", response_model=TrackOut, tags=["tracks"], responses=ERRORS)
    async def get_track_route(track_id: str) -> TrackOut:
        """Metadata of one track."""
        return convert.track_out(svc.get_track(track_id))


def add_session_routes(app: FastAPI, svc: Service) -> None:
    """Create, read, delete sessions and record feedback under ``/v1/sessions``."""
    sessions = svc.sessions

    @app.post("/v1/sessions", response_model=SessionOut, tags=["sessions"])
    async def new_session() -> SessionOut:
        """Start a session; pass its id as ``session_id`` or the ``X-Session-Id`` header."""
        return SessionOut(**sessions.new().to_dict())

    @app.get("/v1/sessions/{session_id}", response_model=SessionOut, tags=["sessions"], responses=ERRORS)
    async def get_session(session_id: str) -> SessionOut:
        sessions.check_id(session_id)
        s = sessions.get(session_id)
        if s is None:
            raise ApiError(404, f"unknown session: {session_id!r}", "session_id")
        return SessionOut(**s.to_dict())

    @app.delete("/v1/sessions/{session_id}", tags=["sessions"], responses=ERRORS)
    async def delete_session(session_id: str) -> dict:
        sessions.check_id(session_id)
        return {"id": session_id, "deleted": sessions.delete(session_id)}

    @app.post("/v1/sessions/{session_id}/feedback", response_model=SessionOut, tags=["sessions"],
              responses=ERRORS)
    async def feedback(session_id: str, body: FeedbackRequest) -> SessionOut:
        """Mark a track liked or rejected (``none`` clears); shapes the session's next turn."""
        svc.get_track(body.track_id)
        return SessionOut(**sessions.feedback(session_id, body.track_id, body.feedback).to_dict())


def add_recommend_route(app: FastAPI, svc: Service) -> None:
    """``POST /v1/recommend``."""

    @app.post("/v1/recommend", response_model=RecommendResponse, tags=["recommend"], responses=ERRORS)
    async def recommend(body: RecommendRequest,
                        x_session_id: str | None = Header(None)) -> JSONResponse:
        """Ranked tracks with scores for a query or a conversation."""
        if (body.query is None) == (body.messages is None):
            raise ApiError(400, "give exactly one of 'query' or 'messages'", "query")
        messages = body.messages if body.query is None else [ChatMessage(role="user", content=body.query)]
        req = svc.prepare(messages, body.k, body.exclude, body.session_id, x_session_id)
        recs = await svc.recommend(req)
        tracks = convert.recs_out(svc.catalog, recs)
        svc.shown(req.session, tracks)
        out = RecommendResponse(model=svc.model_name, session_id=req.session.id if req.session else None,
                                tracks=tracks)
        return JSONResponse(out.model_dump(), headers=session_headers(req.session))


def add_chat_route(app: FastAPI, svc: Service) -> None:
    """``POST /v1/chat/completions`` (OpenAI-compatible, SSE with ``stream: true``)."""

    @app.post("/v1/chat/completions", response_model=ChatCompletion, tags=["chat"], responses=ERRORS)
    async def chat(body: ChatCompletionRequest, x_session_id: str | None = Header(None)):
        """OpenAI-compatible chat; the tracks are in ``choices[0].message.tracks`` and the text.

        With ``stream: true`` the answer comes as ``chat.completion.chunk`` server-sent
        events (tracks in the first chunk's ``delta.tracks``), ending with ``data: [DONE]``.
        """
        if body.n != 1:
            raise ApiError(400, "only n=1 is supported", "n")
        k = body.k if body.k is not None else svc.cfg.default_k
        req = svc.prepare(body.messages, k, body.exclude, body.session_id, x_session_id)
        session = req.session
        cid = "chatcmpl-" + uuid.uuid4().hex[:24]
        created = int(time.time())
        if not body.stream:
            recs, reply, usage = await svc.respond(req)
            tracks = convert.recs_out(svc.catalog, recs)
            svc.shown(session, tracks)
            out = ChatCompletion(
                id=cid, created=created, model=svc.model_name, session_id=session.id if session else None,
                choices=[Choice(message=AssistantMessage(content=convert.compose(reply, tracks),
                                                         tracks=tracks))], usage=usage)
            return JSONResponse(out.model_dump(), headers=session_headers(session))

        items = svc.stream(req)  # raises Busy -> 429 before the stream starts
        include_usage = isinstance(body.stream_options, dict) and body.stream_options.get("include_usage")
        events = _sse_events(items, cid, created, svc.model_name, svc.catalog, session, svc.sessions,
                             include_usage)
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no", **session_headers(session)}
        return StreamingResponse(events, media_type="text/event-stream", headers=headers)


def _chunk(cid: str, created: int, model: str, delta: dict, finish: str | None = None,
           session_id: str | None = None) -> str:
    obj = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
           "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]}
    if session_id:
        obj["session_id"] = session_id
    return "data: " + json.dumps(obj, ensure_ascii=False) + "\n\n"


async def _sse_events(items, cid: str, created: int, model: str, catalog, session: ApiSession | None,
                      sessions: SessionStore, include_usage: bool):
    """Engine stream (recommendations, then text) -> OpenAI chunk events."""
    sid = session.id if session else None
    recs: list = []
    tracks: list[TrackOut] | None = None
    wrote_text = False
    usage: Usage | None = None

    def head() -> str:
        nonlocal tracks
        tracks = convert.recs_out(catalog, recs)
        if session:
            sessions.mark_shown(session.id, [t.id for t in tracks])
        delta = {"role": "assistant", "content": "", "tracks": [t.model_dump() for t in tracks]}
        return _chunk(cid, created, model, delta, session_id=sid)

    try:
        async for item in items:
            if isinstance(item, Usage):
                usage = item
            elif isinstance(item, str):
                if tracks is None:
                    yield head()
                if item:
                    if not wrote_text:
                        item = item.lstrip()
                    if item:
                        wrote_text = True
                        yield _chunk(cid, created, model, {"content": item}, session_id=sid)
            elif isinstance(item, (list, tuple)):  # the whole ranking at once: show it now
                recs.extend(item)
                if tracks is None:
                    yield head()
            elif hasattr(item, "track_id"):
                recs.append(item)
            elif hasattr(item, "recommendations"):  # a whole Response
                recs.extend(item.recommendations)
                if getattr(item, "reply", ""):
                    if tracks is None:
                        yield head()
                    wrote_text = True
                    yield _chunk(cid, created, model, {"content": item.reply}, session_id=sid)
        if tracks is None:
            yield head()
        listing = convert.tracks_text(tracks or [])
        yield _chunk(cid, created, model, {"content": ("\n\n" if wrote_text else "") + listing,
                                           "listing": True}, session_id=sid)
        yield _chunk(cid, created, model, {}, finish="stop", session_id=sid)
        if include_usage:
            usage = (usage or Usage()).model_dump()
            yield "data: " + json.dumps({"id": cid, "object": "chat.completion.chunk", "created": created,
                                         "model": model, "choices": [], "usage": usage}) + "\n\n"
    except Exception as e:  # mid-stream: the status line is gone, so report in-band
        log.exception("stream failed")
        msg = str(e) if isinstance(e, (TalkPlayError, Busy)) else f"internal error ({type(e).__name__})"
        if isinstance(e, TimeoutError):
            msg = "the model stopped answering; retry later"
        yield "data: " + json.dumps({"error": {"message": msg, "type": "server_error", "param": None,
                                               "code": None}}) + "\n\n"
    yield "data: [DONE]\n\n"
