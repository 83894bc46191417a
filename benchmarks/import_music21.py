"""How fast is the music21 import, and how much of the corpus renders to audio?

Run: ``python benchmarks/import_music21.py [--render 60] [--parse 20]``. Prints a table:
the header-based import of the whole corpus, the cost of parsing scores fully with
music21 (what the importer avoids), and the share of a random sample of works that
renders to audio, with seconds per work.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from collections import Counter

from talkplay.audio_render import AudioRenderError, render_audio
from talkplay.sources import Issues, get_importer


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--render", type=int, default=60, help="works to render (random sample)")
    ap.add_argument("--parse", type=int, default=20, help="works to parse fully with music21")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    t0 = time.perf_counter()
    cat = get_importer("music21").load("-", Issues())
    t_import = time.perf_counter() - t0
    n = len(cat)
    rng = random.Random(args.seed)

    from music21 import corpus

    sample = rng.sample(cat.tracks, args.parse)
    t0 = time.perf_counter()
    for t in sample:
        path, _, num = t.audio[len("score:"):].partition("#")
        try:  # forceSource: time a real parse, not music21's pickle cache
            corpus.parse(path, number=int(num) if num else None, forceSource=True)
        except Exception:  # counted in the render figures below; here only time matters
            pass
    per_parse = (time.perf_counter() - t0) / len(sample)

    sample = rng.sample(cat.tracks, args.render)
    ok, reasons, t_render = 0, Counter(), 0.0
    with tempfile.TemporaryDirectory() as cache:
        for t in sample:
            t0 = time.perf_counter()
            try:
                render_audio(t, cache, max_seconds=30)
                ok += 1
            except AudioRenderError as e:
                reasons[str(e).split("(")[0].split(":")[-1].strip()] += 1
            t_render += time.perf_counter() - t0

    rows = [
        ("works imported", f"{n:,}"),
        ("import time (metadata bundle + text headers)", f"{t_import:.1f} s"),
        (f"full music21 parse, mean of {args.parse} works", f"{per_parse:.2f} s/work"),
        ("full parse of every work (extrapolated)", f"{per_parse * n / 60:.0f} min"),
        (f"rendered to audio, random {args.render} works",
         f"{ok}/{args.render} ({100 * ok / args.render:.0f}%)"),
        ("render time (parse + MIDI + synth, 30 s cap)", f"{t_render / args.render:.2f} s/work"),
    ]
    w = max(len(r[0]) for r in rows)
    print(f"| {'measure':<{w}} | value |")
    print(f"|{'-' * (w + 2)}|-------|")
    for k, v in rows:
        print(f"| {k:<{w}} | {v} |")
    if reasons:
        print("\nrender failures:", dict(reasons))


if __name__ == "__main__":
    main()
