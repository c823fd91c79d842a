#!/usr/bin/env python3
"""Benchmark (not a test): where the time of one forward + backward pass goes (the gradient taken with respect to
the input, BatchNorm frozen: the teacher's work in data synthesis), Kiln's fp32 engine against PyTorch on CPU, per
kind of op, same models, same batch and thread count, same run.

    swift build -c release --product kiln
    python3 bench/train_profile_vs_pytorch.py [--models resnet20 mobilenetv2 vgg resnet18] [--threads 1 2]
                                              [--runs 10] [--rounds 3] [--batch 64] [--batch-224 8]

Kiln: `kiln bench MODEL --backward --profile` (each kind of op timed forward and backward inside the engine).
PyTorch: torch.profiler over the same passes of the same architecture (the committed teachers' twins from
scripts/train_teachers.py, a VGG-style Fashion-MNIST CNN, torchvision's ResNet-18 at 224×224 exported with its
BatchNorm kept), eval mode, requires_grad on the input, its faster memory layout (NCHW or channels_last). Both are
grouped into the same categories: convolution forward and backward (split by kind: 1×1, k×k, depthwise),
BatchNorm, activations, pooling, elementwise, matmul, the rest. Prints per category both times and Kiln / PyTorch,
and the whole pass's medians and ratio. Kiln and PyTorch are measured alternately `--rounds` times and the
ratio printed is the median of the rounds' ratios (the machines are shared: single runs move by ±30%); the tables
are the last round's. Weights do not change the work, so they are random.
Needs torch, torchvision and onnx from PyPI.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import torch
import torch.nn as nn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import train_teachers  # noqa: E402


class VGG(nn.Module):
    """A VGG-style Fashion-MNIST CNN: 3×3 convolutions with BatchNorm and ReLU, max pooling, a linear head."""

    def __init__(self):
        super().__init__()
        layers, channels = [], 1
        for width, pool in [(32, False), (32, True), (64, False), (64, True), (128, False), (128, True)]:
            layers += [nn.Conv2d(channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
            if pool:
                layers.append(nn.MaxPool2d(2))
            channels = width
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(128 * 3 * 3, 10)

    def forward(self, x):
        return self.head(torch.flatten(self.features(x), 1))


def make_model(name):
    """(PyTorch module, input shape per sample, ONNX path or None to export it)."""
    if name == "resnet20":
        return train_teachers.ResNet20(), (1, 28, 28), os.path.join(ROOT, "models", "resnet20.onnx")
    if name == "mobilenetv2":
        return train_teachers.MobileNetV2(), (1, 28, 28), os.path.join(ROOT, "models", "mobilenetv2.onnx")
    if name == "vgg":
        return VGG(), (1, 28, 28), None
    if name == "resnet18":
        import torchvision
        return torchvision.models.resnet18(weights=None), (3, 224, 224), None
    raise SystemExit(f"unknown model {name}")


def export(model, sample, path):
    """ONNX export with BatchNorm kept (synthesis needs its statistics), as the README tells users to."""
    torch.onnx.export(model.eval(), (torch.zeros(1, *sample),), path, dynamo=False, opset_version=13,
                      training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=False,
                      input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}})


def category(op):
    """The category of a Kiln label or a PyTorch aten op name, and whether it is a backward op."""
    o = op.lower()
    backward = "backward" in o
    if o.startswith("conv") or "convolution" in o or "conv2d" in o:
        return "convolution", backward
    if "batch_norm" in o or o.startswith("batchnorm"):
        return "batchnorm", backward
    if any(k in o for k in ("relu", "threshold", "clamp", "hardtanh", "sigmoid", "silu", "hardswish")):
        return "activation", backward
    if "pool" in o or "max_pool" in o:
        return "pooling", backward
    if any(k in o for k in ("addmm", "::mm", "matmul", "linear", "gemm")):
        return "matmul", backward
    if any(k in o for k in ("add", "mul", "sub", "div")):
        return "elementwise", backward
    return "other", backward


def kiln_profile(kiln, onnx_path, threads, batch, runs):
    out = subprocess.run([kiln, "bench", onnx_path, "--backward", "--profile", "--batch", str(batch),
                          "--threads", str(threads), "--runs", str(runs), "--json"],
                         check=True, capture_output=True, text=True)
    result = json.loads(out.stdout)
    table = {}
    for op in result["ops"]:
        name, _ = category(op["op"])
        table.setdefault(name, [0.0, 0.0])
        table[name][0] += op["forwardMs"]
        table[name][1] += op["backwardMs"]
    return result["medianMs"], table, result["ops"]


# PyTorch's aten ops by self time (each op's own time, its children's excluded, so nothing counts twice); the
# backward ops carry "backward" in their names, except the matrix products of a linear layer's backward (aten::mm),
# which count as forward matmul here.
def torch_profile(model, sample, threads, batch, runs, layouts=(False, True)):
    """Median pass time in the faster of `layouts` (channels_last off/on), the per-category table, the layout."""
    torch.set_num_threads(threads)
    model = model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    best = None
    for channels_last in layouts:
        m = model.to(memory_format=torch.channels_last) if channels_last else model
        x = torch.randn(batch, *sample)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)

        def step():
            inp = x.clone().requires_grad_(True)
            m(inp).sum().backward()

        for _ in range(max(3, runs // 5)):
            step()
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            step()
            times.append((time.perf_counter() - start) * 1e3)
        times.sort()
        median = times[len(times) // 2]
        if best is None or median < best[0]:
            best = (median, channels_last, step)
    median, channels_last, step = best
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(runs):
            step()
    table = {}
    for event in prof.key_averages():
        name = event.key
        if not name.startswith("aten::"):
            continue
        cat, backward = category(name)
        table.setdefault(cat, [0.0, 0.0])
        table[cat][1 if backward else 0] += event.self_cpu_time_total / 1e3 / runs
    return median, table, channels_last


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["resnet20", "mobilenetv2", "vgg", "resnet18"])
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3,
                        help="Kiln and PyTorch measured alternately this many times; the ratio is their median")
    parser.add_argument("--batch", type=int, default=64, help="batch of the 28×28 models")
    parser.add_argument("--batch-224", type=int, default=8, help="batch of the 224×224 models")
    parser.add_argument("--kiln", default=os.path.join(ROOT, ".build", "release", "kiln"))
    args = parser.parse_args()
    cpu = json.loads(subprocess.run([args.kiln, "bench", os.path.join(ROOT, "models", "resnet20.onnx"), "--runs", "1",
                                     "--json"], check=True, capture_output=True, text=True).stdout)["cpu"]
    print(f"forward + backward w.r.t. the input, BatchNorm frozen; CPU {cpu}; torch {torch.__version__}")
    with tempfile.TemporaryDirectory() as folder:
        for name in args.models:
            model, sample, path = make_model(name)
            torch.manual_seed(0)
            if path is None:
                path = os.path.join(folder, name + ".onnx")
                export(model, sample, path)
            batch = args.batch_224 if sample[1] >= 100 else args.batch
            for threads in args.threads:
                ratios, layouts = [], (False, True)
                for round in range(args.rounds):
                    # Alternate who goes first, so that a drift of the shared machine does not favour one side.
                    for side in ((0, 1) if round % 2 == 0 else (1, 0)):
                        if side == 0:
                            kiln_ms, kiln_table, kiln_ops = kiln_profile(args.kiln, path, threads, batch, args.runs)
                        else:
                            torch_ms, torch_table, channels_last = torch_profile(model, sample, threads, batch,
                                                                                 args.runs, layouts)
                            layouts = (channels_last,)
                    ratios.append(kiln_ms / torch_ms)
                median_ratio = sorted(ratios)[len(ratios) // 2]
                print(f"\n{name} batch {batch}, {threads} thread(s): kiln/torch {median_ratio:.2f} (median of "
                      f"{len(ratios)} alternated rounds: {', '.join(f'{r:.2f}' for r in ratios)}); last round kiln "
                      f"{kiln_ms:.1f} ms, torch {torch_ms:.1f} ms ({'channels_last' if channels_last else 'NCHW'})")
                print(f"  {'category':<12} {'kiln fwd':>9} {'torch fwd':>9} {'ratio':>6} {'kiln bwd':>9} {'torch bwd':>9} {'ratio':>6}")
                for cat in sorted(set(kiln_table) | set(torch_table),
                                  key=lambda c: -sum(kiln_table.get(c, [0, 0]))):
                    k = kiln_table.get(cat, [0.0, 0.0])
                    t = torch_table.get(cat, [0.0, 0.0])
                    ratio = lambda a, b: f"{a / b:6.2f}" if b > 0.005 else "     -"
                    print(f"  {cat:<12} {k[0]:9.2f} {t[0]:9.2f} {ratio(k[0], t[0])} {k[1]:9.2f} {t[1]:9.2f} {ratio(k[1], t[1])}")
                print("  kiln by kind: " + ", ".join(f"{op['op']} {op['forwardMs'] + op['backwardMs']:.1f}"
                                                     for op in kiln_ops[:6]) + " (ms, forward + backward)")


if __name__ == "__main__":
    main()
