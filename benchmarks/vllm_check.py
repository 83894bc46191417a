"""End-to-end check of a content-grounded model served by vLLM, for a GPU machine.

Run as ``python benchmarks/vllm_check.py RUN [--out DIR] [--listeners 16 --turns 3 --k 10]``.
Needs ``pip install 'talkplay[vllm]'`` (written against vLLM 0.11.0) and a CUDA GPU; where
either is missing it stops at once, saying which, with exit code 2.

1. Export: ``python -m talkplay.vllm_support RUN OUT`` (LoRA merged, one vocabulary token
   per catalog track whose output row is its track-head row).
2. Serve: ``vllm serve OUT --enable-prompt-embeds --logits-processors
   talkplay.vllm_support:CatalogTrieLogitsProcessor`` on a free loopback port (float32 by
   default, so rankings compare with the engine's without bf16 rounding), waiting for
   ``GET /v1/models``.
3. Rankings: for ``--conversations`` conversations (the run's test dialogs, cut at each
   turn), the engine's ``recommend(conv, k)`` against the top-k logprobs of the first token
   vLLM generates from ``engine.prompt_embeds(conv)`` (the session's tracks excluded through
   ``talkplay_exclude``). Equal when the ids agree in order, or differ only where the
   engine's own scores tie (within ``--tol``).
4. Load: ``--listeners`` at once, ``--turns`` each: rank through vLLM as above, then write
   the reply from the prompt plus the answer's track blocks and cards (as embeddings;
   music tokens masked by the processor). Prints throughput, median and p95 latency per
   answer and errors. vLLM writes the reply without TalkPlay's reply guard.

Exit code 0 when every ranking agrees and no request failed, 1 otherwise. Prints one JSON
object with ``--json``.
"""

from __future__ import annotations

import argparse
import base64
import io
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

QUERIES = ["calm piano for reading", "something upbeat to work out to", "sad songs for a rainy day",
           "music for a dinner party", "energetic dance music", "slow and peaceful"]


def preflight() -> None:
    """Stop with exit code 2 and a clear message where vLLM or a GPU is missing."""
    problems = []
    try:
        import vllm

        version = getattr(vllm, "__version__", "?")
        if not version.startswith("0.11"):
            print(f"note: vLLM {version} installed; this check was written against 0.11.0", file=sys.stderr)
    except ImportError:
        problems.append("vLLM is not installed: pip install 'talkplay[vllm]' (written against vLLM 0.11.0)")
    import torch

    if not torch.cuda.is_available():
        problems.append("no CUDA GPU is visible to torch: run this on a GPU machine")
    if shutil.which("vllm") is None and not problems:
        problems.append("the `vllm` command is not on PATH")
    if problems:
        sys.stderr.write("vllm_check cannot run here:\n" + "".join(f"  - {p}\n" for p in problems))
        raise SystemExit(2)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_vllm(out: Path, dtype: str, max_logprobs: int,
               timeout: float = 900) -> tuple[subprocess.Popen, str]:
    import httpx

    port = free_port()
    log = Path(tempfile.mkstemp(prefix="vllm-", suffix=".log")[1])
    cmd = ["vllm", "serve", str(out), "--port", str(port), "--host", "127.0.0.1", "--dtype", dtype,
           "--enable-prompt-embeds", "--max-logprobs", str(max_logprobs),
           "--logits-processors", "talkplay.vllm_support:CatalogTrieLogitsProcessor"]
    with open(log, "wb") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"vllm serve exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        try:
            if httpx.get(url + "/models", timeout=2).status_code == 200:
                print(f"vLLM up at {url} (log {log})", file=sys.stderr)
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(1)
    proc.kill()
    raise SystemExit(f"vllm serve did not answer in {timeout:.0f} s:\n{log.read_text()[-4000:]}")


