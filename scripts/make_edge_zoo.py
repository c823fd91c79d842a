#!/usr/bin/env python3
"""The edge zoo: the CNNs users deploy at the edge, exported from torchvision the way a user exports them.

    python3 scripts/make_edge_zoo.py                    # small variants for the test suite → models/edge/
    python3 scripts/make_edge_zoo.py --full -o FOLDER   # the real architectures at 224×224, 1000 classes (benchmark)

Every model has random weights (seeded) and BatchNorm statistics warmed on random data (a few forward passes in
training mode, cumulative averages), so that BatchNorm is not the identity; it is then exported with PyTorch's default
exporter (`optimize=False`, which keeps BatchNormalization), fixed batch 1, no Kiln metadata — as users export.

Small variants (the suite runs them at 64×64 with 10 classes) keep each architecture's structure — its ops, block
types and activations — with fewer channels or blocks: MobileNetV3-Small/Large at width 0.35, EfficientNet-B0 at
width 0.25 and depth 0.25, ShuffleNetV2 ×0.5, RegNetX-200MF-like with narrow stages, MnasNet 0.35, DenseNet with
growth 8 and blocks (2, 2, 2), GoogLeNet's stem and two Inception blocks at a quarter width, SqueezeNet 1.1, ConvNeXt with one block
per stage, and two models written here: a small YOLO-style detector (SiLU, C2f-like split/concat blocks, nearest
upsampling, an FPN-style merge, a sigmoid head) and a small UNet (bilinear upsampling and transposed convolutions,
skip concats). Writes FOLDER/<name>.onnx, PyTorch's fp32 outputs on a fixed random input (<name>.input.npy,
<name>.output<i>.npy, for the importer's check) and FOLDER/edge.json (input shape, SHA-256, ops, parameters).

Needs the PyPI packages torch, torchvision, onnx and onnxscript.
"""
import argparse
import hashlib
import json
import os
import shutil
import tempfile

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision.models as tvm
from torchvision.models import convnext, efficientnet, mobilenetv3, regnet


