"""musicnn (Pons & Serra, 2019) in PyTorch, loaded from the TensorFlow-1 checkpoint it ships.

``net = load_musicnn("MSD_musicnn")`` returns a ``Musicnn`` module in eval mode with the
published weights; ``net(patches)`` maps log-mel patches ``(batch, 187, 96)`` to
``(logits, penultimate)``. ``read_checkpoint(prefix)`` reads any TF1 ``.index``/``.data``
checkpoint into numpy arrays in pure Python: the index is a LevelDB-style table whose
values are ``BundleEntryProto`` messages (dtype, shape, shard, offset, size) pointing into
the data shards. No TensorFlow is needed.

The network follows musicnn's ``models.build_musicnn``: a batch-normalised log-mel input;
a front-end of two timbral convolutions (7x38 and 7x67, 204 filters) and three temporal
ones (128x1, 64x1, 32x1, 51 filters), each max-pooled over frequency; a mid-end of three
dense-connected 7-frame convolutions (64 filters, residual); a back-end of max and mean
pooling over time, a batch-normalised 200-unit dense layer (the "penultimate" embedding)
and the 50-tag output layer.
"""

from __future__ import annotations

import importlib.util
import os
import struct
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from talkplay.errors import TalkPlayError

SR = 16000
FFT_HOP = 256
FFT_SIZE = 512
N_MELS = 96
N_FRAMES = 187  # 3 s patches: librosa.time_to_frames(3, sr=16000, n_fft=512, hop_length=256) + 1
BN_EPS = 1e-3  # tf.layers.batch_normalization default

MSD_LABELS = [
    "rock", "pop", "alternative", "indie", "electronic", "female vocalists", "dance", "00s",
    "alternative rock", "jazz", "beautiful", "metal", "chillout", "male vocalists", "classic rock",
    "soul", "indie rock", "Mellow", "electronica", "80s", "folk", "90s", "chill", "instrumental",
    "punk", "oldies", "blues", "hard rock", "ambient", "acoustic", "experimental",
    "female vocalist", "guitar", "Hip-Hop", "70s", "party", "country", "easy listening", "sexy",
    "catchy", "funk", "electro", "heavy metal", "Progressive rock", "60s", "rnb", "indie pop",
    "sad", "House", "happy",
]
MTT_LABELS = [
    "guitar", "classical", "slow", "techno", "strings", "drums", "electronic", "rock", "fast",
    "piano", "ambient", "beat", "violin", "vocal", "synth", "female", "indian", "opera", "male",
    "singing", "vocals", "no vocals", "harpsichord", "loud", "quiet", "flute", "woman",
    "male vocal", "no vocal", "pop", "soft", "sitar", "solo", "man", "classic", "choir", "voice",
    "new age", "dance", "male voice", "female vocal", "beats", "harp", "cello", "no voice",
    "weird", "country", "metal", "female voice", "choral",
]

# --- TF1 checkpoint reader ---------------------------------------------------------------

_DTYPES = {1: np.float32, 2: np.float64, 3: np.int32, 4: np.uint8, 5: np.int16, 6: np.int8,
           9: np.int64, 10: np.bool_, 14: np.uint16, 17: np.uint16, 19: np.float16}
_TABLE_MAGIC = 0xDB4775248B80FB57
_FOOTER = 48


class CheckpointError(TalkPlayError):
    """A checkpoint file is missing, truncated or not in the TF1 tensor-bundle format."""


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    """Decode a protobuf/LevelDB base-128 varint at ``pos``; return (value, new_pos)."""
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise CheckpointError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise CheckpointError("varint too long")


