#!/usr/bin/env python3
"""Trains the Fashion-MNIST teachers of models/ on CPU and exports them to ONNX with BatchNorm kept.

    python3 scripts/train_teachers.py [--model resnet20|mobilenetv2|all] [--epochs E] [--threads T]

Writes models/<name>.onnx and updates models/teachers.json with the fp32 top-1 that PyTorch measured on the
10k test images (the number `kiln eval` must reproduce). Needs the PyPI packages torch and onnx and the Debian
package dataset-fashion-mnist. Deterministic for a given seed and thread count.
"""
import argparse
import hashlib
import json
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fashion_mnist  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = os.path.join(ROOT, "models")


class BasicBlock(nn.Module):
    """Two 3x3 convs with BN; projection shortcut (1x1 conv + BN) when the shape changes."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet20(nn.Module):
    """ResNet-20 for 1x28x28 inputs: stem, 3 stages x 3 basic blocks (16, 32, 64 channels), GAP, linear."""

    def __init__(self, classes=10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        blocks, cin = [], 16
        for cout, stride in [(16, 1), (32, 2), (64, 2)]:
            for i in range(3):
                blocks.append(BasicBlock(cin, cout, stride if i == 0 else 1))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(64, classes)

    def forward(self, x):
        x = self.blocks(self.stem(x))
        x = F.adaptive_avg_pool2d(x, 1)
        return self.fc(torch.flatten(x, 1))


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand (ReLU6), 3x3 depthwise (ReLU6), 1x1 linear projection; residual if shapes match."""

    def __init__(self, cin, cout, stride, expand):
        super().__init__()
        hidden = cin * expand
        layers = []
        if expand != 1:
            layers += [nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6()]
        layers += [nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False), nn.BatchNorm2d(hidden),
                   nn.ReLU6(), nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        out = self.body(x)
        return x + out if self.residual else out


class MobileNetV2(nn.Module):
    """MobileNetV2 for 1x28x28 inputs: inverted residuals with depthwise convs and ReLU6."""

    # (expansion, channels, repeats, first stride)
    CONFIG = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 2, 1), (6, 96, 1, 1)]

    def __init__(self, classes=10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU6())
        blocks, cin = [], 16
        for expand, cout, repeats, stride in self.CONFIG:
            for i in range(repeats):
                blocks.append(InvertedResidual(cin, cout, stride if i == 0 else 1, expand))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Sequential(nn.Conv2d(cin, 256, 1, bias=False), nn.BatchNorm2d(256), nn.ReLU6())
        self.dropout = nn.Dropout(0.2)
        self.fc = nn.Linear(256, classes)

    def forward(self, x):
        x = self.head(self.blocks(self.stem(x)))
        x = F.adaptive_avg_pool2d(x, 1)
        x = x.view(x.size(0), -1)  # exports as Shape -> Gather -> Unsqueeze -> Concat -> Reshape
        return self.fc(self.dropout(x))


ARCHITECTURES = {"resnet20": (ResNet20, 13), "mobilenetv2": (MobileNetV2, 17)}


def augment(x, generator, pad_value=-fashion_mnist.MEAN / fashion_mnist.STD):
    """Random 2-pixel-padded crop and horizontal flip of a normalized batch; the padding is a black pixel
    (`pad_value` in the batch's normalization)."""
    n = x.shape[0]
    padded = F.pad(x, (2, 2, 2, 2), value=float(pad_value))
    dx = torch.randint(0, 5, (n,), generator=generator)
    dy = torch.randint(0, 5, (n,), generator=generator)
    rows = (dy[:, None] + torch.arange(28)[None, :])  # n x 28
    cols = (dx[:, None] + torch.arange(28)[None, :])
    idx_n = torch.arange(n)[:, None, None]
    out = padded[:, 0][idx_n, rows[:, :, None], cols[:, None, :]][:, None]
    flip = torch.rand(n, generator=generator) < 0.5
    out[flip] = out[flip].flip(3)
    return out


