#!/usr/bin/env python3
"""Benchmark (not a test): an int8 student run by KilnRuntime and by onnxruntime (its QDQ export), batch 1, in the
same run; prints latencies, the ratios Kiln / onnxruntime, and how often each agrees with Kiln on the test set.

    swift build -c release --product kiln
    python3 bench/student_vs_onnxruntime.py [--teacher models/resnet20.onnx ...] [--bits w8a8 w4a4] [--runs 300]

Each teacher is quantized by `kiln quantize` with the committed real calibration set (writing the .kiln student
and its QDQ ONNX export to a temporary folder; below W8A8 with block reconstruction at --iterations per block);
KilnRuntime is timed by `kiln bench` (allocation-free context, median of --runs after warm-up), onnxruntime by the
same loop in Python on the QDQ model, in its default int8 mode (what its users get) and in its exact mode
(session.x64quantprecision=1). On x86 CPUs without VNNI the default mode multiplies with vpmaddubsw, which
saturates 16-bit pair sums: the table shows what that costs in top-1 and in agreement with the exact result on the
10k Fashion-MNIST test images. Needs numpy and onnxruntime from PyPI.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import onnxruntime as ort

from peers import median_latency_ms, session

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import fashion_mnist  # noqa: E402


def kiln_json(kiln, *arguments):
    return json.loads(subprocess.run([kiln, *arguments, "--json"], check=True, capture_output=True, text=True).stdout)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", action="append")
    parser.add_argument("--bits", nargs="+", default=["w8a8"])
    parser.add_argument("--iterations", type=int, default=500, help="reconstruction iterations per block below W8A8")
    parser.add_argument("--calibration", default=os.path.join(ROOT, "calibration", "fashion-mnist-real-512.npy"))
    parser.add_argument("--kiln", default=os.path.join(ROOT, ".build", "release", "kiln"))
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    teachers = args.teacher or [os.path.join(ROOT, "models", f) for f in ("resnet20.onnx", "mobilenetv2.onnx")
                                if os.path.exists(os.path.join(ROOT, "models", f))]
    images, labels = fashion_mnist.load("t10k")
    header = (f"{'model':<22} {'kiln ms':>8} {'ort ms':>8} {'exact ms':>8} {'ratio':>6} {'r.exact':>7} "
              f"{'kiln top-1':>10} {'ort top-1':>9} {'exact top-1':>11} {'ort=kiln':>9} {'exact=kiln':>10}")
    print(f"batch 1, {args.threads} thread(s), median of {args.runs} runs; onnxruntime {ort.__version__}, "
          "default and exact (session.x64quantprecision=1) modes; top-1 and agreement on the 10k test images")
    first = True
    with tempfile.TemporaryDirectory() as folder:
        for teacher in teachers:
            for bits in args.bits:
                name = f"{os.path.splitext(os.path.basename(teacher))[0]}-{bits}"
                student = os.path.join(folder, name + ".kiln")
                qdq = os.path.join(folder, name + ".qdq.onnx")
                quantize = [args.kiln, "quantize", teacher, "-o", student, "--calibration", args.calibration,
                            "--onnx-out", qdq, "--bits", bits, "--json"]
                if bits != "w8a8":
                    quantize += ["--iterations-per-block", str(args.iterations)]
                subprocess.run(quantize, check=True, capture_output=True)
                bench = kiln_json(args.kiln, "bench", student, "--runs", str(args.runs), "--threads", str(args.threads))
                if first:
                    print(f"CPU {bench['cpu']}; Kiln kernels {bench['kernels']}")
                    print(header)
                    first = False
                inspect = kiln_json(args.kiln, "inspect", student)
                shape = [1] + [int(d) for d in inspect["inputs"][0]["shape"][1:]]
                ort_ms = median_latency_ms(qdq, shape, args.runs, args.threads)
                exact_ms = median_latency_ms(qdq, shape, args.runs, args.threads, exact=True)
                # Predictions on the test set: Kiln, onnxruntime default, onnxruntime exact.
                metadata = session(qdq, 2).get_modelmeta().custom_metadata_map
                mean = float(metadata.get("kiln.input_mean", fashion_mnist.MEAN))
                std = float(metadata.get("kiln.input_std", fashion_mnist.STD))
                x = ((images.astype(np.float32)[:, None] / 255.0) - np.float32(mean)) / np.float32(std)
                inputs = os.path.join(folder, "test.npy")
                np.save(inputs, x.astype(np.float32))
                out = os.path.join(folder, "kiln.npy")
                subprocess.run([args.kiln, "run", student, "--input", inputs, "-o", out], check=True, capture_output=True)
                kiln_pred = np.load(out).argmax(1)
                predictions = {}
                for exact in (False, True):
                    s = session(qdq, 2, exact)
                    name_in = s.get_inputs()[0].name
                    predictions[exact] = np.concatenate([s.run(None, {name_in: x[i:i + 500]})[0].argmax(1)
                                                         for i in range(0, len(x), 500)])
                top1 = lambda p: 100 * float((p == labels).mean())  # noqa: E731
                agree = lambda p: 100 * float((p == kiln_pred).mean())  # noqa: E731
                print(f"{name:<22} {bench['medianMs']:8.3f} {ort_ms:8.3f} {exact_ms:8.3f} {bench['medianMs'] / ort_ms:6.2f} "
                      f"{bench['medianMs'] / exact_ms:7.2f} {top1(kiln_pred):9.2f}% {top1(predictions[False]):8.2f}% "
                      f"{top1(predictions[True]):10.2f}% {agree(predictions[False]):8.2f}% {agree(predictions[True]):9.2f}%",
                      flush=True)


if __name__ == "__main__":
    main()
