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

A content-grounded model (the default ``--track-repr content``) exports the same way, with
one vocabulary token per track (``<|track_i|>``: its row as input embedding, its track-head
row as output row; ``export_content_for_vllm``). The request it reads at ``<|music|>`` is an
embedding, not a token, so serve it with ``--enable-prompt-embeds`` and send
``ContentEngine.load(RUN).prompt_embeds(conversation)`` as the prompt: the first generated
token's logprobs rank the catalog exactly as ``talkplay recommend`` does. Export again after
tracks are added.

The per-request rule is the engine's own (``talkplay.codes.constraint.ConstraintState``
over ``MusicVocab``'s catalog trie) and needs only torch; the vLLM class is defined only
when vLLM imports.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from talkplay.atomic import write_json_atomic
from talkplay.codes.constraint import ConstraintState, MusicVocab
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
XARG_IN_BLOCK = "talkplay_in_block"  # true: the prompt ends with <|music|> (content models' prompt embeds)


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

    @classmethod
    def from_vocab(cls, vocab: MusicVocab) -> ConstraintSpec:
        """The table of an engine's ``MusicVocab`` (what ``export_for_vllm`` saves)."""
        return cls(music_open=vocab.open_id, music_close=vocab.close_id,
                   tracks={t: list(s) for t, s in vocab.sequences.items()},
                   vocab={tok: i for i, tok in sorted(vocab.id_to_token.items())})

    def music_vocab(self) -> MusicVocab:
        """The engine's ``MusicVocab`` over this table (builds the catalog trie)."""
        return MusicVocab.from_sequences(self.music_open, self.music_close, self.tracks,
                                         code_ids=self.vocab.values(),
                                         id_to_token={i: tok for tok, i in self.vocab.items()})

    @cached_property
    def _track_of(self) -> dict[tuple[int, ...], str]:
        return {tuple(ids): t for t, ids in self.tracks.items()}

    def tracks_in_text(self, text: str) -> list[str]:
        """Track ids written in a decoded reply (``skip_special_tokens=False``), in order."""
        out = []
        pattern = re.escape(MUSIC_OPEN) + r"(.*?)" + re.escape(MUSIC_CLOSE)
        for block in re.findall(pattern, text, flags=re.S):
            ids = tuple(self.vocab.get(tok) for tok in re.findall(r"<[^<>\s]+>", block))
            tid = self._track_of.get(ids)  # type: ignore[arg-type]
            if tid is not None:
                out.append(tid)
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


def request_constraint(vocab: MusicVocab, extra_args: Mapping[str, Any] | None) -> ConstraintState | None:
    """One request's rule from its ``vllm_xargs``: ``request_constraint(spec.music_vocab(), args)``,
    called as ``rule(output_ids, logits)``; None when the request opts out."""
    args = dict(extra_args or {})
    if _truthy(args.get(XARG_OFF), False):
        return None
    max_tracks = int(args.get(XARG_MAX_TRACKS, 1))
    if max_tracks < 0:
        raise ValueError(f"{XARG_MAX_TRACKS} must be >= 0")
    return ConstraintState(vocab, exclude=parse_exclude(args.get(XARG_EXCLUDE)), max_tracks=max_tracks,
                           music_first=_truthy(args.get(XARG_MUSIC_FIRST), True),
                           in_block=_truthy(args.get(XARG_IN_BLOCK), False))


# --- vLLM adapter (defined only where vLLM imports) -------------------------------------

try:  # pragma: no cover - exercised only with the `vllm` extra installed
    from vllm.v1.sample.logits_processor import AdapterLogitsProcessor
except Exception:  # ImportError, or a vLLM whose import fails on this machine (no GPU)
    HAVE_VLLM = False
else:  # pragma: no cover
    HAVE_VLLM = True

    class CatalogTrieLogitsProcessor(AdapterLogitsProcessor):
        """Load with ``vllm serve DIR --logits-processors talkplay.vllm_support:CatalogTrieLogitsProcessor``.

        Reads ``talkplay_constraint.json`` from the served model folder, or from the path in
        ``TALKPLAY_CONSTRAINT`` (needed when the model is a hub name).
        """

        def __init__(self, vllm_config: Any, device: Any, is_pin_memory: bool) -> None:
            super().__init__(vllm_config, device, is_pin_memory)
            where = os.environ.get("TALKPLAY_CONSTRAINT") or vllm_config.model_config.model
            self.vocab = ConstraintSpec.load(where).music_vocab()
            log.info("catalog constraint: %d tracks from %s", len(self.vocab.sequences), where)

        @classmethod
        def validate_params(cls, params: Any) -> None:
            args = getattr(params, "extra_args", None) or {}
            parse_exclude(args.get(XARG_EXCLUDE))
            if XARG_MAX_TRACKS in args:
                int(args[XARG_MAX_TRACKS])

        def is_argmax_invariant(self) -> bool:
            return False  # it changes which token wins

        def new_req_logits_processor(self, params: Any) -> ConstraintState | None:
            return request_constraint(self.vocab, getattr(params, "extra_args", None))