class ConvBNSiLU(nn.Sequential):
    def __init__(self, cin, cout, k=3, s=1):
        super().__init__(nn.Conv2d(cin, cout, k, s, k // 2, bias=False), nn.BatchNorm2d(cout), nn.SiLU())


class C2f(nn.Module):
    """YOLOv8's C2f block: a 1×1 conv, split in two, a chain of bottlenecks on one half, concat of every stage."""

    def __init__(self, cin, cout, n=1):
        super().__init__()
        self.hidden = cout // 2
        self.cv1 = ConvBNSiLU(cin, 2 * self.hidden, 1)
        self.blocks = nn.ModuleList(nn.Sequential(ConvBNSiLU(self.hidden, self.hidden), ConvBNSiLU(self.hidden, self.hidden))
                                    for _ in range(n))
        self.cv2 = ConvBNSiLU((2 + n) * self.hidden, cout, 1)

    def forward(self, x):
        y = list(self.cv1(x).chunk(2, 1))
        for block in self.blocks:
            y.append(y[-1] + block(y[-1]))
        return self.cv2(torch.cat(y, 1))


class TinyYOLO(nn.Module):
    """A small YOLO-style detector: strided SiLU backbone, FPN-style top-down merge with nearest upsampling, and
    per-scale heads with sigmoid objectness/class scores (boxes as raw regressions)."""

    def __init__(self, classes=10, width=16):
        super().__init__()
        w = width
        self.stem = ConvBNSiLU(3, w, 3, 2)
        self.stage1 = nn.Sequential(ConvBNSiLU(w, 2 * w, 3, 2), C2f(2 * w, 2 * w))
        self.stage2 = nn.Sequential(ConvBNSiLU(2 * w, 4 * w, 3, 2), C2f(4 * w, 4 * w))
        self.stage3 = nn.Sequential(ConvBNSiLU(4 * w, 8 * w, 3, 2), C2f(8 * w, 8 * w))
        self.pool = nn.MaxPool2d(5, 1, 2)  # SPPF-like
        self.merge = C2f(8 * w + 4 * w, 4 * w)
        self.head_small = nn.Conv2d(4 * w, 4 + 1 + classes, 1)
        self.head_large = nn.Conv2d(8 * w, 4 + 1 + classes, 1)

    def forward(self, x):
        p3 = self.stage2(self.stage1(self.stem(x)))
        p4 = self.stage3(p3)
        p4 = p4 + self.pool(p4)
        merged = self.merge(torch.cat([F.interpolate(p4, scale_factor=2, mode="nearest"), p3], 1))
        small, large = self.head_small(merged), self.head_large(p4)
        return torch.cat([small[:, :4], torch.sigmoid(small[:, 4:])], 1), torch.cat([large[:, :4], torch.sigmoid(large[:, 4:])], 1)


class TinyUNet(nn.Module):
    """A small UNet: two downsampling stages, a transposed-conv and a bilinear upsampling path, skip concats, a
    per-pixel class head."""

    def __init__(self, classes=4, width=16):
        super().__init__()
        w = width

        def block(cin, cout):
            return nn.Sequential(nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                                 nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

        self.down1, self.down2, self.bottom = block(3, w), block(w, 2 * w), block(2 * w, 4 * w)
        self.up2 = nn.ConvTranspose2d(4 * w, 2 * w, 2, 2)
        self.dec2 = block(4 * w, 2 * w)
        self.dec1 = block(2 * w + w, w)
        self.head = nn.Conv2d(w, classes, 1)

    def forward(self, x):
        d1 = self.down1(x)
        d2 = self.down2(F.max_pool2d(d1, 2))
        b = self.bottom(F.max_pool2d(d2, 2))
        u2 = self.dec2(torch.cat([self.up2(b), d2], 1))
        u1 = self.dec1(torch.cat([F.interpolate(u2, scale_factor=2, mode="bilinear", align_corners=False), d1], 1))
        return self.head(u1)


def small_googlenet():
    """GoogLeNet's stem and Inception blocks (torchvision's own modules) at a quarter of its widths, two blocks."""
    from torchvision.models.googlenet import BasicConv2d, Inception
    return nn.Sequential(
        BasicConv2d(3, 16, kernel_size=7, stride=2, padding=3), nn.MaxPool2d(3, stride=2, ceil_mode=True),
        BasicConv2d(16, 16, kernel_size=1), BasicConv2d(16, 48, kernel_size=3, padding=1), nn.MaxPool2d(3, stride=2, ceil_mode=True),
        Inception(48, 16, 24, 32, 4, 8, 8), Inception(64, 32, 32, 48, 8, 24, 16), nn.MaxPool2d(3, stride=2, ceil_mode=True),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(120, 10))


def small_models():
    """name → (model, input size): the suite's variants."""
    mv3s, last = mobilenetv3._mobilenet_v3_conf("mobilenet_v3_small", width_mult=0.35)
    mv3l, last_l = mobilenetv3._mobilenet_v3_conf("mobilenet_v3_large", width_mult=0.35)
    eff, _ = efficientnet._efficientnet_conf("efficientnet_b0", width_mult=0.25, depth_mult=0.25)
    return {
        "mobilenet_v3_small": (mobilenetv3.MobileNetV3(mv3s, last, num_classes=10), 64),
        "mobilenet_v3_large": (mobilenetv3.MobileNetV3(mv3l, last_l, num_classes=10), 64),
        "efficientnet_b0": (efficientnet.EfficientNet(eff, 0.2, num_classes=10), 64),
        "shufflenet_v2": (tvm.shufflenet_v2_x0_5(num_classes=10), 64),
        "regnet_x": (regnet.RegNet(regnet.BlockParams.from_init_params(depth=6, w_0=16, w_a=8.0, w_m=2.0, group_width=8),
                                   num_classes=10), 64),
        "mnasnet": (tvm.MNASNet(0.35, num_classes=10), 64),
        "densenet": (tvm.DenseNet(growth_rate=8, block_config=(2, 2, 2), num_init_features=16, num_classes=10), 64),
        "googlenet": (small_googlenet(), 64),
        "squeezenet": (tvm.squeezenet1_1(num_classes=10), 64),
        "convnext": (convnext.ConvNeXt([convnext.CNBlockConfig(16, 32, 1), convnext.CNBlockConfig(32, 64, 1),
                                        convnext.CNBlockConfig(64, None, 1)], num_classes=10), 64),
        "tiny_yolo": (TinyYOLO(), 64),
        "tiny_unet": (TinyUNet(), 64),
    }


def full_models():
    """name → (model, input size): the real architectures (benchmark)."""
    return {
        "mobilenet_v3_small": (tvm.mobilenet_v3_small(), 224),
        "mobilenet_v3_large": (tvm.mobilenet_v3_large(), 224),
        "efficientnet_b0": (tvm.efficientnet_b0(), 224),
        "shufflenet_v2": (tvm.shufflenet_v2_x1_0(), 224),
        "regnet_x": (tvm.regnet_x_400mf(), 224),
        "mnasnet": (tvm.mnasnet1_0(), 224),
        "densenet": (tvm.densenet121(), 224),
        "googlenet": (tvm.googlenet(aux_logits=False, init_weights=True), 224),
        "squeezenet": (tvm.squeezenet1_1(), 224),
        "convnext": (tvm.convnext_tiny(), 224),
        "tiny_yolo": (TinyYOLO(classes=80, width=32), 224),
        "tiny_unet": (TinyUNet(classes=4, width=32), 224),
    }


def warm_batch_norm(model, size, batches=4):
    """Running statistics from a few random batches (cumulative averages), so that BatchNorm is not the identity."""
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None
    model.train()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for _ in range(batches):
            model(torch.randn(8, 3, size, size, generator=generator) * 0.8 + 0.1)
    model.eval()


def export(model, size, path):
    """Fixed batch 1, BatchNorm kept, no metadata, weights inside the file; returns the proto."""
    import onnx
    dummy = torch.zeros(1, 3, size, size)
    with tempfile.TemporaryDirectory() as scratch:
        temporary = os.path.join(scratch, "model.onnx")
        torch.onnx.export(model, (dummy,), temporary, optimize=False, external_data=False)
        proto = onnx.load(temporary)
    onnx.checker.check_model(proto)
    if any(isinstance(m, nn.BatchNorm2d) for m in model.modules()):
        assert any(n.op_type == "BatchNormalization" for n in proto.graph.node), f"{path}: BatchNorm was folded away"
    onnx.save(proto, path + ".tmp")
    os.replace(path + ".tmp", path)
    return proto


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="the real architectures at 224×224 (benchmark)")
    parser.add_argument("-o", "--output", help="folder (default: models/edge for the small variants)")
    parser.add_argument("--models", nargs="+")
    args = parser.parse_args()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    folder = args.output or (None if args.full else os.path.join(root, "models", "edge"))
    if folder is None:
        parser.error("--full needs -o FOLDER (the 224×224 models are not committed)")
    os.makedirs(folder, exist_ok=True)
    models = full_models() if args.full else small_models()
    records_path = os.path.join(folder, "edge.json")
    records = json.load(open(records_path)) if os.path.exists(records_path) else {}
    for name in args.models or list(models):
        torch.manual_seed(0)
        model, size = (full_models() if args.full else small_models())[name]
        warm_batch_norm(model, size)
        path = os.path.join(folder, f"{name}.onnx")
        proto = export(model, size, path)
        generator = torch.Generator().manual_seed(2)
        probe = torch.randn(1, 3, size, size, generator=generator)
        with torch.no_grad():
            outputs = model(probe)
        outputs = outputs if isinstance(outputs, tuple) else (outputs,)
        records[name] = {
            "file": f"{name}.onnx",
            "input_shape": [1, 3, size, size],
            "sha256": hashlib.sha256(open(path, "rb").read()).hexdigest(),
            "parameters": sum(p.numel() for p in model.parameters()),
            "onnx_ops": sorted({n.op_type for n in proto.graph.node}),
            "probe": "torch.randn(1, 3, H, W, generator=torch.Generator().manual_seed(2))",
            "probe_input": f"{name}.input.npy",
            "probe_outputs": [f"{name}.output{i}.npy" for i in range(len(outputs))],
        }
        np.save(os.path.join(folder, records[name]["probe_input"]), probe.numpy().astype(np.float32))
        for file, output in zip(records[name]["probe_outputs"], outputs):
            np.save(os.path.join(folder, file), output.numpy().astype(np.float32))
        print(f"{name}: {records[name]['parameters']:,} parameters, {os.path.getsize(path):,} bytes, ops {records[name]['onnx_ops']}",
              flush=True)
    with open(records_path + ".tmp", "w") as file:
        json.dump(records, file, indent=1, sort_keys=True)
    os.replace(records_path + ".tmp", records_path)


if __name__ == "__main__":
    main()