def _proto_fields(buf: bytes) -> list[tuple[int, int | bytes]]:
    """Split a protobuf message into (field_number, value) pairs (varint, fixed or bytes)."""
    out: list[tuple[int, int | bytes]] = []
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        num, wire = key >> 3, key & 7
        if wire == 0:
            val, pos = _varint(buf, pos)
            out.append((num, val))
        elif wire == 1:
            out.append((num, struct.unpack_from("<Q", buf, pos)[0]))
            pos += 8
        elif wire == 2:
            n, pos = _varint(buf, pos)
            out.append((num, buf[pos:pos + n]))
            pos += n
        elif wire == 5:
            out.append((num, struct.unpack_from("<I", buf, pos)[0]))
            pos += 4
        else:
            raise CheckpointError(f"unsupported protobuf wire type {wire}")
    return out


def _block_entries(block: bytes) -> list[tuple[bytes, bytes]]:
    """Entries of one SSTable block: prefix-compressed keys followed by a restart array."""
    if len(block) < 4:
        raise CheckpointError("table block too short")
    n_restarts = struct.unpack_from("<I", block, len(block) - 4)[0]
    end = len(block) - 4 - 4 * n_restarts
    entries, pos, key = [], 0, b""
    while pos < end:
        shared, pos = _varint(block, pos)
        non_shared, pos = _varint(block, pos)
        vlen, pos = _varint(block, pos)
        key = key[:shared] + block[pos:pos + non_shared]
        pos += non_shared
        entries.append((key, block[pos:pos + vlen]))
        pos += vlen
    return entries


def _read_block(data: bytes, handle: bytes) -> bytes:
    offset, p = _varint(handle, 0)
    size, _ = _varint(handle, p)
    if offset + size + 5 > len(data):
        raise CheckpointError("table block runs past the end of the index file")
    if data[offset + size] != 0:  # trailer: compression type (0 = none) + crc32c
        raise CheckpointError("compressed checkpoint index blocks are not supported")
    return data[offset:offset + size]


def _parse_entry(value: bytes) -> dict:
    entry = {"dtype": 0, "shape": [], "shard_id": 0, "offset": 0, "size": 0}
    for num, val in _proto_fields(value):
        if num == 1:
            entry["dtype"] = val
        elif num == 2:
            assert isinstance(val, bytes)
            for dnum, dim in _proto_fields(val):
                if dnum == 2:  # TensorShapeProto.Dim
                    assert isinstance(dim, bytes)
                    entry["shape"].append(next((v for n, v in _proto_fields(dim) if n == 1), 0))
        elif num == 3:
            entry["shard_id"] = val
        elif num == 4:
            entry["offset"] = val
        elif num == 5:
            entry["size"] = val
        elif num == 7:
            raise CheckpointError("partitioned (sliced) variables are not supported")
    return entry


def read_checkpoint(prefix: str | Path) -> dict[str, np.ndarray]:
    """Read a TF1 checkpoint ``prefix`` (``prefix.index`` + ``prefix.data-*``) -> {name: array}.

    Call as ``read_checkpoint(".../MSD_musicnn/")`` (musicnn's prefix is the folder itself).
    """
    prefix = str(prefix)
    index_path = Path(prefix + ".index")
    if not index_path.exists():
        raise CheckpointError(f"checkpoint index not found: {index_path}")
    data = index_path.read_bytes()
    if len(data) < _FOOTER or struct.unpack_from("<Q", data, len(data) - 8)[0] != _TABLE_MAGIC:
        raise CheckpointError(f"{index_path} is not a TensorFlow checkpoint index")
    footer = data[-_FOOTER:]
    _, p = _varint(footer, 0)  # metaindex handle: offset, size
    _, p = _varint(footer, p)
    index_block = _read_block(data, footer[p:])
    n_shards = 1
    entries: dict[str, dict] = {}
    for _, handle in _block_entries(index_block):
        for key, value in _block_entries(_read_block(data, handle)):
            if key == b"":  # BundleHeaderProto: num_shards, endianness, version
                for num, val in _proto_fields(value):
                    if num == 1:
                        n_shards = int(val)  # type: ignore[arg-type]
                    elif num == 2 and val != 0:
                        raise CheckpointError("big-endian checkpoints are not supported")
                continue
            entries[key.decode("utf-8")] = _parse_entry(value)
    shards: dict[int, bytes] = {}
    out: dict[str, np.ndarray] = {}
    for name, e in entries.items():
        sid = e["shard_id"]
        if sid not in shards:
            path = Path(f"{prefix}.data-{sid:05d}-of-{n_shards:05d}")
            if not path.exists():
                raise CheckpointError(f"checkpoint data shard not found: {path}")
            shards[sid] = path.read_bytes()
        dtype = _DTYPES.get(e["dtype"])
        if dtype is None:
            raise CheckpointError(f"variable {name}: unsupported dtype enum {e['dtype']}")
        raw = shards[sid][e["offset"]:e["offset"] + e["size"]]
        n = int(np.prod(e["shape"])) if e["shape"] else 1
        if len(raw) != e["size"] or e["size"] != n * np.dtype(dtype).itemsize:
            raise CheckpointError(f"variable {name}: stored size does not match its shape {e['shape']}")
        out[name] = np.frombuffer(raw, dtype=dtype).reshape(e["shape"]).copy()
    return out


