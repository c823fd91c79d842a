#!/usr/bin/env python3
"""Benchmark (not a test): zero-shot W8A8 of ImageNet-size teachers with the default budget — the wall time and
peak memory of `kiln quantize` (synthesis included), and how closely the student follows its teacher.

    swift build -c release --product kiln
    python3 bench/imagenet_zero_shot.py [--models resnet18 efficientnet_lite0] [--budget default] [--threads 2]

Teachers: the committed EfficientNet-Lite0 (ImageNet-pretrained) and torchvision's ResNet-18 exported the way the
README tells users to (legacy exporter, BatchNorm kept, fixed batch 1, no Kiln metadata; ImageNet normalization
stated with --preprocess imagenet). These machines have no pretrained ResNet-18 weights (nothing is downloaded),
so its weights are torchvision's initialisation with BatchNorm running statistics re-estimated on 64 smooth random
images: the work per image — what this benchmark times — is the pretrained network's; how close its student comes
says little about a trained one. Time and peak RSS are the quantize process's own (wait4), the machine's CPU and
tier are printed first. Agreement and logit cosine against the fp32 teacher are measured on 256 Fashion-MNIST test
images upscaled to 224×224 RGB (real photographs, not ImageNet; the only real images here).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import fashion_mnist  # noqa: E402

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def export_resnet18(path):
    """torchvision's ResNet-18, BatchNorm statistics re-estimated on smooth random images, exported as a user would."""
    import torch
    import torchvision
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the batches below
    model.train()
    with torch.no_grad():
        for _ in range(8):
            low = torch.rand(8, 3, 14, 14)  # smooth images: upsampled low-resolution noise, ImageNet-normalized
            x = torch.nn.functional.interpolate(low, size=224, mode="bilinear", align_corners=False)
            x = (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
            model(x)
    model.eval()
    torch.onnx.export(model, (torch.zeros(1, 3, 224, 224),), path, dynamo=False, opset_version=17,
                      training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=False,
                      input_names=["input"], output_names=["logits"])


def photographs(count, mean, std):
    """Fashion-MNIST test images as [count, 3, 224, 224] RGB, normalized by per-channel mean and std."""
    images, _ = fashion_mnist.load("t10k")
    x = images[:count].astype(np.float32) / 255.0
    x = np.repeat(np.repeat(x, 8, axis=1), 8, axis=2)
    x = np.repeat(x[:, None], 3, axis=1)
    return ((x - mean.reshape(1, 3, 1, 1)) / std.reshape(1, 3, 1, 1)).astype(np.float32)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["resnet18", "efficientnet_lite0"])
    parser.add_argument("--kiln", default=os.path.join(ROOT, ".build", "release", "kiln"))
    parser.add_argument("--budget", default="default")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--eval-images", type=int, default=256)
    args = parser.parse_args()

    info = subprocess.run([os.path.join(ROOT, "scripts", "machine-info.sh")], capture_output=True, text=True).stdout
    print(info.strip())
    print(f"budget {args.budget}, {args.threads} threads\n")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            if name == "resnet18":
                teacher = os.path.join(tmp, "resnet18.onnx")
                export_resnet18(teacher)
                domain = ["--preprocess", "imagenet"]
                mean, std = IMAGENET_MEAN, IMAGENET_STD
            elif name == "efficientnet_lite0":
                teacher = os.path.join(ROOT, "models", "efficientnet_lite0.onnx")
                domain = []  # its metadata states the normalization
                mean = np.full(3, 127.0 / 255.0, dtype=np.float32)
                std = np.full(3, 128.0 / 255.0, dtype=np.float32)
            else:
                raise SystemExit(f"unknown model {name}")
            student = os.path.join(tmp, f"{name}.kiln")
            command = [args.kiln, "quantize", teacher, "-o", student, "--bits", "w8a8", "--budget", args.budget,
                       "--threads", str(args.threads), "--json", *domain]
            start = time.perf_counter()
            process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            out = process.stdout.read()
            err = process.stderr.read()
            _, status, usage = os.wait4(process.pid, 0)
            wall = time.perf_counter() - start
            if status != 0:
                raise SystemExit(f"{' '.join(command)} failed:\n{err[-2000:]}")
            summary = json.loads(out)
            peak_mb = usage.ru_maxrss / 1024
            print(f"{name}: {wall:.0f} s wall ({summary['synthesisSeconds']:.0f} s synthesis), peak RSS {peak_mb:.0f} MB; "
                  f"calibration: {summary['calibration']}")
            sys.stdout.flush()
            inputs = os.path.join(tmp, f"{name}-photos.npy")
            np.save(inputs, photographs(args.eval_images, mean, std))
            logits = []
            for model in (teacher, student):
                out_path = os.path.join(tmp, f"{name}-{len(logits)}.npy")
                subprocess.run([args.kiln, "run", model, "--input", inputs, "-o", out_path, "--threads", str(args.threads)],
                               check=True, capture_output=True)
                logits.append(np.load(out_path).reshape(args.eval_images, -1))
            agreement = float(np.mean(logits[0].argmax(1) == logits[1].argmax(1)))
            cosine = np.sum(logits[0] * logits[1], 1) / (np.linalg.norm(logits[0], axis=1) * np.linalg.norm(logits[1], axis=1))
            print(f"  student against the fp32 teacher on {args.eval_images} photographs: top-1 agreement "
                  f"{agreement * 100:.1f}%, logit cosine mean {cosine.mean():.4f}, worst {cosine.min():.4f}")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
