"""The catalog's own words as vectors the track head can compare from the first step.

``wv = WordVectors.fit(documents)`` learns nothing: it counts, over the catalog's track
documents (``talkplay.catalog.track_document``), how rare each word is (idf).
``wv.encode(texts)`` -> (N, dim) float32: each text as the idf-weighted sum of its words'
directions, unit length. A word's direction is a fixed random vector seeded by the word
itself, so nothing per word is stored and a word first seen in a track added after
training gets its direction at once.

Why: a sentence encoder reads "Stormzy and Dave" as "UK rap" and loses which artist was
named, while the request's exact words are what text retrieval matches on. Random
directions in a few hundred dimensions are nearly orthogonal, so the inner product of two
such vectors is close to the idf-weighted overlap of their words (a TF-IDF cosine). The
track-row network gives every track this vector as one more modality and adds the
request's vector at ``<|music|>``; both go through projections trained with the model,
like every other input, so it is one more thing the one network reads, not a retriever
beside it.

``weights = word_weights(pairs)`` learns, from training turns (``(message, documents of the
tracks that answered it)`` pairs), how much more often than chance each word of a message is
one of its answers' words; ``wv.encode(texts, weights)`` weighs a request's words by it.
Chit-chat that titles echo ("thank", "yes", "got") is almost never in the answer's words, a
named artist almost always is (the weight is that lift squared, so a word a little above
chance counts for little); a word no training message used keeps its full weight.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

WORDS = "words"  # the modality's name in a model's ``dims``
DIM = 384
# a word weight is its lift squared: "you" 0.10 -> 0.01, "rock" 0.50 -> 0.25, a name 1 -> 1.
# On CPCD 350/50 the lift as it is ranked 0.615 / 0.418 with echo 0.061, squared 0.617 / 0.410
# with echo 0.050: the chit-chat left after the lift ("thank you!" is "you") stops pulling titles
POWER = 2.0


def tokenize(texts: Sequence[str]) -> list[list[str]]:
    """Lower-case word tokens of each text without English stop words (the BM25 baseline's rule)."""
    if not texts:
        return []
    import bm25s

    return bm25s.tokenize(list(texts), stopwords="en", return_ids=False, show_progress=False)


def direction(word: str, dim: int = DIM, seed: int = 0) -> np.ndarray:
    """The fixed random unit vector of ``word`` (the same on every machine and every run)."""
    digest = hashlib.blake2b(f"{seed}:{word}".encode(), digest_size=8).digest()
    v = np.random.default_rng(int.from_bytes(digest, "little")).standard_normal(dim)
    return (v / np.linalg.norm(v)).astype(np.float32)


@dataclass
class WordVectors:
    """Idf-weighted random-direction text vectors (see the module docstring)."""

    idf: dict[str, float]
    dim: int = DIM
    seed: int = 0
    _dirs: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    @classmethod
    def fit(cls, documents: Sequence[str], dim: int = DIM, seed: int = 0) -> WordVectors:
        """Idf (``log(1 + N / df)``) of every word in ``documents``."""
        df: Counter[str] = Counter()
        for doc in tokenize(documents):
            df.update(set(doc))
        n = max(len(documents), 1)
        return cls({w: math.log(1.0 + n / c) for w, c in df.items()}, dim, seed)

    def _direction(self, word: str) -> np.ndarray:
        v = self._dirs.get(word)
        if v is None:
            v = self._dirs[word] = direction(word, self.dim, self.seed)
        return v

    def encode(self, texts: Sequence[str], weights: Mapping[str, float] | None = None) -> np.ndarray:
        """(len(texts), dim) vectors; a text none of whose words the catalog has is zero.

        A word's weight is ``log(1 + count) * idf``; words the catalog never uses are left
        out (they would only add noise: no track can match them). Without ``weights`` every
        vector has unit length. With them (``word_weights``; 1 for a word they lack) each word's
        share is scaled by its weight, and the vector's length is its words' largest weight: a
        message of chit-chat alone comes out short, and chit-chat beside a named artist leaves
        the artist at full strength instead of diluting it.
        """
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, toks in enumerate(tokenize(texts)):
            counts = Counter(w for w in toks if w in self.idf)
            top = 0.0
            for w, c in counts.items():
                m = 1.0 if weights is None else weights.get(w, 1.0)
                out[i] += (m * math.log1p(c) * self.idf[w]) * self._direction(w)
                top = max(top, m)
            norm = float(np.linalg.norm(out[i]))
            if norm > 0:
                out[i] *= top / norm
        return out


def word_weights(pairs: Iterable[tuple[str, Sequence[str]]], prior: float = 1.0,
                 power: float = POWER) -> dict[str, float]:
    """``word_weights([(message, answer_documents), ...])`` -> ``{word: weight}`` in [0, 1].

    How much more often than chance a training turn whose message holds a word was answered
    by a track whose document holds it too: with ``c`` the share of the turns holding the word
    in their message whose answer holds it (smoothed toward 1 by ``prior`` turns) and ``b`` the
    share of all turns whose answer holds it, the lift ``(c - b) / (1 - b)``. A named artist is
    nearly always in its answer and rarely in others (near 1); "thank" never is (near 0); "you"
    is in most answers' titles whatever the message says (low). The weight is the lift to the
    ``power`` (``POWER``): a word only a little above chance ("you" 0.10 -> 0.01) then counts
    for almost nothing, where at its lift it still pulled the titles holding it. Only words
    some message used are listed; any other keeps weight 1 in ``WordVectors.encode``.
    """
    tokens: dict[str, set[str]] = {}  # a playlist's tracks answer many turns: tokenize each once

    def words_of(doc: str) -> set[str]:
        if doc not in tokens:
            tokens[doc] = set(tokenize([doc])[0])
        return tokens[doc]

    turns = 0
    said: Counter[str] = Counter()
    matched: Counter[str] = Counter()
    answered: Counter[str] = Counter()
    for message, docs in pairs:
        answer = set().union(*map(words_of, docs))
        words = set(tokenize([message])[0]) if message.strip() else set()
        turns += 1
        answered.update(answer)
        said.update(words)
        matched.update(words & answer)
    out = {}
    for w, n in sorted(said.items()):
        c, b = (matched[w] + prior) / (n + prior), answered[w] / turns
        out[w] = round((min(1.0, max(0.0, (c - b) / (1.0 - b))) if b < 1 else 0.0) ** power, 4)
    return out
