#!/usr/bin/env python3
"""Measurement (not a test): what synthesis work buys — zero-shot student top-1 against seconds for images ×
iterations, with and without the plateau stop, on the committed Fashion-MNIST teachers. The numbers behind the
budgets' defaults (README, "Budgets").

    swift build -c release --product kiln
    python3 bench/budget_sweep.py [--teachers resnet20 mobilenetv2] [--bits w8a8 w4a4] [--threads 2]

Each point runs `kiln quantize` (Genie synthesis, seed 0) and `kiln eval --dataset fashion-mnist` on the 10k test
images; the time is quantize's whole wall time (synthesis and calibration, reconstruction too for w4a4). The
iterations column of a plateau-stopped run gives the iterations the batches actually ran.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (images, iterations, plateau stop, extra flags): the default and fast presets' points and a grid around them.
POINTS = [
    (32, 50, False, []), (32, 200, False, []), (128, 50, False, []), (128, 100, False, []),
    (128, 200, False, []), (128, 200, True, []), (64, 100, True, []),
]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teachers", nargs="+", default=["resnet20", "mobilenetv2"])
    parser.add_argument("--bits", nargs="+", default=["w8a8"])
    parser.add_argument("--kiln", default=os.path.join(ROOT, ".build", "release", "kiln"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--iterations-per-block", type=int, default=None, help="w4a4 only (default: the budget's)")
    parser.add_argument("--points", nargs="+", type=int, default=None, help="indices into the grid (default: all)")
    args = parser.parse_args()
    print(subprocess.run([os.path.join(ROOT, "scripts", "machine-info.sh")], capture_output=True, text=True).stdout.strip())
    print(f"{'teacher':<12} {'bits':<5} {'images':>6} {'iterations':>14} {'plateau':>7} {'seconds':>8} {'top-1':>7}")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.teachers:
            teacher = os.path.join(ROOT, "models", f"{name}.onnx")
            for bits in args.bits:
                for images, iterations, plateau, extra in [POINTS[i] for i in (args.points or range(len(POINTS)))]:
                    student = os.path.join(tmp, "student.kiln")
                    command = [args.kiln, "quantize", teacher, "-o", student, "--bits", bits, "--synthetic-count",
                               str(images), "--synthetic-iterations", str(iterations), "--threads", str(args.threads),
                               "--json", *extra]
                    if not plateau:
                        command.append("--no-plateau")
                    if bits != "w8a8" and args.iterations_per_block:
                        command += ["--iterations-per-block", str(args.iterations_per_block)]
                    start = time.perf_counter()
                    summary = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
                    seconds = time.perf_counter() - start
                    result = json.loads(subprocess.run([args.kiln, "eval", student, "--dataset", "fashion-mnist", "--json"],
                                                       check=True, capture_output=True, text=True).stdout)
                    top1 = result["top1"] if "top1" in result else result["outputs"][0]["top1"]
                    ran = summary["calibration"].split("(")[-1].split(",")[1].strip() if plateau else f"{iterations}"
                    print(f"{name:<12} {bits:<5} {images:>6} {ran:>14} {'yes' if plateau else 'no':>7} {seconds:>8.1f} "
                          f"{top1 * 100:>6.2f}%")
                    sys.stdout.flush()


if __name__ == "__main__":
    main()
