"""Answer latency of content-grounded tracks beside music-token codes, in one run.

Run as ``python benchmarks/latency.py --run runs/cpcd --codes-run runs/cpcd-codes
[--requests 20] [--markdown]``. For each run's engine (loaded once, not timed): the median
wall time of ``engine.recommend`` (k=10, the ranking inside ``talkplay recommend``) and of
``engine.respond`` (k=3 and a reply of ``--reply-tokens``, a chat answer) over the first
``--requests`` held-out requests of the run's test split; then ``talkplay serve`` is started
on the content run and ``POST /v1/recommend`` (k=10) is timed from a client once the
server is up. Codes runs rank with the engine's default (beam search over the trie for
catalogs this size). Threads: ``--threads`` (default 2).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import httpx
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cpcd import print_table  # noqa: E402
from load import start_server  # noqa: E402

from talkplay.catalog import Conversation, Turn  # noqa: E402
from talkplay.dialogs import load_dialogs  # noqa: E402
from talkplay.engine import Engine, EngineConfig  # noqa: E402
from talkplay.run import Run  # noqa: E402


def requests(run: Run, n: int) -> list[Conversation]:
    """Held-out conversations cut at each user turn, first ``n``."""
    out = []
    for conv in load_dialogs(run, "test"):
        for i, t in enumerate(conv.turns):
            if len(out) < n and t.user.strip():
                out.append(Conversation(id=conv.id, turns=[*conv.turns[:i], Turn(user=t.user)]))
    return out


def timed(fn, items: list) -> list[float]:  # noqa: ANN001
    fn(items[0])  # warm-up, not counted
    out = []
    for x in items:
        t0 = time.perf_counter()
        fn(x)
        out.append(time.perf_counter() - t0)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", type=Path, required=True, help="A run trained with --track-repr content.")
    ap.add_argument("--codes-run", type=Path, help="The same catalog trained with --track-repr codes.")
    ap.add_argument("--requests", type=int, default=20)
    ap.add_argument("--reply-tokens", type=int, default=40)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for label, path in (("content", args.run), ("codes", args.codes_run)):
        if path is None:
            continue
        run = Run(path)
        engine = Engine.load(run.path, EngineConfig(reply_tokens=args.reply_tokens, device="cpu"))
        reqs = requests(run, args.requests)
        rec = timed(lambda c, e=engine: e.recommend(c, k=10), reqs)
        method = engine.last_method
        chat = timed(lambda c, e=engine: e.respond(c, k=3), reqs)
        rows.append([f"{label} ({method})", f"{len(engine.catalog):,}", f"{statistics.median(rec):.3f}",
                     f"{max(rec):.3f}", f"{statistics.median(chat):.3f}", f"{max(chat):.3f}"])
        del engine
    proc, url, log = start_server(args.run, 0, ["--reply-tokens", str(args.reply_tokens)])
    try:
        reqs = [c.turns[-1].user for c in requests(Run(args.run), args.requests)]
        with httpx.Client(base_url=url, timeout=120) as http:
            def ask(q: str) -> None:
                http.post("/v1/recommend", json={"query": q, "k": 10}).raise_for_status()

            http_s = timed(ask, reqs)
    finally:
        proc.terminate()
        proc.wait(30)
    header = ["engine (ranking)", "tracks", "recommend k=10 median s", "max s", "chat answer k=3 median s",
              "max s"]
    machine = f"{os.cpu_count()}-core {platform.machine()}, {args.threads} threads"
    print(f"{len(reqs)} held-out requests; {machine}")
    print_table("Answer latency", header, rows, args.markdown)
    print(f"POST /v1/recommend k=10 on the content run: median {statistics.median(http_s):.3f} s, "
          f"max {max(http_s):.3f} s over {len(http_s)} requests (server up, first request not counted)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
