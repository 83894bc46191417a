"""The music tokenizer: each track as a short, unique sequence of music tokens.

``tokenize_run(run, TokenizerConfig())`` fits and saves it; ``MusicTokenizer.load(
run.tokenizer_dir)`` reads it back; ``extend_run(run, tracks)`` gives new tracks codes
with the existing codebooks. See ``talkplay.tokenizer.core`` for the sequence format.
"""

from talkplay.tokenizer.core import MusicTokenizer, Position, TokenizerConfig
from talkplay.tokenizer.pipeline import extend_run, load_embeddings, tokenize_run
from talkplay.tokenizer.trie import CodeTrie, IdTrie

__all__ = ["CodeTrie", "IdTrie", "MusicTokenizer", "Position", "TokenizerConfig", "extend_run",
           "load_embeddings", "tokenize_run"]
