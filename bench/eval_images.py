#!/usr/bin/env python3
"""Benchmark (not a test): `kiln eval --images` on the Fashion-MNIST test set written as PNG files in torchvision's
ImageFolder layout against `kiln eval --inputs X.npy --labels Y.npy` on the same images as float32 — the top-1 must
be the same (±0 images); prints both wall times (decoding and preprocessing included on the image path).

    swift build -c release --product kiln
    python3 bench/eval_images.py [--kiln .build/release/kiln] [--model models/resnet20.onnx] [--count 10000]

The PNG files are written once with PIL into a temporary folder (DIR/<class>/<index>.png); the .npy holds the same
images in the folder's order, normalized as the teacher's metadata says ((x/255 - mean) / std, float32).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import fashion_mnist  # noqa: E402

CLASSES = ["0-tshirt", "1-trouser", "2-pullover", "3-dress", "4-coat", "5-sandal", "6-shirt", "7-sneaker", "8-bag",
           "9-boot"]


def timed(command):
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} failed: {result.stderr}")
    return json.loads(result.stdout), seconds


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--kiln", default=os.path.join(ROOT, ".build", "release", "kiln"))
    parser.add_argument("--model", default=os.path.join(ROOT, "models", "resnet20.onnx"))
    parser.add_argument("--count", type=int, default=10000)
    args = parser.parse_args()
    subprocess.run([os.path.join(ROOT, "scripts", "machine-info.sh")], check=False)
    images, labels = fashion_mnist.load("t10k")
    images, labels = images[:args.count], labels[:args.count]
    with tempfile.TemporaryDirectory() as work:
        folder = os.path.join(work, "images")
        order = []
        for label in range(10):
            os.makedirs(os.path.join(folder, CLASSES[label]))
            for i in np.nonzero(labels == label)[0]:
                Image.fromarray(images[i], "L").save(os.path.join(folder, CLASSES[label], f"{i:05d}.png"))
                order.append(i)
        size = sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(folder) for f in files)
        x = ((images[order].astype(np.float32)[:, None] / 255 - np.float32(fashion_mnist.MEAN))
             / np.float32(fashion_mnist.STD)).astype(np.float32)
        np.save(os.path.join(work, "x.npy"), x)
        np.save(os.path.join(work, "y.npy"), labels[order].astype(np.int64))
        from_images, image_seconds = timed([args.kiln, "eval", args.model, "--images", folder, "--json"])
        from_npy, npy_seconds = timed([args.kiln, "eval", args.model, "--inputs", os.path.join(work, "x.npy"),
                                       "--labels", os.path.join(work, "y.npy"), "--json"])
    print(f"model {os.path.relpath(args.model, ROOT)}, {len(order)} Fashion-MNIST test images "
          f"({size / 1e6:.1f} MB of PNG files)")
    print(f"--images DIR: top-1 {from_images['top1'] * 100:.2f}% ({from_images['correct']}/{from_images['count']}), "
          f"top-5 {from_images['top5'] * 100:.2f}%, {image_seconds:.2f} s wall")
    print(f"--inputs .npy: top-1 {from_npy['top1'] * 100:.2f}% ({from_npy['correct']}/{from_npy['count']}), "
          f"{npy_seconds:.2f} s wall")
    print(f"difference: {from_images['correct'] - from_npy['correct']} images; time ratio {image_seconds / npy_seconds:.2f}")


if __name__ == "__main__":
    main()
