"""Synthetic conversations from a catalog and its playlists, seeded and deterministic.

``syn = Synthesizer(catalog, seed=0)``; ``syn.conversation(i)`` is conversation ``i`` of the
seed (always the same), ``syn.alignment(track_ids, i)`` packs catalog-alignment turns
("play TITLE by ARTIST" -> that track; "what is this track? <music>" -> its facts).

Requests come by artist, tag, mood, lyric theme, playlist, year, decade or album, and
follow-ups ask for more like the last one, the same artist, something slower or faster
(where tempo is known), or reject the last track ("not that one": it goes to the turn's
``disliked``; a follow-up that builds on a track marks it ``liked``). Replies state only
facts read from the track: title, artist, album, year, tags, tempo, lyric theme.
Phrasings live in ``templates.yaml``.
"""

from __future__ import annotations

import functools
import itertools
import random
import re
import string
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from talkplay.catalog import Catalog, Conversation, Track, Turn

TEMPLATES_FILE = Path(__file__).with_name("templates.yaml")
_WORD = re.compile(r"[a-z][a-z']{3,}")
SAMPLE = 200  # candidates looked at per similarity query, so large tags stay cheap


@functools.lru_cache(maxsize=4)
def load_templates(path: str | None = None) -> dict[str, Any]:
    """The phrasing tables: ``load_templates()["requests"]["artist"]``."""
    return yaml.safe_load(Path(path or TEMPLATES_FILE).read_text(encoding="utf-8"))


def _fields(template: str) -> set[str]:
    return {f for _, f, _, _ in string.Formatter().parse(template) if f}


def tempo_of(track: Track) -> float | None:
    """A track's tempo in BPM from ``extra["tempo"]`` or ``extra["bpm"]``, if known."""
    for key in ("tempo", "bpm"):
        v = track.extra.get(key)
        try:
            f = float(v)
        except (TypeError, ValueError):
            continue
        if 20 <= f <= 400:
            return f
    return None