def checkpoint_prefix(model: str = "MSD_musicnn") -> str:
    """Where the ``musicnn`` package keeps ``model``'s checkpoint (prefix for ``read_checkpoint``)."""
    spec = importlib.util.find_spec("musicnn")
    if spec is None or not spec.submodule_search_locations:
        raise CheckpointError("the `musicnn` package is not installed (pip install --no-deps musicnn)")
    folder = Path(next(iter(spec.submodule_search_locations))) / model
    if not (folder / ".index").exists():
        raise CheckpointError(f"no {model} checkpoint in {folder}")
    return str(folder) + os.sep  # the prefix is "<folder>/", so files are "<folder>/.index" etc.


# --- the network -------------------------------------------------------------------------


class _BN(nn.Module):
    """Inference-time batch norm over the last axis, with TF's epsilon."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(n))
        self.beta = nn.Parameter(torch.zeros(n))
        self.register_buffer("mean", torch.zeros(n))
        self.register_buffer("var", torch.ones(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) * torch.rsqrt(self.var + BN_EPS) * self.gamma + self.beta


class Musicnn(nn.Module):
    """musicnn: ``logits, penultimate = Musicnn()(x)`` for ``x`` of shape (batch, frames, 96).

    Layers are created in the order TensorFlow named them (``conv2d``, ``conv2d_1`` ...,
    ``batch_normalization``, ``batch_normalization_1`` ...), which ``load_tf`` relies on.
    """

    def __init__(self, n_mels: int = N_MELS, num_classes: int = 50, num_filt_midend: int = 64,
                 num_units_backend: int = 200, num_filt_frontend: float = 1.6) -> None:
        super().__init__()
        timbral = int(num_filt_frontend * 128)
        tempo = int(num_filt_frontend * 32)
        self.bn_in = _BN(1)
        # front-end: (kernel_time, kernel_freq, filters, same-padding in time)
        self.front_specs = [(7, int(0.4 * n_mels), timbral, False), (7, int(0.7 * n_mels), timbral, False),
                            (128, 1, tempo, True), (64, 1, tempo, True), (32, 1, tempo, True)]
        self.front_convs = nn.ModuleList(nn.Conv2d(1, f, (kt, kf)) for kt, kf, f, _ in self.front_specs)
        self.front_bns = nn.ModuleList(_BN(f) for _, _, f, _ in self.front_specs)
        front_out = 2 * timbral + 3 * tempo
        self.mid_convs = nn.ModuleList([nn.Conv2d(1, num_filt_midend, (7, front_out)),
                                        nn.Conv2d(1, num_filt_midend, (7, num_filt_midend)),
                                        nn.Conv2d(1, num_filt_midend, (7, num_filt_midend))])
        self.mid_bns = nn.ModuleList(_BN(num_filt_midend) for _ in range(3))
        self.pooled_dim = 2 * (front_out + 3 * num_filt_midend)
        self.bn_pool = _BN(self.pooled_dim)
        self.dense = nn.Linear(self.pooled_dim, num_units_backend)
        self.bn_dense = _BN(num_units_backend)
        self.out = nn.Linear(num_units_backend, num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x``: (batch, frames, n_mels) log-mel -> (logits (batch, 50), penultimate (batch, 200))."""
        h = self.bn_in(x.unsqueeze(-1)).squeeze(-1).unsqueeze(1)  # (B, 1, T, F), NCHW
        feats = []
        layers = zip(self.front_specs, self.front_convs, self.front_bns, strict=True)
        for (kt, _, _, same), conv, bn in layers:
            # timbral: pad 3 frames each side; temporal: TF "same" (extra frame after when even)
            pad = ((kt - 1) // 2, kt - 1 - (kt - 1) // 2) if same else (3, 3)
            y = conv(F.pad(h, (0, 0, *pad)))  # (B, C, T, F')
            # TF applies relu, batch norm, then max over frequency. Both relu and the
            # per-channel affine norm are monotonic, so pooling first gives the same numbers
            # on a 96x smaller tensor (min instead of max where the norm's scale is negative).
            scale = bn.gamma * torch.rsqrt(bn.var + BN_EPS)
            pooled = y.amax(dim=3)
            if bool((scale < 0).any()):
                pooled = torch.where((scale >= 0)[None, :, None], pooled, y.amin(dim=3))
            feats.append(bn(F.relu(pooled).transpose(1, 2)))  # (B, T, C)
        front = torch.cat(feats, dim=2)  # (B, T, 561)
        mids = [front]
        prev = front
        for i, (conv, bn) in enumerate(zip(self.mid_convs, self.mid_bns, strict=True)):
            y = F.relu(conv(F.pad(prev.unsqueeze(1), (0, 0, 3, 3))))  # (B, C, T, 1)
            y = bn(y.squeeze(-1).transpose(1, 2))  # (B, T, C)
            prev = y if i == 0 else y + prev  # layers 2 and 3 are residual
            mids.append(prev)
        mid = torch.cat(mids, dim=2)  # (B, T, 753)
        # TF concatenates [max, mean] on a trailing axis before flattening: interleave them
        pooled = torch.stack([mid.amax(dim=1), mid.mean(dim=1)], dim=2).flatten(1)
        pen = self.bn_dense(F.relu(self.dense(self.bn_pool(pooled))))
        return self.out(pen), pen

    @torch.no_grad()
    def load_tf(self, variables: dict[str, np.ndarray]) -> dict[str, list[str]]:
        """Copy TF variables into this module; returns {"loaded": [...], "unused": [...]}.

        Raises ``CheckpointError`` if any layer's variable is missing or mis-shaped, so a
        partly loaded network can never be used silently. Optimizer slots (``*/Adam*``,
        ``beta*_power``) are ignored.
        """
        bns = [self.bn_in, *self.front_bns, *self.mid_bns, self.bn_pool, self.bn_dense]
        convs = [*self.front_convs, *self.mid_convs]
        loaded: list[str] = []

        def take(name: str, shape: tuple[int, ...]) -> torch.Tensor:
            if name not in variables:
                raise CheckpointError(f"checkpoint has no variable {name}")
            arr = variables[name]
            if tuple(arr.shape) != shape:
                raise CheckpointError(f"variable {name} has shape {arr.shape}, expected {shape}")
            loaded.append(name)
            return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))

        for i, bn in enumerate(bns):
            p = "batch_normalization" + (f"_{i}" if i else "")
            n = bn.gamma.numel()
            bn.gamma.copy_(take(f"{p}/gamma", (n,)))
            bn.beta.copy_(take(f"{p}/beta", (n,)))
            bn.mean.copy_(take(f"{p}/moving_mean", (n,)))
            bn.var.copy_(take(f"{p}/moving_variance", (n,)))
        for i, conv in enumerate(convs):
            p = "conv2d" + (f"_{i}" if i else "")
            o, c, kh, kw = conv.weight.shape
            conv.weight.copy_(take(f"{p}/kernel", (kh, kw, c, o)).permute(3, 2, 0, 1))  # HWIO -> OIHW
            conv.bias.copy_(take(f"{p}/bias", (o,)))
        for i, lin in enumerate([self.dense, self.out]):
            p = "dense" + (f"_{i}" if i else "")
            o, c = lin.weight.shape
            lin.weight.copy_(take(f"{p}/kernel", (c, o)).T)
            lin.bias.copy_(take(f"{p}/bias", (o,)))
        unused = sorted(k for k in variables if k not in set(loaded)
                        and "/Adam" not in k and not k.startswith("beta1_power")
                        and not k.startswith("beta2_power"))
        return {"loaded": loaded, "unused": unused}


