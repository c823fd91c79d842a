#!/usr/bin/env python3
"""Benchmark (not a test): an int8 student run by KilnRuntime and by onnxruntime (its QDQ export), batch 1,
one thread, in the same run; prints both latencies and the ratio Kiln / onnxruntime.

    swift build -c release --product kiln
    python3 bench/student_vs_onnxruntime.py [--teacher models/resnet20.onnx ...] [--runs 300]

Each teacher is quantized by `kiln quantize` with the committed real calibration set (writing the .kiln student
and its QDQ ONNX export to a temporary folder); KilnRuntime is timed by `kiln bench` (allocation-free context,
median of --runs after warm-up), onnxruntime by the same loop in Python on the QDQ model. Needs numpy and
onnxruntime from PyPI.
"""
import argparse
import json
import os
import subprocess
import tempfile

import numpy as np
import onnxruntime as ort

from peers import median_latency_ms

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", action="append")
    parser.add_argument("--calibration", default=os.path.join(ROOT, "calibration", "fashion-mnist-real-512.npy"))
    parser.add_argument("--kiln", default=os.path.join(ROOT, ".build", "release", "kiln"))
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    teachers = args.teacher or [os.path.join(ROOT, "models", f) for f in ("resnet20.onnx", "mobilenetv2.onnx")
                                if os.path.exists(os.path.join(ROOT, "models", f))]
    print(f"batch 1, {args.threads} thread(s), median of {args.runs} runs; onnxruntime {ort.__version__}")
    print(f"{'model':<22} {'kiln ms':>9} {'ort ms':>9} {'ratio':>7} {'kiln GMAC/s':>12}")
    with tempfile.TemporaryDirectory() as folder:
        for teacher in teachers:
            name = os.path.splitext(os.path.basename(teacher))[0]
            student = os.path.join(folder, name + ".kiln")
            qdq = os.path.join(folder, name + ".qdq.onnx")
            subprocess.run([args.kiln, "quantize", teacher, "-o", student, "--calibration", args.calibration,
                            "--onnx-out", qdq, "--json"], check=True, capture_output=True)
            bench = json.loads(subprocess.run([args.kiln, "bench", student, "--runs", str(args.runs), "--threads",
                                               str(args.threads), "--json"], check=True, capture_output=True,
                                              text=True).stdout)
            inspect = json.loads(subprocess.run([args.kiln, "inspect", student, "--json"], check=True,
                                                capture_output=True, text=True).stdout)
            shape = [1] + [int(d) for d in inspect["inputs"][0]["shape"][1:]]
            ort_ms = median_latency_ms(qdq, shape, args.runs, args.threads)
            print(f"{name:<22} {bench['medianMs']:9.3f} {ort_ms:9.3f} {bench['medianMs'] / ort_ms:7.2f} "
                  f"{bench['gmacPerSecond']:12.2f}")


if __name__ == "__main__":
    main()