def evaluate(model, x, y, batch=1000):
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(x), batch):
            correct += (model(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum().item()
    return correct / len(x)


def export(model, name, opset, top1, seconds, epochs):
    path = os.path.join(MODELS, f"{name}.onnx")
    tmp = path + ".tmp"
    model.eval()
    dummy = torch.zeros(1, 1, 28, 28)
    torch.onnx.export(model, (dummy,), tmp, dynamo=False, opset_version=opset,
                      training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=False,
                      input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}})
    import onnx
    proto = onnx.load(tmp)
    for key, value in [("kiln.input_mean", str(fashion_mnist.MEAN)), ("kiln.input_std", str(fashion_mnist.STD)),
                       ("kiln.dataset", "fashion-mnist")]:
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto)
    onnx.save(proto, tmp)
    os.replace(tmp, path)
    with open(path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    params = sum(p.numel() for p in model.parameters())
    record_path = os.path.join(MODELS, "teachers.json")
    records = json.load(open(record_path)) if os.path.exists(record_path) else {}
    records[name] = {"file": f"{name}.onnx", "sha256": digest, "opset": opset, "parameters": params,
                     "dataset": "fashion-mnist", "input_mean": fashion_mnist.MEAN, "input_std": fashion_mnist.STD,
                     "top1": top1, "epochs": epochs, "train_seconds": round(seconds),
                     "torch": torch.__version__, "threads": torch.get_num_threads()}
    with open(record_path + ".tmp", "w") as f:
        json.dump(records, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(record_path + ".tmp", record_path)
    print(f"{name}: wrote {path} ({params} parameters), top-1 {top1 * 100:.2f}%")


def fit(name, model, train_set, test_set, epochs, generator, lr, max_lr, pad_value):
    """SGD with Nesterov momentum and weight decay 5e-4, one-cycle schedule (warm-up 15%) up to `max_lr`, label
    smoothing 0.05, batches of 128 with random crops and flips (`pad_value`: a black pixel); one line per epoch with
    the test top-1. Returns the training seconds."""
    (xtr, ytr), (xte, yte) = train_set, test_set
    batch = 128
    steps = epochs * ((len(xtr) + batch - 1) // batch)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=max_lr, total_steps=steps, pct_start=0.15)
    start = time.time()
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(xtr), generator=generator)
        total = 0.0
        for i in range(0, len(xtr), batch):
            index = order[i:i + batch]
            xb = augment(xtr[index], generator, pad_value=pad_value).contiguous(memory_format=torch.channels_last)
            loss = F.cross_entropy(model(xb), ytr[index], label_smoothing=0.05)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item() * len(index)
        print(f"{name} epoch {epoch + 1}/{epochs}: loss {total / len(xtr):.4f}, test top-1 "
              f"{evaluate(model, xte, yte) * 100:.2f}%, {time.time() - start:.0f} s", flush=True)
    return time.time() - start


def train(name, epochs, seed):
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    cls, opset = ARCHITECTURES[name]
    # channels_last makes PyTorch's CPU convolutions (depthwise above all) 2-3x faster to train.
    model = cls().to(memory_format=torch.channels_last)
    xtr, ytr = fashion_mnist.load("train")
    xte, yte = fashion_mnist.load("t10k")
    xtr, ytr = torch.from_numpy(fashion_mnist.normalize(xtr)), torch.from_numpy(ytr)
    xte, yte = torch.from_numpy(fashion_mnist.normalize(xte)), torch.from_numpy(yte)
    seconds = fit(name, model, (xtr, ytr), (xte, yte), epochs, generator, lr=0.1, max_lr=0.2,
                  pad_value=-fashion_mnist.MEAN / fashion_mnist.STD)
    model = model.to(memory_format=torch.contiguous_format)
    top1 = evaluate(model, xte, yte)
    export(model, name, opset, top1, seconds, epochs)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="all", choices=["all", *ARCHITECTURES])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    names = list(ARCHITECTURES) if args.model == "all" else [args.model]
    for name in names:
        train(name, args.epochs, args.seed)


if __name__ == "__main__":
    main()
