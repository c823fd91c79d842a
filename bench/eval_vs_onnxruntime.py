#!/usr/bin/env python3
"""Benchmark (not a test): the fp32 teacher evaluated on the 10k Fashion-MNIST test images by Kiln and by
onnxruntime, in the same run, with the same thread count; prints both times and the ratio Kiln / onnxruntime.

    swift build -c release --product kiln
    python3 bench/eval_vs_onnxruntime.py [--model models/resnet20.onnx] [--threads 2] [--repeats 3]

Kiln's time is the `seconds` its `kiln eval --json` reports (normalization + inference + argmax, model load
excluded); onnxruntime's covers the same work on the same batches. Needs the PyPI packages numpy and onnxruntime.
The best of --repeats runs is kept for each, alternating the two so that machine noise hits both alike.
"""
import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np
import onnxruntime as ort

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import fashion_mnist  # noqa: E402


def kiln_eval(kiln, model, threads, batch):
    out = subprocess.run([kiln, "eval", model, "--dataset", "fashion-mnist", "--threads", str(threads),
                          "--batch", str(batch), "--json"], check=True, capture_output=True, text=True)
    result = json.loads(out.stdout)
    return result["seconds"], result["top1"]


def ort_eval(session, images, labels, batch):
    start = time.perf_counter()
    correct = 0
    name = session.get_inputs()[0].name
    for i in range(0, len(images), batch):
        x = fashion_mnist.normalize(images[i:i + batch])
        logits = session.run(None, {name: x})[0]
        correct += int((logits.argmax(1) == labels[i:i + batch]).sum())
    return time.perf_counter() - start, correct / len(images)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=os.path.join(ROOT, "models", "resnet20.onnx"))
    parser.add_argument("--kiln", default=os.path.join(ROOT, ".build", "release", "kiln"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=250)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    session = ort.InferenceSession(args.model, options, providers=["CPUExecutionProvider"])
    images, labels = fashion_mnist.load("t10k")

    kiln_times, ort_times = [], []
    for _ in range(args.repeats):
        seconds, kiln_top1 = kiln_eval(args.kiln, args.model, args.threads, args.batch)
        kiln_times.append(seconds)
        seconds, ort_top1 = ort_eval(session, images, labels, args.batch)
        ort_times.append(seconds)
    kiln_best, ort_best = min(kiln_times), min(ort_times)
    print(f"model {os.path.relpath(args.model, ROOT)}, 10000 images, batch {args.batch}, {args.threads} threads, "
          f"best of {args.repeats}")
    print(f"  kiln         {kiln_best:7.3f} s   top-1 {kiln_top1 * 100:.2f}%")
    print(f"  onnxruntime  {ort_best:7.3f} s   top-1 {ort_top1 * 100:.2f}%  (onnxruntime {ort.__version__})")
    print(f"  ratio kiln / onnxruntime = {kiln_best / ort_best:.2f}")


if __name__ == "__main__":
    main()
