"""How tests/data/musicnn_reference.npz was made (kept for provenance; tests do not run it).

Step 1, in the project environment, writes the fixed input (log-mel patches of seeded,
synthesised signals, stored as float16) and the PyTorch port's outputs:

    python tests/data/make_musicnn_reference.py inputs

Step 2, in a throwaway environment with the original TensorFlow code
(``pip install tensorflow-cpu tf-keras`` and a copy of the ``musicnn`` package on
``sys.path``; ``TF_USE_LEGACY_KERAS=1``), runs musicnn's own ``models.define_model`` on the
same input and stores its logits and penultimate layer as the reference:

    TF_USE_LEGACY_KERAS=1 python tests/data/make_musicnn_reference.py tensorflow /path/to/musicnn/MSD_musicnn/
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

OUT = Path(__file__).with_name("musicnn_reference.npz")
SR = 16000


def signals() -> dict[str, np.ndarray]:
    """Seeded 3 s test signals: a harmonic tone, white noise, a drum-like pulse with bass."""
    rng = np.random.default_rng(1234)
    t = np.arange(3 * SR) / SR
    tone = sum(0.3 / k * np.sin(2 * np.pi * 220 * k * t) for k in range(1, 6))
    noise = 0.1 * rng.standard_normal(len(t))
    pulse = 0.5 * np.exp(-(t % 0.5) * 30) * rng.standard_normal(len(t)) + 0.3 * np.sin(2 * np.pi * 55 * t)
    return {name: s.astype(np.float32) for name, s in (("tone", tone), ("noise", noise), ("pulse", pulse))}


def make_inputs() -> None:
    import torch

    from talkplay.encoders.musicnn import load_musicnn, log_mel, patches

    sig = signals()
    x = np.concatenate([patches(log_mel(s))[:1] for s in sig.values()]).astype(np.float16)
    with torch.no_grad():
        logits, pen = load_musicnn("MSD_musicnn")(torch.from_numpy(x.astype(np.float32)))
    np.savez_compressed(OUT, names=np.array(list(sig)), x=x, torch_logits=logits.numpy(),
                        torch_penultimate=pen.numpy())


def run_tensorflow(ckpt: str) -> None:
    import tensorflow as tf
    from musicnn import models

    tf.compat.v1.disable_eager_execution()
    ref = dict(np.load(OUT))
    x = tf.compat.v1.placeholder(tf.float32, [None, 187, 96])
    is_training = tf.compat.v1.placeholder(tf.bool)
    y, *rest = models.define_model(x, is_training, "MSD_musicnn", 50)
    sess = tf.compat.v1.Session()
    tf.compat.v1.train.Saver().restore(sess, ckpt)
    logits, pen = sess.run([y, rest[-1]], feed_dict={x: ref["x"].astype(np.float32), is_training: False})
    np.savez_compressed(OUT, **ref, tf_logits=logits, tf_penultimate=pen)
    print("max |torch - tf| logits", np.abs(ref["torch_logits"] - logits).max(),
          "penultimate", np.abs(ref["torch_penultimate"] - pen).max())


if __name__ == "__main__":
    if sys.argv[1] == "inputs":
        make_inputs()
    else:
        run_tensorflow(sys.argv[2])