def b64(tensor) -> str:
    """A (L, hidden) tensor as vLLM's completions API takes ``prompt_embeds``."""
    import torch

    buf = io.BytesIO()
    torch.save(tensor.contiguous(), buf)
    return base64.b64encode(buf.getvalue()).decode()


class Checker:
    """The engine (client side: prompts as embeddings) and the vLLM server's completions."""

    def __init__(self, engine, url: str, model: str, names: dict[str, str]) -> None:
        import openai

        self.engine, self.model, self.names = engine, model, names  # names: token -> track id
        self.client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=600)
        self.lock = threading.Lock()  # the engine's text encoder and rows: one caller at a time

    def vllm_rank(self, conv, k: int) -> list[str]:
        from talkplay.exclusion import session_exclude

        with self.lock:
            emb = self.engine.prompt_embeds(conv)
        seen = sorted(session_exclude(conv, ()))
        out = self.client.completions.create(
            model=self.model, prompt="", max_tokens=1, temperature=0.0, logprobs=k,
            extra_body={"prompt_embeds": b64(emb), "skip_special_tokens": False,
                        "vllm_xargs": {"talkplay_in_block": True, "talkplay_exclude": json.dumps(seen)}})
        top = out.choices[0].logprobs.top_logprobs[0]
        ranked = sorted(top.items(), key=lambda kv: -kv[1])
        return [self.names[t] for t, _ in ranked if t in self.names][:k]

    def vllm_reply(self, conv, recs, max_tokens: int) -> str:
        import torch

        with self.lock:
            emb, reqs = self.engine._prompt_embeds(conv)
            blocks = self.engine._reply_blocks(recs, reqs[-1])
            full = torch.cat([emb[0], blocks[0]]).float().cpu()
        out = self.client.completions.create(
            model=self.model, prompt="", max_tokens=max_tokens, temperature=0.0,
            extra_body={"prompt_embeds": b64(full),
                        "vllm_xargs": {"talkplay_music_first": False, "talkplay_max_tracks": 0}})
        return out.choices[0].text


def agree(engine_ranked: list[tuple[str, float]], got: list[str], k: int, tol: float) -> bool:
    """Equal top k, or differing only where the engine's own scores tie within ``tol``."""
    score = dict(engine_ranked)
    want = [t for t, _ in engine_ranked[:k]]
    if len(got) != len(want):
        return False
    pairs = zip(want, got, strict=True)
    return all(a == b or (b in score and abs(score[a] - score[b]) <= tol) for a, b in pairs)


def conversations(run, n: int):
    from talkplay.catalog import Conversation, Turn
    from talkplay.dialogs import load_dialogs

    out = []
    try:
        for conv in load_dialogs(run, "test"):
            for i in range(len(conv.turns)):
                turns = [*conv.turns[:i], Turn(user=conv.turns[i].user)]
                out.append(Conversation(id=f"{conv.id}:{i}", turns=turns))
    except Exception as e:  # a run without test dialogs: plain requests
        print(f"no test dialogs ({e}); using fixed requests", file=sys.stderr)
    out += [Conversation(id=f"q{i}", turns=[Turn(user=q)]) for i, q in enumerate(QUERIES)]
    return out[:n]


