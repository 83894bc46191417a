"""The music-codes representation, kept beside the content model for comparison: each track
a short sequence of k-means code tokens (``talkplay.tokenizer``), ranked by constrained
decoding.

``CodesEngine.load(run_dir)`` (``talkplay.codes.engine``); ``train_codes(run, cfg)``
(``talkplay.codes.train``); the trie constraint and ranking in ``constraint`` and
``ranking``. Nothing on the content model's path imports this package.
"""

from talkplay.codes.constraint import ConstraintState, MusicVocab, TrieConstraint
from talkplay.codes.engine import CodesEngine
from talkplay.codes.ranking import rank_tracks

__all__ = ["CodesEngine", "ConstraintState", "MusicVocab", "TrieConstraint", "rank_tracks"]
