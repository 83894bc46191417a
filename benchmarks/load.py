"""Load test of `talkplay serve`: simulated users chatting and asking for recommendations.

Listeners mode, ``nice python benchmarks/load.py RUN --listeners 1,4,16 --turns 3
--batch-sizes 1,16``: for each batch size a server is started (``--batch-size``), then 1,
4 and 16 listeners at once each hold a session of ``--turns`` streamed chat turns (the
conversation so far each time, as the web page sends it). Prints one table, batch sizes
side by side: answers per second, median and p95 latency of a whole answer, median time to
the first streamed chunk (the tracks) and to the first reply text, and errors.

Soak mode (without ``--listeners``):

Run as ``nice python benchmarks/load.py RUN --users 16 --seconds 60`` (starts
``talkplay serve RUN`` on a free loopback port, pinned to ``--cores`` CPUs with taskset
where available) or ``--url http://127.0.0.1:8000`` against a running server. Each user
starts a session, then alternates ``POST /v1/recommend`` (k=10) and ``POST
/v1/chat/completions`` (k=3, the session's history, like the web page), likes a track now
and then, and starts over every ``--turns`` turns. Prints p50/p99 latency per kind,
throughput, errors (any non-2xx but 429, or a dropped connection), 429s from the bounded
queue (counted apart), and the server's RSS before (after warm-up) and after.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

QUERIES = [
    "calm piano for reading", "something upbeat to work out to", "sad songs for a rainy day",
    "baroque chorales", "folk songs with a simple melody", "music for a dinner party",
    "a quiet string quartet", "energetic dance music", "something like what I liked before",
    "slow and peaceful", "a hymn for choir", "music from the renaissance",
]


def percentile(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    i = min(len(xs) - 1, max(0, round(q / 100 * (len(xs) - 1))))
    return xs[i]


def start_server(run: Path, cores: int, extra: list[str]) -> tuple[subprocess.Popen, str, Path]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "talkplay.cli", "serve", str(run), "--port", str(port), *extra]
    if cores and shutil.which("taskset") and (os.cpu_count() or 1) > cores:
        cmd = ["taskset", "-c", ",".join(str(i) for i in range(cores)), *cmd]
    log = Path(tempfile.mkstemp(prefix="talkplay-serve-", suffix=".log")[1])
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"server exited:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return proc, url, log
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    proc.kill()
    sys.exit("server did not start in 600 s")


def rss_mb(pid: int | None) -> float | None:
    if pid is None:
        return None
    try:
        import psutil

        return psutil.Process(pid).memory_info().rss / 2**20
    except Exception:
        return None


class Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.lat: dict[str, list[float]] = {"recommend": [], "chat": []}
        self.errors: dict[str, int] = {"recommend": 0, "chat": 0, "feedback": 0}
        self.busy: dict[str, int] = {"recommend": 0, "chat": 0, "feedback": 0}
        self.unfinished: dict[str, int] = {"recommend": 0, "chat": 0, "feedback": 0}
        self.samples: list[str] = []

    def add(self, kind: str, seconds: float, r: httpx.Response | None, err: str | None = None) -> bool:
        with self.lock:
            if r is not None and r.status_code == 429:
                self.busy[kind] += 1
                return False
            if r is None or r.status_code >= 300:
                self.errors[kind] += 1
                if len(self.samples) < 5:
                    self.samples.append(err or f"{kind}: {r.status_code} {r.text[:200]}")
                return False
            if kind in self.lat:
                self.lat[kind].append(seconds)
            return True


def user(url: str, seed: int, deadline: float, turns: int, stats: Stats, grace: float) -> None:
    rng = random.Random(seed)
    with httpx.Client(base_url=url, timeout=600) as c:
        while time.monotonic() < deadline:
            try:
                sid = c.post("/v1/sessions").json()["id"]
            except (httpx.HTTPError, ValueError) as e:
                stats.add("chat", 0, None, f"session: {e}")
                time.sleep(0.5)
                continue
            messages: list[dict] = []
            for _ in range(turns):
                if time.monotonic() >= deadline:
                    return
                for kind in ("recommend", "chat"):
                    q = rng.choice(QUERIES)
                    if kind == "recommend":
                        path, body = "/v1/recommend", {"query": q, "k": 10, "session_id": sid}
                    else:
                        messages.append({"role": "user", "content": q})
                        path, body = "/v1/chat/completions", {"messages": messages, "session_id": sid}
                    t0 = time.perf_counter()
                    try:
                        # a request still waiting `grace` s after the window is abandoned
                        r = c.post(path, json=body, timeout=max(1.0, deadline + grace - time.monotonic()))
                        ok = stats.add(kind, time.perf_counter() - t0, r)
                    except httpx.TimeoutException:
                        with stats.lock:
                            stats.unfinished[kind] += 1
                        return
                    except httpx.HTTPError as e:
                        stats.add(kind, 0, None, f"{kind}: {type(e).__name__} {e}")
                        ok, r = False, None
                    if kind == "chat":
                        if ok:
                            msg = r.json()["choices"][0]["message"]
                            messages.append({"role": "assistant", "content": msg["content"],
                                             "tracks": [{"id": t["id"]} for t in msg["tracks"]]})
                            if msg["tracks"] and rng.random() < 0.5:
                                fb = c.post(f"/v1/sessions/{sid}/feedback", json={
                                    "track_id": rng.choice(msg["tracks"])["id"],
                                    "feedback": rng.choice(["liked", "rejected"])})
                                stats.add("feedback", 0, fb)
                        else:
                            messages.pop()
                    if r is not None and r.status_code == 429:
                        time.sleep(float(r.headers.get("retry-after", "1")))


def listener(url: str, seed: int, turns: int, out: list[dict]) -> None:
    """One person: a session of ``turns`` streamed chat turns; one record per answer."""
    rng = random.Random(seed)
    messages: list[dict] = []
    with httpx.Client(base_url=url, timeout=600) as c:
        for _ in range(turns):
            messages.append({"role": "user", "content": rng.choice(QUERIES)})
            rec: dict = {"ok": False}
            t0 = time.perf_counter()
            text, tracks = [], []
            try:
                body = {"messages": messages, "stream": True}
                with c.stream("POST", "/v1/chat/completions", json=body) as r:
                    if r.status_code != 200:
                        rec["error"] = f"{r.status_code} {r.read()[:200]!r}"
                    else:
                        for line in r.iter_lines():
                            if not line.startswith("data: ") or line == "data: [DONE]":
                                continue
                            obj = json.loads(line[6:])
                            if "error" in obj:
                                rec["error"] = obj["error"]["message"]
                                break
                            delta = (obj.get("choices") or [{}])[0].get("delta", {})
                            rec.setdefault("first_chunk", time.perf_counter() - t0)
                            tracks += delta.get("tracks") or []
                            if delta.get("content") and not delta.get("listing"):
                                rec.setdefault("first_text", time.perf_counter() - t0)
                                text.append(delta["content"])
                        else:
                            rec["ok"] = "error" not in rec
            except httpx.HTTPError as e:
                rec["error"] = f"{type(e).__name__} {e}"
            rec["latency"] = time.perf_counter() - t0
            out.append(rec)
            if not rec["ok"]:
                messages.pop()
                continue
            messages.append({"role": "assistant", "content": "".join(text),
                             "tracks": [{"id": t["id"]} for t in tracks]})


def listeners_mode(args: argparse.Namespace) -> None:
    counts = [int(x) for x in args.listeners.split(",")]
    sizes = [int(x) for x in args.batch_sizes.split(",")] if args.run else [None]
    rows = []
    for size in sizes:
        proc = None
        url = args.url
        if args.run:
            extra = ["--max-queue", str(args.max_queue), "--batch-size", str(size)]
            if args.reply_tokens:
                extra += ["--reply-tokens", str(args.reply_tokens)]
            proc, url, _ = start_server(args.run, args.cores, extra)
        try:
            with httpx.Client(base_url=url, timeout=600) as c:  # warm-up: lazy loading not timed
                c.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "warm up"}]})
            health = httpx.get(url + "/health", timeout=10).json()
            for n in counts:
                recs: list[dict] = []
                load0 = os.getloadavg()[0]
                t0 = time.perf_counter()
                threads = [threading.Thread(target=listener, args=(url, 1000 * n + i, args.turns, recs))
                           for i in range(n)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                wall = time.perf_counter() - t0
                ok = [r for r in recs if r["ok"]]
                lat = [r["latency"] for r in ok]
                rows.append({
                    "batch_size": health["queue"].get("batch_size", 1), "listeners": n, "answers": len(ok),
                    "seconds": round(wall, 1), "answers_per_s": round(len(ok) / wall, 3),
                    "p50_s": round(percentile(lat, 50), 2), "p95_s": round(percentile(lat, 95), 2),
                    "first_chunk_p50_s": round(percentile([r["first_chunk"] for r in ok], 50), 2),
                    "first_text_p50_s": round(percentile([r["first_text"] for r in ok if "first_text" in r],
                                                         50), 2),
                    "errors": len(recs) - len(ok), "load_avg": round((load0 + os.getloadavg()[0]) / 2, 1),
                    "error_samples": [r.get("error") for r in recs if not r["ok"]][:3]})
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
        finally:
            if proc:
                proc.terminate()
                proc.wait(30)
    if args.json:
        print(json.dumps(rows))
        return
    print(f"{args.turns} streamed chat turns per listener; {os.cpu_count()} CPUs; load_avg: the machine's "
          "1-minute load average during the step (other jobs included)")
    print("| batch size | listeners | answers | wall s | answers/s | p50 s | p95 s | first chunk p50 s "
          "| first text p50 s | errors | load avg |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['batch_size']} | {r['listeners']} | {r['answers']} | {r['seconds']} "
              f"| {r['answers_per_s']} | {r['p50_s']} | {r['p95_s']} | {r['first_chunk_p50_s']} "
              f"| {r['first_text_p50_s']} "
              f"| {r['errors']} | {r['load_avg']} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", nargs="?", type=Path, help="run directory to serve")
    ap.add_argument("--url", help="an already running server instead of RUN")
    ap.add_argument("--pid", type=int, help="with --url: the server's process id, to read its RSS")
    ap.add_argument("--users", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--turns", type=int, default=4, help="turns per session before starting over")
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--max-queue", type=int, default=32)
    ap.add_argument("--reply-tokens", type=int, help="passed to `talkplay serve` (default: the engine's)")
    ap.add_argument("--grace", type=float, default=30.0,
                    help="seconds after the window before in-flight requests are abandoned (counted apart)")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--listeners", help="listeners mode: counts of listeners at once, e.g. 1,4,16")
    ap.add_argument("--batch-sizes", default="1,16",
                    help="listeners mode with RUN: one server per `--batch-size` (1: one at a time)")
    args = ap.parse_args()
    if bool(args.run) == bool(args.url):
        ap.error("give RUN or --url")
    if args.listeners:
        listeners_mode(args)
        return
    proc, log = None, None
    url = args.url
    if args.run:
        extra = ["--max-queue", str(args.max_queue)]
        if args.reply_tokens:
            extra += ["--reply-tokens", str(args.reply_tokens)]
        proc, url, log = start_server(args.run, args.cores, extra)
    try:
        health = httpx.get(url + "/health", timeout=10).json()
        pid = proc.pid if proc else args.pid
        # warm-up: one of each, so lazy loading is not counted as growth
        with httpx.Client(base_url=url, timeout=600) as c:
            c.post("/v1/recommend", json={"query": "warm up", "k": 10})
            c.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "warm up"}]})
        rss0 = rss_mb(pid)
        stats = Stats()
        deadline = time.monotonic() + args.seconds
        t0 = time.perf_counter()
        threads = [threading.Thread(target=user, args=(url, i, deadline, args.turns, stats, args.grace))
                   for i in range(args.users)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        rss1 = rss_mb(pid)
        after = httpx.get(url + "/health", timeout=10).json()
    finally:
        if proc:
            proc.terminate()
            proc.wait(30)
    result = {
        "model": health["model"], "catalog_tracks": health["catalog"]["tracks"], "users": args.users,
        "seconds": round(wall, 1), "cpus": os.cpu_count(),
        "requests_ok": {k: len(v) for k, v in stats.lat.items()},
        "throughput_rps": round(sum(len(v) for v in stats.lat.values()) / wall, 2),
        "latency_s": {k: {"p50": round(percentile(v, 50), 3), "p99": round(percentile(v, 99), 3),
                          "mean": round(statistics.fmean(v), 3) if v else None}
                      for k, v in stats.lat.items()},
        "errors": stats.errors, "busy_429": stats.busy, "unfinished": stats.unfinished,
        "error_samples": stats.samples,
        "rss_mb": {"before": rss0 and round(rss0), "after": rss1 and round(rss1),
                   "growth": rss0 and rss1 and round(rss1 - rss0)},
        "queue_after": after["queue"],
    }
    if args.json:
        print(json.dumps(result))
        return
    model = result["model"]
    print(f"model {model.get('name')} ({model.get('base', model.get('engine'))}), {result['catalog_tracks']} "
          f"tracks, {args.users} users, {result['seconds']} s, {result['cpus']} CPUs")
    print("| kind | ok | p50 s | p99 s | errors | 429 |")
    print("|---|---|---|---|---|---|")
    for k in ("recommend", "chat"):
        lat = result["latency_s"][k]
        print(f"| {k} | {result['requests_ok'][k]} | {lat['p50']} | {lat['p99']} | {stats.errors[k]} "
              f"| {stats.busy[k]} |")
    print(f"unfinished after the window + {args.grace:.0f} s: {stats.unfinished}")
    print(f"throughput {result['throughput_rps']} req/s; feedback errors {stats.errors['feedback']}; "
          f"RSS {result['rss_mb']['before']} -> {result['rss_mb']['after']} MB")
    for s in stats.samples:
        print("error sample:", s)


if __name__ == "__main__":
    main()
