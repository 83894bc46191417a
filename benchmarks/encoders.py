"""Encoder throughput: text encoders in tracks per second, audio in seconds of audio per second.

Run as ``nice python benchmarks/encoders.py`` (defaults: 1,000 tracks of metadata and tag
text, 200 lyrics of 400 words, 20 clips of 30 s of synthesised audio) or with
``--tracks/--lyrics/--clips`` to scale. Model loading is timed separately and excluded
from throughput. Prints a table (markdown with ``--markdown``).

Inputs are synthetic but shaped like real catalogs: metadata text ``Title: .. Artists: ..
Album: ..``, 3-6 tags, lyrics with repeated verses (chunked and mean-pooled like the
lyrics modality), and audio mixing harmonic tones, a drum-like pulse and noise.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
from rich.console import Console
from rich.table import Table

from talkplay.catalog import Track
from talkplay.encoders import TextEncoder, track_text
from talkplay.encoders.audio import AudioEncoder

WORDS = ("love night river blue heart dance fire rain summer road home light dream city sky "
         "golden wild slow electric midnight ocean broken song").split()
TAGS = ("rock pop jazz folk electronic ambient indie soul blues metal chill happy sad "
        "acoustic instrumental dance").split()


def synth_tracks(n: int, seed: int) -> list[Track]:
    rng = np.random.default_rng(seed)

    def words(k: int) -> str:
        return " ".join(rng.choice(WORDS, size=k))

    def tags() -> list[str]:
        return list(rng.choice(TAGS, size=int(rng.integers(3, 7)), replace=False))

    return [Track(id=f"t{i}", title=words(int(rng.integers(1, 5))).title(), artists=[words(2).title()],
                  album=words(2).title(), tags=tags()) for i in range(n)]


def synth_lyrics(n: int, seed: int, words_per_song: int = 400) -> list[str]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        lines = [" ".join(rng.choice(WORDS, size=8)) for _ in range(words_per_song // 8)]
        out.append("\n".join(lines))
    return out


def synth_audio(n: int, seconds: float, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    sr = 16000
    t = np.arange(int(seconds * sr)) / sr
    clips = []
    for _ in range(n):
        f0 = rng.uniform(110, 440)
        tone = sum(0.2 / k * np.sin(2 * np.pi * f0 * k * t) for k in range(1, 5))
        beat = 0.3 * np.exp(-(t % rng.uniform(0.3, 0.7)) * 25) * rng.standard_normal(len(t))
        clips.append((tone + beat + 0.01 * rng.standard_normal(len(t))).astype(np.float32))
    return clips


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tracks", type=int, default=1000)
    ap.add_argument("--lyrics", type=int, default=200)
    ap.add_argument("--clips", type=int, default=20)
    ap.add_argument("--clip-seconds", type=float, default=30.0)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--markdown", action="store_true", help="Print a markdown table for BENCHMARKS.md.")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    rows: list[tuple[str, ...]] = []

    def timed(fn):  # noqa: ANN001, ANN202 - (wall seconds, CPU seconds of this process)
        w, c = time.perf_counter(), time.process_time()
        fn()
        return time.perf_counter() - w, time.process_time() - c

    text = TextEncoder()
    dt, cpu = timed(lambda: text.dim)
    rows.append(("load all-MiniLM-L6-v2", "-", f"{dt:.1f} s", f"{cpu:.1f} s", "-", "-"))
    tracks = synth_tracks(args.tracks, args.seed)
    text.encode(["warm up"] * 8)
    for modality in ("metadata", "tags"):
        texts = [track_text(t, modality) or "" for t in tracks]
        dt, cpu = timed(lambda texts=texts: text.encode(texts, batch_size=args.batch_size))
        rows.append((f"text: {modality}", f"{len(texts):,} tracks", f"{dt:.1f} s", f"{cpu:.1f} s",
                     f"{len(texts) / dt:,.0f} tracks/s", f"{len(texts) / cpu:,.0f} tracks/cpu-s"))
    lyrics = synth_lyrics(args.lyrics, args.seed)
    chunks = sum(len(text.chunk(s)) for s in lyrics)
    dt, cpu = timed(lambda: text.encode_long(lyrics, batch_size=args.batch_size))
    rows.append(("text: lyrics (chunked + mean-pooled)", f"{len(lyrics):,} x 400 words ({chunks:,} chunks)",
                 f"{dt:.1f} s", f"{cpu:.1f} s", f"{len(lyrics) / dt:,.1f} tracks/s",
                 f"{len(lyrics) / cpu:,.1f} tracks/cpu-s"))

    audio = AudioEncoder()
    dt, cpu = timed(audio.net)
    rows.append(("load MSD musicnn (checkpoint -> PyTorch)", "-", f"{dt:.1f} s", f"{cpu:.1f} s", "-", "-"))
    clips = synth_audio(args.clips, args.clip_seconds, args.seed)
    audio.encode_arrays(clips[:1])  # warm-up
    total = args.clips * args.clip_seconds
    dt, cpu = timed(lambda: [audio.encode_arrays(clips[s:s + 8]) for s in range(0, len(clips), 8)])
    what = f"{args.clips} x {args.clip_seconds:.0f} s"
    rows.append(("audio: musicnn (log-mel + network)", what, f"{dt:.1f} s", f"{cpu:.1f} s",
                 f"{total / dt:,.1f} s audio/s", f"{total / cpu:,.1f} s audio/cpu-s"))
    from talkplay.encoders.musicnn import log_mel

    dt, cpu = timed(lambda: [log_mel(c) for c in clips])
    rows.append(("  of which log-mel front end", what, f"{dt:.1f} s", f"{cpu:.1f} s",
                 f"{total / dt:,.0f} s audio/s", f"{total / cpu:,.0f} s audio/cpu-s"))
    load = os.getloadavg()[0]
    print(f"torch threads: {torch_threads()}; 1-min load average at the end: {load:.1f}")

    header = ("encoder", "input", "wall", "CPU", "throughput (wall)", "throughput (per CPU-second)")
    if args.markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        for r in rows:
            print("| " + " | ".join(r) + " |")
        return
    table = Table(title="encoder throughput")
    for h in header:
        table.add_column(h, justify="left" if h in ("encoder", "input") else "right")
    for r in rows:
        table.add_row(*r)
    Console().print(table)


if __name__ == "__main__":
    main()