_nets: dict[str, Musicnn] = {}


def load_musicnn(model: str = "MSD_musicnn", device: str = "cpu") -> Musicnn:
    """The published ``MSD_musicnn`` (or ``MTT_musicnn``) weights in a PyTorch ``Musicnn``, eval mode."""
    if model not in ("MSD_musicnn", "MTT_musicnn"):
        raise TalkPlayError(f"unknown musicnn model {model!r} (choose MSD_musicnn or MTT_musicnn)")
    if device != "cpu":
        key = f"{model}@{device}"
        if key not in _nets:
            import copy

            _nets[key] = copy.deepcopy(load_musicnn(model)).to(device)
        return _nets[key]
    if model not in _nets:
        net = Musicnn()
        report = net.load_tf(read_checkpoint(checkpoint_prefix(model)))
        if report["unused"]:
            raise CheckpointError(f"{model}: checkpoint variables the network does not use: "
                                  f"{report['unused']}")
        _nets[model] = net.eval()
    return _nets[model]


def labels_for(model: str = "MSD_musicnn") -> list[str]:
    """The 50 tag names of ``model``'s output, in output order."""
    return list(MSD_LABELS if model.startswith("MSD") else MTT_LABELS)


def log_mel(audio: np.ndarray, sr: int = SR) -> np.ndarray:
    """musicnn's input: ``log10(10000 * mel + 1)`` of 16 kHz mono audio -> (frames, 96) float32.

    Power mel spectrogram (n_fft 512, hop 256, 96 Slaney bands), rounded through float16
    before the log exactly as musicnn's own extractor does.
    """
    import librosa

    if sr != SR:
        raise ValueError(f"musicnn expects {SR} Hz audio, got {sr} Hz")
    mel = librosa.feature.melspectrogram(y=np.asarray(audio, dtype=np.float32), sr=SR, hop_length=FFT_HOP,
                                         n_fft=FFT_SIZE, n_mels=N_MELS).T
    mel = mel.astype(np.float16).astype(np.float32)
    return np.log10(10000 * mel + 1).astype(np.float32)


def patches(spec: np.ndarray, n_frames: int = N_FRAMES) -> np.ndarray:
    """Cut a (frames, 96) spectrogram into non-overlapping (n, n_frames, 96) patches.

    A clip shorter than one patch is repeated to fill it (musicnn's "repeat-pad").
    """
    if spec.shape[0] == 0:
        raise ValueError("empty spectrogram")
    if spec.shape[0] < n_frames:
        reps = -(-n_frames // spec.shape[0])
        spec = np.concatenate([spec] * reps, axis=0)[:n_frames]
    n = spec.shape[0] // n_frames
    return spec[: n * n_frames].reshape(n, n_frames, spec.shape[1])
