#!/usr/bin/env python3
"""Trains the teacher zoo of models/zoo/: Fashion-MNIST CNNs of shapes Kiln was not tuned on, exported the way a
user exports, with no Kiln metadata.

    python3 scripts/train_zoo.py [--model vgg|wide|conv5|all] [--epochs E] [--threads T]

Each teacher is trained on its own input convention (the preprocessing a user would have chosen), so that nothing
about the input domain can be guessed from Kiln's own habits:

- vgg:   a VGG-style stack (3×3 convs 32-32 / 64-64 / 128, max pooling, flatten, FC 256, FC 10),
         input (x/255 − 0.2860) / 0.3530 (the dataset's statistics);
- wide:  wide and shallow (3×3 conv 128, max pooling, 3×3 conv 256 stride 2, global average pooling, FC 10),
         input x/255 in [0, 1];
- conv5: 5×5 convolutions (32, 64, 96 channels, max pooling, global average pooling, FC 10),
         input (x/255 − 0.5) / 0.5 in [−1, 1].

Exported with a fixed batch of 1 and BatchNorm kept, as a user following Kiln's README would: vgg and conv5 with
PyTorch's default exporter and `optimize=False` (which keeps BatchNormalization), wide with the legacy exporter
(`dynamo=False, training=TrainingMode.PRESERVE, do_constant_folding=False`). Writes models/zoo/<name>.onnx and
models/zoo/zoo.json (SHA-256, input convention, the fp32 top-1 PyTorch measured on the 10k test images, training
time). Needs the PyPI packages torch, onnx and onnxscript and the Debian package dataset-fashion-mnist.
"""
import argparse
import hashlib
import json
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fashion_mnist  # noqa: E402
from train_teachers import evaluate, fit  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ZOO = os.path.join(ROOT, "models", "zoo")


def conv_bn_relu(cin, cout, kernel, stride=1):
    return [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]


class VGG(nn.Module):
    """VGG-style: 3×3 convs 32-32, pool, 64-64, pool, 128, pool, flatten 128·3·3, FC 256 (ReLU, dropout), FC 10."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(*conv_bn_relu(1, 32, 3), *conv_bn_relu(32, 32, 3), nn.MaxPool2d(2),
                                      *conv_bn_relu(32, 64, 3), *conv_bn_relu(64, 64, 3), nn.MaxPool2d(2),
                                      *conv_bn_relu(64, 128, 3), nn.MaxPool2d(2))
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(128 * 3 * 3, 256), nn.ReLU(), nn.Dropout(0.3),
                                        nn.Linear(256, 10))

    def forward(self, x):
        return self.classifier(self.features(x))


class Wide(nn.Module):
    """Wide and shallow: 3×3 conv 128, max pool, 3×3 conv 256 stride 2, global average pool, FC 10."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(*conv_bn_relu(1, 128, 3), nn.MaxPool2d(2), *conv_bn_relu(128, 256, 3, stride=2))
        self.fc = nn.Linear(256, 10)

    def forward(self, x):
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(self.features(x), 1), 1))


class Conv5(nn.Module):
    """5×5 convs: 32, pool, 64, pool, 96, global average pool, FC 10."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(*conv_bn_relu(1, 32, 5), nn.MaxPool2d(2), *conv_bn_relu(32, 64, 5), nn.MaxPool2d(2),
                                      *conv_bn_relu(64, 96, 5))
        self.fc = nn.Linear(96, 10)

    def forward(self, x):
        return self.fc(F.adaptive_avg_pool2d(self.features(x), 1).flatten(1))


# name: (class, input mean, input std (both in the [0, 1] pixel scale), exporter)
ZOO_MODELS = {
    "vgg": (VGG, fashion_mnist.MEAN, fashion_mnist.STD, "dynamo"),
    "wide": (Wide, 0.0, 1.0, "legacy"),
    "conv5": (Conv5, 0.5, 0.5, "dynamo"),
}


def export(model, name, exporter, folder):
    """Writes `model` to folder/name.onnx as a user would: fixed batch 1, BatchNorm kept, no metadata. PyTorch's
    default exporter also writes the weights to folder/name.onnx.data (ONNX external data), as users get them.
    Returns the model proto and the files written."""
    model.eval()
    dummy = torch.zeros(1, 1, 28, 28)
    import shutil
    import tempfile
    import onnx
    with tempfile.TemporaryDirectory() as scratch:
        path = os.path.join(scratch, f"{name}.onnx")
        if exporter == "dynamo":
            torch.onnx.export(model, (dummy,), path, optimize=False)
        else:
            torch.onnx.export(model, (dummy,), path, dynamo=False, training=torch.onnx.TrainingMode.PRESERVE,
                              do_constant_folding=False)
        proto = onnx.load(path)
        onnx.checker.check_model(path)
        assert not any(p.key.startswith("kiln.") for p in proto.metadata_props)
        assert any(n.op_type == "BatchNormalization" for n in proto.graph.node), f"{name}: BatchNorm was folded away"
        written = sorted(os.listdir(scratch))
        for file in written:
            shutil.move(os.path.join(scratch, file), os.path.join(folder, file + ".tmp"))
        for file in written:
            os.replace(os.path.join(folder, file + ".tmp"), os.path.join(folder, file))
    return proto, written


def train(name, epochs, seed):
    cls, mean, std, exporter = ZOO_MODELS[name]
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = cls().to(memory_format=torch.channels_last)
    xtr, ytr = fashion_mnist.load("train")
    xte, yte = fashion_mnist.load("t10k")

    def normalize(images):
        return (torch.from_numpy(images).float()[:, None] / 255 - mean) / std

    xtr, ytr, xte, yte = normalize(xtr), torch.from_numpy(ytr), normalize(xte), torch.from_numpy(yte)
    seconds = fit(name, model, (xtr, ytr), (xte, yte), epochs, generator, lr=0.05, max_lr=0.1, pad_value=(0 - mean) / std)
    model = model.to(memory_format=torch.contiguous_format)
    top1 = evaluate(model, xte, yte)
    os.makedirs(ZOO, exist_ok=True)
    proto, written = export(model, name, exporter, ZOO)
    digests = {}
    for file in written:
        with open(os.path.join(ZOO, file), "rb") as f:
            digests[file] = hashlib.sha256(f.read()).hexdigest()
    record_path = os.path.join(ZOO, "zoo.json")
    records = json.load(open(record_path)) if os.path.exists(record_path) else {}
    records[name] = {"file": f"{name}.onnx", "sha256": digests, "dataset": "fashion-mnist",
                     "architecture": cls.__doc__, "input_mean": mean, "input_std": std,
                     "exporter": "torch.onnx.export(optimize=False)" if exporter == "dynamo" else
                     "torch.onnx.export(dynamo=False, training=PRESERVE, do_constant_folding=False)",
                     "opset": proto.opset_import[0].version, "parameters": sum(p.numel() for p in model.parameters()),
                     "top1": top1, "epochs": epochs, "train_seconds": round(seconds), "torch": torch.__version__,
                     "threads": torch.get_num_threads()}
    with open(record_path + ".tmp", "w") as f:
        json.dump(records, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(record_path + ".tmp", record_path)
    print(f"{name}: wrote {', '.join(written)} in {ZOO}, top-1 {top1 * 100:.2f}%, {seconds:.0f} s")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="all", choices=["all", *ZOO_MODELS])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for name in (list(ZOO_MODELS) if args.model == "all" else [args.model]):
        train(name, args.epochs, args.seed)


if __name__ == "__main__":
    main()
