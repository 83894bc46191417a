"""Serve a trained run over HTTP: ``serve_run(Run("runs/demo"), ServeConfig(port=8000))``.

``create_app(engine, cfg)`` builds the FastAPI app over any loaded engine;
``serve_run`` loads the run's ``Engine`` and runs it under uvicorn until interrupted.
"""

from __future__ import annotations

from pathlib import Path

from talkplay.errors import InputError
from talkplay.log import get_logger
from talkplay.run import Run
from talkplay.serve.api import ServeConfig
from talkplay.serve.app import create_app

__all__ = ["ServeConfig", "create_app", "load_app", "serve_run"]


def load_app(run_dir, cfg: ServeConfig | None = None):
    """Load the run's engine and build the app: ``load_app("runs/demo")``."""
    from talkplay.engine import Engine, EngineConfig  # torch and transformers: only when serving

    run = Run(run_dir)
    if not run.path.is_dir():
        raise InputError(f"run directory does not exist: {run.path}")
    cfg = cfg or ServeConfig()
    cfg.run_dir = Path(run.path)
    cfg.validate()
    engine_cfg = EngineConfig(reply_tokens=cfg.reply_tokens) if cfg.reply_tokens is not None else None
    return create_app(Engine.load(run.path, engine_cfg), cfg)


def serve_run(run, cfg: ServeConfig) -> dict:
    """Load ``run``'s engine and serve it at ``cfg.host:cfg.port`` until interrupted."""
    import uvicorn

    app = load_app(run.path, cfg)
    get_logger(__name__).info("serving %s at http://%s:%d/", run.path, cfg.host, cfg.port)
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level="warning", timeout_graceful_shutdown=5)
    return {"run": str(run.path), "host": cfg.host, "port": cfg.port}
