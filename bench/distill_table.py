#!/usr/bin/env python3
"""Measurement (not a test): students of each committed Fashion-MNIST teacher at W8A8, W4A8, W4A4 and W2A4, from
real calibration images without reconstruction, from the committed zero-shot (Genie) images without
reconstruction, and from the zero-shot images with block reconstruction (`--distill genie`): top-1 on the 10k test
images, agreement with the teacher and the wall time of `kiln quantize` on the given threads.

    swift build -c release --product kiln
    python3 bench/distill_table.py [--teachers resnet20 mobilenetv2] [--bits w8a8 w4a8 w4a4 w2a4]
                                   [--iterations-per-block N] [--threads 2]

The zero-shot images are calibration/genie-<teacher>-128.npy (made by scripts/make_synthetic_calibration.py, see
calibration/manifest.json for their synthesis time); the real ones are the first 128 of
calibration/fashion-mnist-real-512.npy, so both sets have the same size.
"""
import argparse
import json
import os
import subprocess
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def kiln(binary, *args):
    out = subprocess.run([binary, *args, "--json"], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teachers", nargs="+", default=["resnet20", "mobilenetv2"])
    parser.add_argument("--bits", nargs="+", default=["w8a8", "w4a8", "w4a4", "w2a4"])
    parser.add_argument("--iterations-per-block", type=int, default=None, help="default: kiln's")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--kiln", default=os.path.join(ROOT, ".build", "release", "kiln"))
    args = parser.parse_args()
    threads = ["--threads", str(args.threads)]
    iterations = ["--iterations-per-block", str(args.iterations_per_block)] if args.iterations_per_block else []
    print(f"{'teacher':<12} {'bits':<5} {'calibration':<10} {'distill':<7} {'top-1':>7} {'drop':>6} {'agreement':>9} "
          f"{'seconds':>8}", flush=True)
    with tempfile.TemporaryDirectory() as folder:
        real = os.path.join(folder, "real-128.npy")
        np.save(real, np.load(os.path.join(ROOT, "calibration", "fashion-mnist-real-512.npy"))[:128])
        for name in args.teachers:
            teacher = os.path.join(ROOT, "models", name + ".onnx")
            synthetic = os.path.join(ROOT, "calibration", f"genie-{name}-128.npy")
            teacher_top1 = kiln(args.kiln, "eval", teacher, "--dataset", "fashion-mnist", *threads)["top1"]
            for bits in args.bits:
                for data, label, distill in [(real, "real", "none"), (synthetic, "zero-shot", "none"),
                                             (synthetic, "zero-shot", "genie")]:
                    student = os.path.join(folder, f"{name}-{bits}-{label}-{distill}.kiln")
                    start = time.monotonic()
                    kiln(args.kiln, "quantize", teacher, "-o", student, "--calibration", data, "--bits", bits,
                         "--distill", distill, *(iterations if distill == "genie" else []), *threads)
                    seconds = time.monotonic() - start
                    result = kiln(args.kiln, "eval", student, "--dataset", "fashion-mnist", "--reference", teacher,
                                  *threads)
                    print(f"{name:<12} {bits:<5} {label:<10} {distill:<7} {result['top1'] * 100:>6.2f}% "
                          f"{(teacher_top1 - result['top1']) * 100:>6.2f} {result['agreement'] * 100:>8.2f}% "
                          f"{seconds:>8.1f}", flush=True)


if __name__ == "__main__":
    main()
