#!/usr/bin/env python3
"""Benchmark (not a test): one forward + backward pass of the ResNet-20 teacher at batch 64 with the gradient
taken with respect to the input (as in data synthesis), Kiln against PyTorch on CPU with the same thread count,
in the same run; prints both medians and the ratio Kiln / PyTorch for 1 and 2 threads, and Kiln's peak RSS at
batch 128.

    swift build -c release --product kiln
    python3 bench/train_step_vs_pytorch.py [--runs 20]

Kiln runs `kiln bench --backward` on models/resnet20.onnx (BatchNorm frozen, as the teacher is during synthesis);
PyTorch runs the same architecture (scripts/train_teachers.py) in eval mode with requires_grad on the input.
Weights do not change the work, so PyTorch's are random. Needs torch from PyPI.
"""
import argparse
import json
import os
import subprocess
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import train_teachers  # noqa: E402


def torch_step(threads, batch, runs, channels_last):
    torch.set_num_threads(threads)
    model = train_teachers.ResNet20().eval()
    x = torch.randn(batch, 1, 28, 28)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    for p in model.parameters():
        p.requires_grad_(False)

    def step():
        inp = x.clone().requires_grad_(True)
        model(inp).sum().backward()

    for _ in range(max(3, runs // 5)):
        step()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        step()
        times.append((time.perf_counter() - start) * 1e3)
    times.sort()
    return times[len(times) // 2]


def kiln_step(kiln, model, threads, batch, runs):
    out = subprocess.run([kiln, "bench", model, "--backward", "--batch", str(batch), "--threads", str(threads),
                          "--runs", str(runs), "--json"], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=os.path.join(ROOT, "models", "resnet20.onnx"))
    parser.add_argument("--kiln", default=os.path.join(ROOT, ".build", "release", "kiln"))
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    print(f"ResNet-20 forward+backward w.r.t. the input, batch {args.batch}, median of {args.runs}; torch {torch.__version__}")
    print(f"{'threads':>7} {'kiln ms':>9} {'torch ms':>9} {'ratio':>6} {'torch (channels_last) ms':>25}")
    for threads in (1, 2):
        kiln = kiln_step(args.kiln, args.model, threads, args.batch, args.runs)["medianMs"]
        pytorch = torch_step(threads, args.batch, args.runs, channels_last=False)
        pytorch_cl = torch_step(threads, args.batch, args.runs, channels_last=True)
        best = min(pytorch, pytorch_cl)
        print(f"{threads:>7} {kiln:9.1f} {pytorch:9.1f} {kiln / best:6.2f} {pytorch_cl:25.1f}   (ratio against PyTorch's faster layout)")
    peak = kiln_step(args.kiln, args.model, 2, 128, 3)["peakRSSMegabytes"]
    print(f"kiln peak RSS, batch 128 forward+backward: {peak:.0f} MB")


if __name__ == "__main__":
    main()
