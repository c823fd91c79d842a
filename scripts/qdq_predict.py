#!/usr/bin/env python3
"""Runs a QDQ ONNX student in onnxruntime on the Fashion-MNIST test images and writes its argmax per image.

    python3 scripts/qdq_predict.py STUDENT.qdq.onnx OUT.npy [--mean M --std S] [--limit N] [--threads T]
    python3 scripts/qdq_predict.py STUDENT.qdq.onnx OUT.npy --inputs X.npy

Used by the test suite to check that onnxruntime and KilnRuntime agree on a student. With --inputs, runs the model
on the given float32 batch (one sample at a time: exports of fixed-batch models take batch 1) and writes every
output flattened per sample and joined, [N, total] float32, instead of Fashion-MNIST argmaxes. Mean and std default to the
model's kiln.input_mean / kiln.input_std metadata. Needs the PyPI packages numpy and onnxruntime.

onnxruntime runs in its exact int8 mode (session option session.x64quantprecision=1): on x86 CPUs without VNNI its
default kernels multiply with vpmaddubsw, which saturates 16-bit pair sums, so its results depend on the CPU.
--default-precision runs its default mode instead (what its users get; benchmarks report both).
"""
import argparse
import os
import sys

import numpy as np
import onnxruntime as ort

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fashion_mnist  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("output")
    parser.add_argument("--mean", type=float)
    parser.add_argument("--std", type=float)
    parser.add_argument("--limit", type=int, default=10000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--inputs", help="a float32 .npy batch to run instead of the Fashion-MNIST test images")
    parser.add_argument("--default-precision", action="store_true",
                        help="onnxruntime's default int8 mode (inexact on x86 without VNNI) instead of its exact one")
    args = parser.parse_args()
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    if not args.default_precision:
        options.add_session_config_entry("session.x64quantprecision", "1")
    session = ort.InferenceSession(args.model, options, providers=["CPUExecutionProvider"])
    if args.inputs:
        x = np.load(args.inputs).astype(np.float32)
        name = session.get_inputs()[0].name
        rows = [np.concatenate([o.reshape(-1) for o in session.run(None, {name: x[i:i + 1]})]) for i in range(len(x))]
        np.save(args.output, np.stack(rows).astype(np.float32))
        return
    metadata = session.get_modelmeta().custom_metadata_map
    mean = args.mean if args.mean is not None else float(metadata.get("kiln.input_mean", 0))
    std = args.std if args.std is not None else float(metadata.get("kiln.input_std", 1))
    images, _ = fashion_mnist.load("t10k")
    images = images[:args.limit]
    name = session.get_inputs()[0].name
    predictions = []
    for i in range(0, len(images), 500):
        x = ((images[i:i + 500].astype(np.float32)[:, None] / 255.0) - np.float32(mean)) / np.float32(std)
        predictions.append(session.run(None, {name: x.astype(np.float32)})[0].argmax(1))
    np.save(args.output, np.concatenate(predictions).astype(np.int64))


if __name__ == "__main__":
    main()