class Synthesizer:
    """Generates conversations over one catalog: ``Synthesizer(catalog, seed=0).conversation(3)``."""

    def __init__(self, catalog: Catalog, seed: int = 0, min_turns: int = 2, max_turns: int = 5,
                 templates: dict[str, Any] | None = None) -> None:
        self.catalog = catalog
        self.seed = seed
        self.min_turns, self.max_turns = min_turns, max_turns
        self.t = templates or load_templates()
        self.moods = {m.lower() for m in self.t.get("moods", [])}
        self.stop = {w.lower() for w in self.t.get("stopwords", [])}
        self._index()

    # -- indexes ------------------------------------------------------------------------
    def _index(self) -> None:
        cat = self.catalog
        self.pools: dict[str, dict[str, list[str]]] = {k: defaultdict(list) for k in
                                                       ("artist", "tag", "mood", "lyric", "playlist",
                                                        "year", "decade", "album")}
        self.theme: dict[str, str] = {}
        self.tempo: dict[str, float] = {}
        for tr in cat.tracks:
            for a in tr.artists[:2]:
                self.pools["artist"][a].append(tr.id)
            for tag in dict.fromkeys(x.strip().lower() for x in tr.tags):
                if tag:
                    self.pools["mood" if tag in self.moods else "tag"][tag].append(tr.id)
            if tr.year:
                self.pools["year"][str(tr.year)].append(tr.id)
                self.pools["decade"][f"{tr.year // 10 * 10}s"].append(tr.id)
            if tr.album:
                self.pools["album"][tr.album].append(tr.id)
            theme = self._theme(tr.lyrics)
            if theme:
                self.theme[tr.id] = theme
                self.pools["lyric"][theme].append(tr.id)
            tempo = tempo_of(tr)
            if tempo:
                self.tempo[tr.id] = tempo
        self.playlists_of: dict[str, list[int]] = defaultdict(list)
        self.playlist_tracks: list[list[str]] = []
        for pl in cat.playlists:
            ids = [t for t in pl.track_ids if t in cat.index]
            if len(ids) < 2:
                continue
            if pl.name.strip():
                self.pools["playlist"][pl.name.strip()].extend(ids)
            for t in ids:
                self.playlists_of[t].append(len(self.playlist_tracks))
            self.playlist_tracks.append(ids)
        # request kinds with something to ask for, and their values in a fixed order
        self.kinds = {k: sorted(v) for k, v in self.pools.items() if v}
        self._cum = {k: list(itertools.accumulate(len(self.pools[k][v]) ** 0.5 for v in vals))
                     for k, vals in self.kinds.items()}
        self.by_tempo = sorted(self.tempo, key=lambda t: (self.tempo[t], t))

    def _theme(self, lyrics: str | None) -> str | None:
        if not lyrics:
            return None
        counts = Counter(w for w in _WORD.findall(lyrics.lower()) if w not in self.stop and "'" not in w)
        if not counts:
            return None
        return min(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0]

    # -- text ---------------------------------------------------------------------------
    def _fill(self, rng: random.Random, options: Sequence[str], **values: Any) -> str | None:
        usable = [o for o in options if all(values.get(f) not in (None, "") for f in _fields(o))]
        return rng.choice(usable).format(**values) if usable else None

    def facts(self, tr: Track) -> dict[str, Any]:
        """The true facts a reply may state about ``tr``."""
        tags = [t for t in tr.tags if t.strip()][:3]
        return {"title": tr.title, "artist": " & ".join(tr.artists[:2]) or None, "album": tr.album,
                "year": tr.year, "tags": ", ".join(tags) or None,
                "tempo": round(self.tempo[tr.id]) if tr.id in self.tempo else None,
                "theme": self.theme.get(tr.id)}

    def reply(self, rng: random.Random, tr: Track, kind: str, describe: bool = False,
              max_facts: int | None = None) -> str:
        """A reply naming ``tr`` and one to three true facts (at most ``max_facts``), leaning
        on what was asked."""
        f = self.facts(tr)
        r = self.t["replies"]
        if describe:
            parts = [self._fill(rng, r["describe"] if f["artist"] else r["describe_no_artist"], **f)]
        else:
            parts = [self._fill(rng, r["intro"] if f["artist"] else r["intro_no_artist"], **f)]
        lead = {"slower": "slower", "faster": "faster", "lyric": "theme", "mood": "tags",
                "tag": "tags", "year": "year", "decade": "year", "album": "album"}.get(kind)
        extra = [k for k in ("album", "year", "tags", "tempo", "theme") if f[k] not in (None, "")]
        rng.shuffle(extra)
        skip = {lead, "theme"} | ({"tempo"} if lead in ("slower", "faster") else set())
        chosen = ([lead] if lead else []) + [k for k in extra if k not in skip]
        n = rng.randint(1, 3 if describe else 2)
        if max_facts is not None:
            n = min(n, max_facts)
        for key in chosen[:n]:
            text = self._fill(rng, r.get(key, []), **f)
            if text:
                parts.append(text)
        return " ".join(p for p in parts if p)

    # -- conversations --------------------------------------------------------------------
    def _request(self, rng: random.Random) -> tuple[str, str, list[str]]:
        """A first request: kind by the templates' ``kind_weights``, value weighted by the
        square root of how many tracks fit (broad genres more often than one-track tags)."""
        kinds = sorted(self.kinds)
        kw = self.t.get("kind_weights", {})
        kind = rng.choices(kinds, weights=[float(kw.get(k, 1.0)) for k in kinds])[0]
        value = rng.choices(self.kinds[kind], cum_weights=self._cum[kind])[0]
        return kind, value, self.pools[kind][value]

    def _similar(self, rng: random.Random, tid: str, used: set[str]) -> list[str]:
        """Tracks like ``tid``: playlist neighbours if any, else shared tags and artists."""
        pls = self.playlists_of.get(tid)
        if pls:
            counts = Counter(t for p in pls for t in self.playlist_tracks[p] if t not in used and t != tid)
            if counts:  # strongest co-occurrence first
                return [t for t, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]
        tr = self.catalog.get(tid)
        tags = {x.lower() for x in tr.tags}
        pools = [self.pools["artist"].get(a, []) for a in tr.artists[:2]]
        pools += [self.pools["mood" if t in self.moods else "tag"].get(t, []) for t in sorted(tags)]
        cands = set()
        for p in pools:
            cands.update(p if len(p) <= SAMPLE else rng.sample(p, SAMPLE))
        cands -= used | {tid}
        if not cands:
            return []

        def score(c: str) -> tuple[float, str]:
            o = self.catalog.get(c)
            return (-(len(tags & {x.lower() for x in o.tags}) + 2 * len(set(tr.artists) & set(o.artists))), c)

        return sorted(cands, key=score)[:5]

    def _tempo_step(self, tid: str, slower: bool, used: set[str]) -> list[str]:
        if tid not in self.tempo:
            return []
        t0 = self.tempo[tid]
        lo, hi = (0.6 * t0, 0.92 * t0) if slower else (1.08 * t0, 1.6 * t0)
        cands = [t for t in self.by_tempo if lo <= self.tempo[t] <= hi and t not in used and t != tid]
        tags = {x.lower() for x in self.catalog.get(tid).tags}
        close = [t for t in cands if tags & {x.lower() for x in self.catalog.get(t).tags}]
        return close or cands

    def conversation(self, index: int) -> Conversation:
        """Synthetic conversation ``index`` of this seed; id ``syn-<seed>-<index>``."""
        seed_key = f"{self.seed}:{index}"
        rng = random.Random(seed_key)
        n_turns = rng.randint(self.min_turns, self.max_turns)
        req = self.t["requests"]
        fol = self.t["followups"]
        kind, value, pool = self._request(rng)
        used: set[str] = set()
        turns: list[Turn] = []
        first = rng.choice(pool)
        user = self._fill(rng, req[kind], **{_slot(kind): value})
        turns.append(self._turn(rng, user or value, first, kind, value, candidates=len(pool)))
        used.add(first)
        while len(turns) < n_turns:
            last = turns[-1].recommended[0]
            last_tr = self.catalog.get(last)
            options: list[tuple[str, list[str]]] = []
            rest = [t for t in pool if t not in used]
            if rest:
                options.append(("reject", rest))
            sim = self._similar(rng, last, used)
            if sim:
                options.append(("more_like", sim))
            if last_tr.artists:
                same = [t for t in self.pools["artist"].get(last_tr.artists[0], []) if t not in used]
                if same:
                    options.append(("same_artist", same))
            for step in ("slower", "faster"):
                c = self._tempo_step(last, step == "slower", used)
                if c:
                    options.append((step, c))
            options.append(("new", []))
            move, cands = rng.choice(options)
            if move == "new":
                kind, value, pool = self._request(rng)
                cands = [t for t in pool if t not in used]
                if not cands:
                    break
                user = self._fill(rng, req[kind], **{_slot(kind): value})
                turn_kind, turn_value = kind, value
            elif move == "reject":
                turns[-1].disliked = [last]
                user = self._fill(rng, fol["reject_keep"], value=value) if kind in ("tag", "mood") \
                    and rng.random() < 0.4 else self._fill(rng, fol["reject"])
                turn_kind, turn_value = "reject", None
            else:
                turns[-1].liked = [last]
                user = self._fill(rng, fol[move], artist=(last_tr.artists or [None])[0])
                turn_kind, turn_value = move, None
            drawn_from = cands[:5] if move in ("slower", "faster", "more_like") else cands
            pick = rng.choice(drawn_from)
            turns.append(self._turn(rng, user or "Another one.", pick, turn_kind, turn_value,
                                    rejected=move == "reject", candidates=len(drawn_from)))
            used.add(pick)
        return Conversation(id=f"syn-{self.seed}-{index}", turns=turns, source="synthetic",
                            extra={"synthetic": True, "seed": seed_key})

    def _turn(self, rng: random.Random, user: str, tid: str, kind: str, value: str | None = None,
              rejected: bool = False, candidates: int | None = None) -> Turn:
        reply = self.reply(rng, self.catalog.get(tid), kind)
        if rejected:
            reply = self._fill(rng, self.t["replies"]["rejected"]) + " " + reply
        extra: dict[str, Any] = {"kind": kind}
        if value is not None:  # what was asked for, e.g. the artist or tag
            extra["value"] = value
        if candidates is not None:
            # how many tracks fit the request equally well; the pick is uniform among them, so
            # no recommender can expect more than min(1, k / candidates) of hit@k here
            extra["candidates"] = candidates
        return Turn(user=user, assistant=reply, recommended=[tid], extra=extra)

    def alignment(self, items: Sequence[tuple[str, str]], index: int) -> Conversation:
        """Alignment turns for ``(track_id, "play"|"describe")`` items; id ``align-<seed>-<index>``."""
        rng = random.Random(f"align:{self.seed}:{index}")
        a = self.t["alignment"]
        turns = []
        for tid, how in items:
            tr = self.catalog.get(tid)
            f = self.facts(tr)
            if how == "play":
                user = self._fill(rng, a["play"] if f["artist"] else a["play_untitled_artist"], **f)
                # "play X" needs no more than naming X: alignment is most of the tokens trained on
                turns.append(Turn(user=user or tr.title, assistant=self.reply(rng, tr, "align", max_facts=0),
                                  recommended=[tid], extra={"kind": "align_play"}))
            else:
                turns.append(Turn(user=self._fill(rng, a["describe"]) or "What is this track?",
                                  assistant=self.reply(rng, tr, "align", describe=True),
                                  extra={"kind": "align_describe", "user_tracks": [tid]}))
        extra = {"synthetic": True, "alignment": True, "seed": f"align:{self.seed}:{index}"}
        return Conversation(id=f"align-{self.seed}-{index}", turns=turns, source="alignment", extra=extra)


def _slot(kind: str) -> str:
    return {"lyric": "theme"}.get(kind, kind)
