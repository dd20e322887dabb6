"""Fashion-MNIST (or MNIST) from IDX files, as numpy arrays: Debian's
dataset-fashion-mnist installs them in DEFAULT_DIR (gzip'd or not).
Nothing is downloaded."""
import gzip
import os
import struct

import numpy as np

from .errors import ShoalError

DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"


def read_idx(path, magic, ndim):
    """An IDX file (raw or .gz) as a uint8 array, its header checked."""
    try:
        opener = gzip.open if path.endswith(".gz") else open
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise ShoalError("%s: %s" % (path, e)) from None
    if len(raw) < 4 + 4 * ndim:
        raise ShoalError("%s: truncated header (%d bytes)" % (path, len(raw)))
    m = struct.unpack(">I", raw[:4])[0]
    if m != magic:
        raise ShoalError("%s: magic number 0x%08x, expected 0x%08x" % (path, m, magic))
    dims = struct.unpack(">%dI" % ndim, raw[4:4 + 4 * ndim])
    n = int(np.prod(dims))
    body = raw[4 + 4 * ndim:]
    if len(body) != n:
        raise ShoalError("%s: %d data bytes, its header %s says %d" % (path, len(body), dims, n))
    return np.frombuffer(body, dtype=np.uint8).reshape(dims)


def _find(data_dir, name):
    for suffix in ("", ".gz"):
        p = os.path.join(data_dir, name + suffix)
        if os.path.exists(p):
            return p
    raise ShoalError("%s: no %s[.gz] (install Debian's dataset-fashion-mnist, or give the "
                     "directory holding the IDX files)" % (data_dir, name))


def load(data_dir=DEFAULT_DIR, kind="train"):
    """(images, labels) of @kind ("train" or "t10k"): float32 [N, 784] in
    [0, 1] and int64 [N]."""
    if kind not in ("train", "t10k"):
        raise ShoalError("kind %r: 'train' or 't10k'" % kind)
    img = read_idx(_find(data_dir, kind + "-images-idx3-ubyte"), 0x00000803, 3)
    lab = read_idx(_find(data_dir, kind + "-labels-idx1-ubyte"), 0x00000801, 1)
    if img.shape[0] != lab.shape[0]:
        raise ShoalError("%s: %d %s images but %d labels" % (data_dir, img.shape[0], kind,
                                                            lab.shape[0]))
    if lab.size and int(lab.max()) > 9:
        raise ShoalError("%s: %s label %d is not in 0..9" % (data_dir, kind, int(lab.max())))
    x = img.reshape(img.shape[0], -1).astype(np.float32) / np.float32(255.0)
    return x, lab.astype(np.int64)
