#!/usr/bin/env python3
"""Writes the committed real-data calibration set: 512 Fashion-MNIST training images (seed 0), normalized as the
teachers expect, as calibration/fashion-mnist-real-512.npy, and records how it was made in calibration/manifest.json.

    python3 scripts/make_calibration.py
"""
import hashlib
import json
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import fashion_mnist  # noqa: E402

COUNT, SEED = 512, 0
NAME = "fashion-mnist-real-512.npy"


def main():
    images, labels = fashion_mnist.load("train")
    rng = np.random.default_rng(SEED)
    indices = np.sort(rng.choice(len(images), COUNT, replace=False))
    x = fashion_mnist.normalize(images[indices]).astype(np.float32)
    out = os.path.join(ROOT, "calibration", NAME)
    np.save(out + ".tmp.npy", x)
    os.replace(out + ".tmp.npy", out)
    with open(out, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    manifest_path = os.path.join(ROOT, "calibration", "manifest.json")
    manifest = json.load(open(manifest_path)) if os.path.exists(manifest_path) else {}
    manifest[NAME] = {
        "kind": "real",
        "source": "Fashion-MNIST training split (Debian dataset-fashion-mnist, train-images-idx3-ubyte.gz)",
        "count": COUNT,
        "selection": f"numpy.random.default_rng({SEED}).choice(60000, {COUNT}, replace=False), sorted",
        "first_indices": indices[:8].tolist(),
        "class_counts": np.bincount(labels[indices], minlength=10).tolist(),
        "normalization": f"(x/255 - {fashion_mnist.MEAN}) / {fashion_mnist.STD}",
        "shape": list(x.shape),
        "dtype": "float32",
        "sha256": digest,
        "script": "scripts/make_calibration.py",
    }
    with open(manifest_path + ".tmp", "w") as f:
        json.dump(manifest, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(manifest_path + ".tmp", manifest_path)
    print(f"wrote {out}: {x.shape}, classes {manifest[NAME]['class_counts']}")


if __name__ == "__main__":
    main()
