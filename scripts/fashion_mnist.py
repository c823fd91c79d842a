"""Fashion-MNIST from Debian's dataset-fashion-mnist package, as float32 tensors in [0, 1]."""
import gzip
import os

import numpy as np

DATASET_DIR = "/usr/share/datasets/fashion-mnist"
# Per-pixel statistics of the 60k training images after scaling to [0, 1].
MEAN = 0.2860
STD = 0.3530


def _read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic = int.from_bytes(data[0:4], "big")
    ndim = magic & 0xFF
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load(split, directory=DATASET_DIR):
    """Returns (images uint8 [N,28,28], labels int64 [N]) for split 'train' or 't10k'."""
    images = _read_idx(os.path.join(directory, f"{split}-images-idx3-ubyte.gz"))
    labels = _read_idx(os.path.join(directory, f"{split}-labels-idx1-ubyte.gz")).astype(np.int64)
    return images, labels


def normalize(images_u8):
    """uint8 [N,28,28] -> float32 [N,1,28,28], (x/255 - MEAN) / STD: the teachers' input."""
    x = images_u8.astype(np.float32)[:, None, :, :] / 255.0
    return (x - MEAN) / STD
