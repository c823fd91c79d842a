#!/usr/bin/env python3
"""Writes the image fixtures of Tests/KilnTensorTests/Fixtures/images: small PNG and JPEG files and what PIL and
torchvision make of them (the references Kiln's decoders and preprocessing are tested against).

    python3 scripts/make_image_fixtures.py      # needs numpy, pillow, torch, torchvision

For each image NAME: NAME.pixels.npy (uint8 HWC as PIL decodes it; gray files as [H, W, 1]) and, for the
preprocessing cases listed in CASES, NAME.CASE.npy (float32 CHW after torchvision's Resize(antialias=True),
CenterCrop, ToTensor, Normalize).
"""
import os

import numpy as np
import torch
import torchvision.transforms as T
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "Tests", "KilnTensorTests", "Fixtures", "images")

# name -> (resize, crop height, crop width, color, mean, std)
CASES = {
    "down": (20, 16, 16, "RGB", [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
    "up": (64, 64, 48, "RGB", [0.5], [0.5]),
    "gray": (24, 24, 24, "L", [0.0], [1.0]),
}


def images():
    rng = np.random.default_rng(7)
    y, x = np.mgrid[0:30, 0:40]
    smooth = np.stack([x * 6, y * 8, (x + y) * 3], axis=-1) + rng.integers(0, 40, (30, 40, 3))
    color = np.clip(smooth, 0, 255).astype(np.uint8)
    gray = np.clip(x * 5 + y * 3 + rng.integers(0, 20, (30, 40)), 0, 255).astype(np.uint8)
    rgba = np.concatenate([color, rng.integers(0, 256, (30, 40, 1)).astype(np.uint8)], axis=-1)
    return {
        "color.png": Image.fromarray(color, "RGB"),
        "gray.png": Image.fromarray(gray, "L"),
        "alpha.png": Image.fromarray(rgba, "RGBA"),
        "color.jpg": Image.fromarray(color, "RGB"),
        "gray.jpg": Image.fromarray(gray, "L"),
    }


def main():
    os.makedirs(OUT, exist_ok=True)
    for name, image in images().items():
        path = os.path.join(OUT, name)
        if name.endswith(".jpg"):
            image.save(path, quality=90)
        else:
            image.save(path)
        decoded = Image.open(path)
        pixels = np.asarray(decoded.convert("L" if decoded.mode in ("L", "LA") else "RGB"))
        np.save(path + ".pixels.npy", pixels.reshape(pixels.shape[0], pixels.shape[1], -1))
        if name in ("color.png", "gray.png"):
            for case, (resize, ch, cw, mode, mean, std) in CASES.items():
                transform = T.Compose([T.Resize(resize, antialias=True), T.CenterCrop((ch, cw)), T.ToTensor(),
                                       T.Normalize(mean, std)])
                tensor = transform(decoded.convert(mode)).numpy().astype(np.float32)
                np.save(os.path.join(OUT, f"{name}.{case}.npy"), tensor)
    print("wrote", OUT)


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