# --- export ------------------------------------------------------------------------------


def build_spec(music: Any, hf_tokenizer: Any) -> ConstraintSpec:
    """Map every catalog track's music tokens to ids of ``hf_tokenizer`` (the expanded one)."""
    return ConstraintSpec.from_vocab(MusicVocab.build(music, hf_tokenizer))


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
        return export_content_for_vllm(run, out_dir)
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


TRACK_TOKEN = "<|track_{}|>"  # the exported vocabulary's token for catalog row i


def export_content_for_vllm(run: Any, out_dir: str | Path,
                            probe: str = "play something I will like") -> dict[str, Any]:
    """A content-grounded model as a plain causal LM with one vocabulary row per track.

    Track i becomes the token ``<|track_i|>``: its input embedding is the track's row and its
    output row ``scale / c * readout^T r_i/|r_i|``, so the LM head scores every track exactly
    as the engine's track head does, up to one factor per position (``c``, the norm of the
    read-out state, measured on ``probe`` at export), which changes no ranking. The head is
    untied from the input embeddings (a track's input and output rows differ).

    The request's text embedding and words, added at ``<|music|>``, are not a vocabulary
    row: a client sends the prompt as embeddings (``ContentEngine.prompt_embeds(conv)``;
    vLLM: ``--enable-prompt-embeds``) and reads the ranking from the first generated
    token's logprobs. Rows come from the run's catalog now: export again after
    ``talkplay catalog add`` + ``talkplay encode``. A model whose track head reads an early
    layer (``--exit-layer``) is exported cut to that layer: the export ranks, it does not
    write the reply.
    """
    import torch

    from talkplay.engine.content import ContentEngine
    from talkplay.finetune import keep_first_layers
    from talkplay.tracks.exit import is_early

    engine = ContentEngine.load(run.path)
    lm, tok, net = engine.model, engine.tokenizer, engine.content.net
    if is_early(lm, net.cfg.exit_layer):
        keep_first_layers(lm, net.cfg.exit_layer)
    ids = engine.music.track_ids
    names = [TRACK_TOKEN.format(i) for i in range(len(ids))]
    tok.add_tokens(names, special_tokens=True)
    first = tok.convert_tokens_to_ids(names[0])
    if first != lm.get_input_embeddings().weight.shape[0]:  # a padded vocabulary: keep ids dense
        raise TalkPlayError(f"the tokenizer's next id is {first}, not the embedding size "
                            f"{lm.get_input_embeddings().weight.shape[0]}; cannot append track rows")
    with torch.inference_mode():
        from talkplay.catalog import Conversation, Turn

        emb = engine.prompt_embeds(Conversation(id="probe", turns=[Turn(user=probe)]))
        h = lm(inputs_embeds=emb[None], output_hidden_states=True).hidden_states[-1][0, -1]
        c = float(net.readout(h).norm())
        rows = engine.rows.float()
        unit = torch.nn.functional.normalize(rows, dim=-1)
        head = (net.log_scale.exp() / c) * (unit @ net.readout.weight)
        old_in = lm.get_input_embeddings().weight.detach().clone()
        old_out = lm.get_output_embeddings().weight.detach().clone()
    lm.config.tie_word_embeddings = False
    lm.resize_token_embeddings(len(tok))
    with torch.no_grad():
        lm.get_input_embeddings().weight.copy_(torch.cat([old_in, rows]))
        out_layer = lm.get_output_embeddings()
        out_layer.weight = torch.nn.Parameter(torch.cat([old_out, head]))  # its own tensor: untied
    out_dir = Path(out_dir)
    lm.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    track_ids = tok.convert_tokens_to_ids(names)
    spec = ConstraintSpec(music_open=engine.open_id, music_close=engine.close_id,
                          tracks={t: [int(i)] for t, i in zip(ids, track_ids, strict=True)},
                          vocab={n: int(i) for n, i in zip(names, track_ids, strict=True)})
    spec.save(out_dir)
    return {"out": str(out_dir), "tracks": len(ids), "music_tokens": len(names), "track_repr": "content",
            "vllm_version": VLLM_VERSION, "prompt_embeds": True,
            "serve": f"vllm serve {out_dir} --enable-prompt-embeds "
                     f"--logits-processors {__name__}:CatalogTrieLogitsProcessor"}


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
