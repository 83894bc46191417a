"""Serve a TalkPlay model with vLLM, constrained to the catalog by a logits processor.

Written against **vLLM 0.11.0** (the V1 engine's ``AdapterLogitsProcessor`` interface in
``vllm.v1.sample.logits_processor``; newer releases keep it under the legacy model runner,
``VLLM_USE_V2_MODEL_RUNNER=0``). Install with ``pip install 'talkplay[vllm]'``.

1. Export the run's model plus the constraint table::

       python -m talkplay.vllm_support RUN OUT_DIR

   ``OUT_DIR`` is a plain Hugging Face folder (LoRA merged) with ``talkplay_constraint.json``
   beside the weights: the token-id sequence of every catalog track and the ids of
   ``<|music|>``/``<|/music|>``.
2. Serve it::

       vllm serve OUT_DIR --logits-processors talkplay.vllm_support:CatalogTrieLogitsProcessor

3. Ask with ``extra_body={"skip_special_tokens": False, "vllm_xargs": {"talkplay_exclude":
   json.dumps([...ids already shown...])}}`` and read the tracks back with
   ``ConstraintSpec.load(OUT_DIR).tracks_in_text(reply)``.

The pure-Python core (``CatalogTrie``, ``ConstraintSpec``, ``RequestConstraint``) needs only
numpy and torch; the vLLM class is defined only when vLLM imports.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from talkplay.atomic import write_json_atomic
from talkplay.errors import InputError, TalkPlayError
from talkplay.log import get_logger
from talkplay.modalities import MUSIC_CLOSE, MUSIC_OPEN

log = get_logger(__name__)

VLLM_VERSION = "0.11.0"
SPEC_FILE = "talkplay_constraint.json"
XARG_EXCLUDE = "talkplay_exclude"  # JSON list (or comma-separated) of track ids not to emit
XARG_MAX_TRACKS = "talkplay_max_tracks"  # music blocks allowed in one answer (default 1)
XARG_MUSIC_FIRST = "talkplay_music_first"  # answer must open with <|music|> (default true)
XARG_OFF = "talkplay_unconstrained"  # true: leave this request alone


class CatalogTrie:
    """Prefix trie over the token-id sequences of catalog tracks, stored as sorted rows.

    ``trie = CatalogTrie({"t1": [5, 9, 2], "t2": [5, 7, 1]})``; ``trie.allowed([5]) == [7, 9]``;
    ``trie.track([5, 7, 1]) == "t2"``. A prefix is a contiguous block of the sorted rows, so
    a step costs two binary searches and a million tracks fit in a few tens of MB (no
    per-node Python objects). Sequences must be distinct and none a prefix of another, so
    that every complete sequence names exactly one track.
    """

    PAD = -1

    def __init__(self, sequences: Mapping[str, Sequence[int]]) -> None:
        if not sequences:
            raise ValueError("a catalog trie needs at least one track")
        ids = list(sequences)
        lengths = np.array([len(sequences[t]) for t in ids], dtype=np.int64)
        if lengths.min() < 1:
            raise ValueError("every track needs at least one token")
        width = int(lengths.max())
        rows = np.full((len(ids), width), self.PAD, dtype=np.int64)
        for i, t in enumerate(ids):
            rows[i, : lengths[i]] = sequences[t]
        if (rows[rows != self.PAD] < 0).any():
            raise ValueError("token ids must be non-negative")
        order = np.lexsort(rows.T[::-1])
        self.rows = rows[order]
        self.lengths = lengths[order]
        self.track_ids = [ids[i] for i in order]
        self.row_of = {t: i for i, t in enumerate(self.track_ids)}
        same = (self.rows[1:] == self.rows[:-1]).all(axis=1)
        if same.any():
            j = int(np.flatnonzero(same)[0])
            raise ValueError(f"tracks {self.track_ids[j]!r} and {self.track_ids[j + 1]!r} share one sequence")
        # sorted order puts a prefix right before the first row that extends it
        for j in range(len(ids) - 1):
            n = self.lengths[j]
            if n < self.lengths[j + 1] and (self.rows[j, :n] == self.rows[j + 1, :n]).all():
                a, b = self.track_ids[j], self.track_ids[j + 1]
                raise ValueError(f"sequence of {a!r} is a prefix of {b!r}")
        self._root_cache: tuple[np.ndarray, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.track_ids)

    @property
    def token_ids(self) -> np.ndarray:
        """Every token id that occurs in some track's sequence (sorted)."""
        return np.unique(self.rows[self.rows != self.PAD])

    def step(self, node: tuple[int, int, int], token: int) -> tuple[int, int, int] | None:
        """Follow ``token`` from ``node = (depth, lo, hi)``; None when no track continues so."""
        depth, lo, hi = node
        if depth >= self.rows.shape[1]:
            return None
        col = self.rows[lo:hi, depth]
        a = lo + int(np.searchsorted(col, token, side="left"))
        b = lo + int(np.searchsorted(col, token, side="right"))
        return (depth + 1, a, b) if a < b else None

    def root(self) -> tuple[int, int, int]:
        return (0, 0, len(self.track_ids))

    def walk(self, prefix: Iterable[int]) -> tuple[int, int, int] | None:
        node: tuple[int, int, int] | None = self.root()
        for tok in prefix:
            node = self.step(node, int(tok))
            if node is None:
                return None
        return node

    def _children(self, node: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
        """(tokens, start rows) of the distinct next tokens below ``node``; ends excluded."""
        depth, lo, hi = node
        if node == self.root() and self._root_cache is not None:
            return self._root_cache
        col = self.rows[lo:hi, depth] if depth < self.rows.shape[1] else np.empty(0, dtype=np.int64)
        if col.size == 0:
            out = (col, col)
        else:
            starts = np.concatenate(([0], np.flatnonzero(np.diff(col)) + 1))
            tokens, starts = col[starts], starts + lo
            keep = tokens != self.PAD
            out = (tokens[keep], starts[keep])
        if node == self.root():
            self._root_cache = out
        return out

    def allowed_at(self, node: tuple[int, int, int], excluded_rows: np.ndarray | None = None) -> np.ndarray:
        """Next token ids below ``node`` that still lead to a track not in ``excluded_rows``."""
        tokens, starts = self._children(node)
        if excluded_rows is None or excluded_rows.size == 0 or tokens.size == 0:
            return tokens
        ends = np.append(starts[1:], node[2])
        gone = np.searchsorted(excluded_rows, ends) - np.searchsorted(excluded_rows, starts)
        return tokens[(ends - starts) > gone]

    def allowed(self, prefix: Sequence[int], exclude: Iterable[str] = ()) -> list[int]:
        """Token ids that may follow ``prefix`` (sorted); [] at a complete sequence."""
        node = self.walk(prefix)
        if node is None:
            return []
        return [int(t) for t in self.allowed_at(node, self.excluded_rows(exclude))]

    def track_at(self, node: tuple[int, int, int]) -> str | None:
        depth, lo, hi = node
        if hi - lo == 1 and self.lengths[lo] == depth:
            return self.track_ids[lo]
        return None

    def track(self, prefix: Sequence[int]) -> str | None:
        """The track whose full sequence is ``prefix``, else None."""
        node = self.walk(prefix)
        return None if node is None else self.track_at(node)

    def excluded_rows(self, exclude: Iterable[str]) -> np.ndarray:
        rows = sorted({self.row_of[t] for t in exclude if t in self.row_of})
        return np.asarray(rows, dtype=np.int64)


@dataclass
class ConstraintSpec:
    """What the logits processor needs, saved as ``talkplay_constraint.json`` next to a model.

    ``spec = ConstraintSpec(music_open=7, music_close=8, tracks={"t1": [9, 10]}, vocab={...})``.
    ``vocab`` maps each music token string to its id so that replies can be decoded.
    """

    music_open: int
    music_close: int
    tracks: dict[str, list[int]]
    vocab: dict[str, int] = field(default_factory=dict)
    version: int = 1

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        if path.is_dir() or not path.suffix:
            path = path / SPEC_FILE
        write_json_atomic(path, {"format": "talkplay-constraint", "version": self.version,
                                 "music_open": self.music_open, "music_close": self.music_close,
                                 "vocab": self.vocab, "tracks": self.tracks})
        return path

    @classmethod
    def load(cls, path: str | Path) -> ConstraintSpec:
        path = Path(path)
        if path.is_dir():
            path = path / SPEC_FILE
        if not path.exists():
            raise InputError(f"no catalog constraint here; export with `python -m {__name__} RUN OUT`",
                             file=str(path))
        d = json.loads(path.read_text(encoding="utf-8"))
        for key in ("music_open", "music_close", "tracks"):
            if key not in d:
                raise InputError("required field is missing", file=str(path), field=key)
        return cls(music_open=int(d["music_open"]), music_close=int(d["music_close"]),
                   tracks={str(k): [int(x) for x in v] for k, v in d["tracks"].items()},
                   vocab={str(k): int(v) for k, v in d.get("vocab", {}).items()},
                   version=int(d.get("version", 1)))

    def trie(self) -> CatalogTrie:
        return CatalogTrie(self.tracks)

    def tracks_in_text(self, text: str, trie: CatalogTrie | None = None) -> list[str]:
        """Track ids written in a decoded reply (``skip_special_tokens=False``), in order."""
        trie = trie or self.trie()
        out = []
        pattern = re.escape(MUSIC_OPEN) + r"(.*?)" + re.escape(MUSIC_CLOSE)
        for block in re.findall(pattern, text, flags=re.S):
            ids = [self.vocab.get(tok) for tok in re.findall(r"<[^<>\s]+>", block)]
            if ids and None not in ids:
                tid = trie.track([int(i) for i in ids])  # type: ignore[arg-type]
                if tid is not None:
                    out.append(tid)
        return out


class RequestConstraint:
    """The per-request rule, called as ``logits = rc(output_ids, logits)`` (vLLM's signature).

    Outside a music block every music-code token is masked; ``<|music|>`` opens a block
    (forced as the first token when ``music_first``) in which only continuations of the
    catalog trie are allowed, skipping excluded and already written tracks; a complete
    sequence forces ``<|/music|>``. Parsing is incremental: ``output_ids`` only grows
    between calls in one request, and is re-read from the start if it ever shrinks.
    """

    def __init__(self, trie: CatalogTrie, music_open: int, music_close: int, exclude: Iterable[str] = (),
                 max_tracks: int = 1, music_first: bool = True) -> None:
        self.trie = trie
        self.music_open = music_open
        self.music_close = music_close
        self.exclude = set(exclude)
        self.max_tracks = max_tracks
        self.music_first = music_first
        self._code_ids = trie.token_ids
        self._tensors: dict[tuple[str, str], Any] = {}
        self._reset()

    def _reset(self) -> None:
        self.pos = 0
        self.node: tuple[int, int, int] | None = None  # inside a music block when not None
        self.written: list[str] = []
        self.pending_close = False
        self.broken = False  # the text left the trie (e.g. constraint switched on mid-way)
        self._excluded = self.trie.excluded_rows(self.exclude)

    def _advance(self, output_ids: Sequence[int]) -> None:
        if len(output_ids) < self.pos:
            self._reset()
        for tok in output_ids[self.pos:]:
            tok = int(tok)
            if self.pending_close:
                self.pending_close = False
                continue  # the forced <|/music|>
            if self.node is None:
                if tok == self.music_open:
                    self.node = self.trie.root()
                continue
            nxt = self.trie.step(self.node, tok)
            if nxt is None:
                self.broken, self.node = True, None
                continue
            tid = self.trie.track_at(nxt)
            if tid is not None:
                self.written.append(tid)
                self._excluded = self.trie.excluded_rows(self.exclude | set(self.written))
                self.node, self.pending_close = None, True
            else:
                self.node = nxt
        self.pos = len(output_ids)

    def next_rule(self, output_ids: Sequence[int]) -> tuple[str, list[int] | np.ndarray]:
        """("only", ids) or ("ban", ids) for the next token, after reading ``output_ids``."""
        self._advance(output_ids)
        if self.pending_close:
            return "only", [self.music_close]
        if self.node is not None:
            return "only", self.trie.allowed_at(self.node, self._excluded)
        can_open = (len(self.written) < self.max_tracks and not self.broken
                    and self.trie.allowed_at(self.trie.root(), self._excluded).size > 0)
        if self.music_first and can_open and self.pos == 0:
            return "only", [self.music_open]
        banned = self._code_ids if can_open else np.append(self._code_ids, self.music_open)
        return "ban", banned

    def _tensor(self, kind: str, ids: Any, device: Any) -> Any:
        import torch

        if kind == "ban":
            key = (str(device), "ban-open" if len(ids) > len(self._code_ids) else "ban")
            if key not in self._tensors:
                self._tensors[key] = torch.as_tensor(np.asarray(ids, dtype=np.int64), device=device)
            return self._tensors[key]
        return torch.as_tensor(np.asarray(ids, dtype=np.int64), device=device)

    def __call__(self, output_ids: Sequence[int], logits: Any) -> Any:
        kind, ids = self.next_rule(output_ids)
        idx = self._tensor(kind, ids, logits.device)
        idx = idx[idx < logits.shape[-1]]
        if kind == "ban":
            logits[..., idx] = float("-inf")
            return logits
        out = logits.new_full(logits.shape, float("-inf"))
        out[..., idx] = logits[..., idx]
        return out


def parse_exclude(value: Any) -> list[str]:
    """``vllm_xargs`` carry strings: accept a JSON list, a comma-separated string or a list."""
    if value is None or value == "":
        return []
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    if isinstance(value, str):
        s = value.strip()
        if s.startswith("["):
            try:
                return [str(v) for v in json.loads(s)]
            except json.JSONDecodeError as e:
                raise ValueError(f"{XARG_EXCLUDE} is not a JSON list: {e}") from e
        return [p.strip() for p in s.split(",") if p.strip()]
    raise ValueError(f"{XARG_EXCLUDE} must be a JSON list or comma-separated ids, got {type(value).__name__}")


def _truthy(value: Any, default: bool) -> bool:
    if value is None:
        return default
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def request_constraint(spec: ConstraintSpec, trie: CatalogTrie, extra_args: Mapping[str, Any] | None
                       ) -> RequestConstraint | None:
    """Build one request's rule from its ``vllm_xargs``; None when it opts out."""
    args = dict(extra_args or {})
    if _truthy(args.get(XARG_OFF), False):
        return None
    max_tracks = int(args.get(XARG_MAX_TRACKS, 1))
    if max_tracks < 0:
        raise ValueError(f"{XARG_MAX_TRACKS} must be >= 0")
    return RequestConstraint(trie, spec.music_open, spec.music_close,
                             exclude=parse_exclude(args.get(XARG_EXCLUDE)), max_tracks=max_tracks,
                             music_first=_truthy(args.get(XARG_MUSIC_FIRST), True))


# --- vLLM adapter (defined only where vLLM imports) -------------------------------------

try:  # pragma: no cover - exercised only with the `vllm` extra installed
    from vllm.v1.sample.logits_processor import AdapterLogitsProcessor as _VllmAdapter

    HAVE_VLLM = True
except Exception:  # ImportError, or a vLLM whose import fails on this machine (no GPU)
    _VllmAdapter = None
    HAVE_VLLM = False

if HAVE_VLLM:  # pragma: no cover

    class CatalogTrieLogitsProcessor(_VllmAdapter):  # type: ignore[misc, valid-type]
        """Load with ``vllm serve DIR --logits-processors talkplay.vllm_support:CatalogTrieLogitsProcessor``.

        Reads ``talkplay_constraint.json`` from the served model folder, or from the path in
        ``TALKPLAY_CONSTRAINT`` (needed when the model is a hub name).
        """

        def __init__(self, vllm_config: Any, device: Any, is_pin_memory: bool) -> None:
            super().__init__(vllm_config, device, is_pin_memory)
            import os

            where = os.environ.get("TALKPLAY_CONSTRAINT") or vllm_config.model_config.model
            self.spec = ConstraintSpec.load(where)
            self.trie = self.spec.trie()
            log.info("catalog constraint: %d tracks from %s", len(self.trie), where)

        @classmethod
        def validate_params(cls, params: Any) -> None:
            args = getattr(params, "extra_args", None) or {}
            parse_exclude(args.get(XARG_EXCLUDE))
            if XARG_MAX_TRACKS in args:
                int(args[XARG_MAX_TRACKS])

        def is_argmax_invariant(self) -> bool:
            return False  # it changes which token wins

        def new_req_logits_processor(self, params: Any) -> RequestConstraint | None:
            return request_constraint(self.spec, self.trie, getattr(params, "extra_args", None))


# --- export ------------------------------------------------------------------------------


def build_spec(music: Any, hf_tokenizer: Any) -> ConstraintSpec:
    """Map every catalog track's music tokens to ids of ``hf_tokenizer`` (the expanded one)."""
    def tid(tok: str) -> int:
        ids = hf_tokenizer.convert_tokens_to_ids([tok])
        i = ids[0] if ids else None
        if i is None or i == getattr(hf_tokenizer, "unk_token_id", object()):
            raise TalkPlayError(f"music token {tok} is not in the model's vocabulary (vocab not expanded?)")
        return int(i)

    vocab = {tok: tid(tok) for tok in music.vocab}
    tracks = {t: [vocab[x] if x in vocab else tid(x) for x in music.track_tokens(t)] for t in music.track_ids}
    return ConstraintSpec(music_open=tid(MUSIC_OPEN), music_close=tid(MUSIC_CLOSE), tracks=tracks,
                          vocab=vocab)


def export_for_vllm(run: Any, out_dir: str | Path) -> dict[str, Any]:
    """Write a vLLM-ready folder: ``export_for_vllm(Run("runs/demo"), "runs/demo/vllm")``.

    LoRA adapters are merged; the tokenizer (with music tokens as normal added tokens) and
    ``talkplay_constraint.json`` are written beside the weights.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from talkplay.tokenizer import MusicTokenizer

    model_dir = Path(run.model_dir)
    if not (model_dir / "config.json").exists() and not (model_dir / "adapter_config.json").exists():
        raise TalkPlayError(f"no trained model in {model_dir}; run `talkplay train` first")
    meta = model_dir / "talkplay.json"
    if meta.exists() and json.loads(meta.read_text(encoding="utf-8")).get("track_repr") == "content":
        raise TalkPlayError(
            f"{model_dir} was trained with content-grounded tracks, which add the request's text "
            "embedding at <|music|>; a stock vLLM server cannot do that, so the export covers "
            "`--track-repr codes` models only. Serve this one with `talkplay serve`.")
    out_dir = Path(out_dir)
    tok = AutoTokenizer.from_pretrained(model_dir)
    if (model_dir / "adapter_config.json").exists():
        from peft import AutoPeftModelForCausalLM

        model = AutoPeftModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).merge_and_unload()
    else:
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    spec = build_spec(MusicTokenizer.load(run.tokenizer_dir), tok)
    spec.save(out_dir)
    return {"out": str(out_dir), "tracks": len(spec.tracks), "music_tokens": len(spec.vocab),
            "vllm_version": VLLM_VERSION,
            "serve": f"vllm serve {out_dir} --logits-processors {__name__}:CatalogTrieLogitsProcessor"}


def main(argv: list[str] | None = None) -> int:
    """``python -m talkplay.vllm_support RUN OUT_DIR``: export and print the serve command."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        sys.stderr.write(f"usage: python -m {__name__} RUN OUT_DIR\n")
        return 2
    from talkplay.run import Run

    try:
        info = export_for_vllm(Run(argv[0]), argv[1])
    except TalkPlayError as e:
        sys.stderr.write(f"error: {e}\n")
        return 2
    sys.stdout.write(json.dumps(info) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
