"""What the untrained track network ranks, without the LM: how large the context and the
current turn should start.

Run as ``python benchmarks/untrained_probe.py RUN [--protocol cpcd] [--alphas 0,0.5,1,2]
[--decays 0.5,1] [--currents 0,1] [--modalities metadata] [--words-gain 1.0]``. For every
(alpha, decay, current) a system is scored beside dense retrieval, BM25 and hybrid on RUN's
held-out split: the request vector (text embedding and words of every user turn), plus
``current`` times the same vector of the turn's own message alone, and, at ``alpha`` times
the request's size, the context (the rows of the conversation's tracks so far, each earlier
turn weighing ``decay`` times the next), through a freshly initialised ``TrackNet``'s
projections and read-out, scored by cosine against its rows. That is what the model's head
sees at initialisation when the LM passes the injected vector through unchanged, and what
training starts from. The last column, "named hit@10", pools the requests that name an
album, artist, playlist or tag (synthesized dialogs; "–" for protocols without kinds).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cpcd import print_table  # noqa: E402

import talkplay.evaluate.runner as runner  # noqa: E402
from talkplay.baselines import REGISTRY, CatalogRecommender, user_text  # noqa: E402
from talkplay.encoders.text import TextEncoder  # noqa: E402
from talkplay.evaluate import EvalConfig, evaluate_run  # noqa: E402
from talkplay.run import Run  # noqa: E402
from talkplay.tracks.data import context_tracks  # noqa: E402
from talkplay.tracks.features import TrackFeatures  # noqa: E402
from talkplay.tracks.network import TrackNet, TrackNetConfig  # noqa: E402


class Untrained(CatalogRecommender):
    """The untrained network's head, with the context at ``alpha`` times the request's size."""

    def __init__(self, alpha: float, decay: float, current: float, args: argparse.Namespace,
                 seed: int = 0) -> None:
        super().__init__(seed)
        self.alpha, self.decay, self.current, self.args = alpha, decay, current, args

    def _fit(self, catalog, train, run) -> None:  # noqa: ANN001
        mods = self.args.modalities.split(",") if self.args.modalities else None
        self.f = TrackFeatures.from_run(run, modalities=mods, words=True)
        self.net = TrackNet.create(TrackNetConfig(
            dims=self.f.dims, hidden=576, query_dim=384, text_modalities=self.f.text_modalities,
            unit_query=True, words_gain=self.args.words_gain))
        with torch.no_grad():
            self.rows = torch.nn.functional.normalize(self.net.rows(*self.f.tensors()), dim=-1)
        self.enc = TextEncoder(self.f.text_model)
        self.at = {t.id: i for i, t in enumerate(catalog.tracks)}

    @torch.no_grad()
    def scores(self, conversation) -> np.ndarray:  # noqa: ANN001
        texts = [user_text(conversation, "all"), user_text(conversation, "current")]
        q, cur = self.net.query(torch.from_numpy(self.f.requests(self.enc.encode(texts), texts)))
        size = q.norm()  # the context is sized by the request alone, as in ``TrackNet.create``
        q = q + self.current * cur  # as ``TrackNet.query`` adds the turn's own message
        last = len(conversation.turns) - 1
        ctx = {self.at[t]: w for t, w in context_tracks(conversation, last, self.decay) if t in self.at}
        if ctx and self.alpha:
            c = (torch.tensor(list(ctx.values()))[:, None] * self.rows[list(ctx)]).sum(0)
            q = q + self.alpha * size * torch.nn.functional.normalize(c, dim=-1)
        u = torch.nn.functional.normalize(self.net.readout(q), dim=-1)
        return (self.rows @ u).numpy()


NAMED = ("album", "artist", "playlist", "tag")  # request kinds that name an attribute (synthetic dialogs)


def named(system: dict) -> str:
    """Micro hit@10 over the turns whose request names an attribute ("–" without kinds)."""
    kinds = [system.get("by_kind", {}).get(k) for k in NAMED]
    n = sum(k["n_turns"] for k in kinds if k)
    return f"{sum(k['hit@10'] * k['n_turns'] for k in kinds if k) / n:.3f}" if n else "–"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--protocol", default="cpcd")
    ap.add_argument("--alphas", default="0,0.5,1,2")
    ap.add_argument("--decays", default="0.5,1")
    ap.add_argument("--currents", default="0")
    ap.add_argument("--modalities", default=None)
    ap.add_argument("--words-gain", type=float, default=1.0)
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    names = []
    for c in (float(x) for x in args.currents.split(",")):
        for a in (float(x) for x in args.alphas.split(",")):
            for d in ((float(x) for x in args.decays.split(",")) if a else [0.5]):
                name = f"alpha {a:g}" + (f", decay {d:g}" if a else "") + (f", current {c:g}" if c else "")
                REGISTRY[name] = lambda a=a, d=d, c=c, **kw: Untrained(a, d, c, args, **kw)
                names.append(name)
    runner.BASELINES = tuple(REGISTRY)  # the probe systems are scored like baselines
    systems = [*names, "dense", "bm25", "hybrid"]
    rep = evaluate_run(Run(args.run), EvalConfig(protocol=args.protocol, systems=systems, n_boot=0,
                                                 write=False, replies=0))
    rows = [[n, *(f"{s[p]['macro'][m]:.3f}" for p in ("all", "cold") for m in ("hit@10", "mrr@100")),
             named(s)] for n, s in rep["systems"].items() if s.get("is_system", True)]
    print_table(f"untrained network, {args.protocol}", ["system", "hit@10", "mrr@100", "cold hit@10",
                                                         "cold mrr@100", "named hit@10"], rows, args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