def load(checker: Checker, listeners: int, turns: int, k: int, reply_tokens: int) -> dict:
    from talkplay.catalog import Conversation, Turn
    from talkplay.engine.protocol import Recommendation

    lat: list[float] = []
    errors: list[str] = []

    def person(seed: int) -> None:
        rng = random.Random(seed)
        conv = Conversation(id=f"l{seed}", turns=[])
        for _ in range(turns):
            conv.turns.append(Turn(user=rng.choice(QUERIES)))
            t0 = time.perf_counter()
            try:
                ids = checker.vllm_rank(conv, k)
                reply = checker.vllm_reply(conv, [Recommendation(t, 0.0) for t in ids], reply_tokens)
                conv.turns[-1].assistant, conv.turns[-1].recommended = reply, ids
                lat.append(time.perf_counter() - t0)
            except Exception as e:
                errors.append(f"{type(e).__name__}: {e}"[:300])
                conv.turns.pop()

    t0 = time.perf_counter()
    threads = [threading.Thread(target=person, args=(i,)) for i in range(listeners)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    lat.sort()
    return {"listeners": listeners, "turns": turns, "answers": len(lat), "seconds": round(wall, 2),
            "answers_per_s": round(len(lat) / wall, 2),
            "p50_s": round(statistics.median(lat), 3) if lat else None,
            "p95_s": round(lat[min(len(lat) - 1, round(0.95 * (len(lat) - 1)))], 3) if lat else None,
            "errors": len(errors), "error_samples": errors[:3]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path)
    ap.add_argument("--out", type=Path, help="export folder (default: a temporary one)")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--conversations", type=int, default=50)
    ap.add_argument("--listeners", type=int, default=16)
    ap.add_argument("--turns", type=int, default=3)
    ap.add_argument("--reply-tokens", type=int, default=80)
    ap.add_argument("--dtype", default="float32", help="vLLM --dtype (float32: rankings compare exactly)")
    ap.add_argument("--tol", type=float, default=1e-3, help="engine score gap counted as a tie")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    preflight()

    from talkplay.engine.content import ContentEngine
    from talkplay.run import Run
    from talkplay.vllm_support import TRACK_TOKEN, export_for_vllm

    run = Run(args.run)
    out = args.out or Path(tempfile.mkdtemp(prefix="talkplay-vllm-"))
    t0 = time.perf_counter()
    info = export_for_vllm(run, out)
    if info.get("track_repr") != "content":
        raise SystemExit(f"{run.path} is not a content-grounded model; this check is for those")
    export_s = time.perf_counter() - t0
    engine = ContentEngine.load(run.path)
    names = {TRACK_TOKEN.format(i): t for i, t in enumerate(engine.music.track_ids)}
    proc, url = start_vllm(out, args.dtype, max(20, args.k))
    try:
        import httpx

        model = httpx.get(url + "/models", timeout=10).json()["data"][0]["id"]
        checker = Checker(engine, url, model, names)
        convs = conversations(run, args.conversations)
        mismatches = []
        for conv in convs:
            want = [(r.track_id, r.score) for r in engine.recommend(conv, args.k + 5)]
            got = checker.vllm_rank(conv, args.k)
            if not agree(want, got, args.k, args.tol):
                mismatches.append({"conversation": conv.id, "engine": [t for t, _ in want[: args.k]],
                                   "vllm": got})
        result = {"run": str(run.path), "export": str(out), "export_s": round(export_s, 1),
                  "vllm_model": model, "dtype": args.dtype, "k": args.k,
                  "rankings_compared": len(convs), "rankings_equal": len(convs) - len(mismatches),
                  "mismatch_samples": mismatches[:3],
                  "load": load(checker, args.listeners, args.turns, args.k, args.reply_tokens)}
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
    if args.json:
        print(json.dumps(result))
    else:
        ld = result["load"]
        print(f"export {result['export_s']} s -> {out}; vLLM dtype {args.dtype}; GPU "
              f"{os.environ.get('CUDA_VISIBLE_DEVICES', 'default')}")
        print(f"rankings equal to the engine's: {result['rankings_equal']}/{result['rankings_compared']} "
              f"(top {args.k})")
        for m in result["mismatch_samples"]:
            print("  mismatch:", json.dumps(m))
        print(f"load: {ld['listeners']} listeners x {ld['turns']} turns: {ld['answers']} answers in "
              f"{ld['seconds']} s, {ld['answers_per_s']} answers/s, p50 {ld['p50_s']} s, "
              f"p95 {ld['p95_s']} s, errors {ld['errors']}")
        for e in ld["error_samples"]:
            print("  error:", e)
    ok = not result["mismatch_samples"] and result["load"]["errors"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
