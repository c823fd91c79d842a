#!/usr/bin/env python3
"""Measurement (not a test): W8A8 students calibrated on genie, zeroq, gaussian and real images with the same
count, for each teacher: top-1, agreement with the teacher and mean logit cosine, plus the synthesis loss and
speed.

    swift build -c release --product kiln
    python3 bench/zero_shot_table.py [--teachers resnet20 mobilenetv2 efficientnet_lite0] [--count 128]

Fashion-MNIST teachers are evaluated on the 10k test images (`kiln eval --dataset fashion-mnist`). For
EfficientNet-Lite0 there are no ImageNet images on these machines, so it is evaluated on real photographs that
are available: Fashion-MNIST test images upscaled to 224×224 RGB (agreement and cosine with the teacher only; its
"real" calibration images are Fashion-MNIST training images prepared the same way), with a smaller synthesis
budget (--efficientnet-count, --efficientnet-iterations). Every student uses Kiln's default ranges: percentile
for real data, minmax for synthesized data.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import fashion_mnist  # noqa: E402


def kiln(binary, *args):
    out = subprocess.run([binary, *args, "--json"], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def as_imagenet(images_u8):
    """Grayscale 28×28 uint8 → float32 [N, 3, 224, 224], normalized as EfficientNet-Lite expects."""
    x = images_u8.astype(np.float32) / 255.0
    x = np.repeat(np.repeat(x, 8, axis=1), 8, axis=2)  # nearest-neighbour ×8
    x = (x - 127.0 / 255.0) / (128.0 / 255.0)
    return np.repeat(x[:, None], 3, axis=1).astype(np.float32)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teachers", nargs="+", default=["resnet20", "mobilenetv2", "efficientnet_lite0"])
    parser.add_argument("--count", type=int, default=128)
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--efficientnet-count", type=int, default=16)
    parser.add_argument("--efficientnet-iterations", type=int, default=100)
    parser.add_argument("--efficientnet-eval", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--kiln", default=os.path.join(ROOT, ".build", "release", "kiln"))
    args = parser.parse_args()
    threads = ["--threads", str(args.threads)]
    print(f"{'teacher':<18} {'calibration':<9} {'count':>5} {'top-1':>7} {'agreement':>9} {'cosine':>8} "
          f"{'BN loss':>9} {'s/100 it':>8}")
    with tempfile.TemporaryDirectory() as folder:
        for name in args.teachers:
            teacher = os.path.join(ROOT, "models", name + ".onnx")
            imagenet = name == "efficientnet_lite0"
            count = args.efficientnet_count if imagenet else args.count
            iterations = args.efficientnet_iterations if imagenet else args.iterations
            batch = min(count, 8 if imagenet else 64)
            if imagenet:
                test_images, _ = fashion_mnist.load("t10k")
                inputs = os.path.join(folder, "imagenet-proxy.npy")
                labels = os.path.join(folder, "labels.npy")
                np.save(inputs, as_imagenet(test_images[:args.efficientnet_eval]))
                np.save(labels, np.zeros(args.efficientnet_eval, dtype=np.int64))
                evaluation = ["--inputs", inputs, "--labels", labels]
                train_images, _ = fashion_mnist.load("train")
                real = as_imagenet(train_images[np.random.default_rng(0).choice(60000, count, replace=False)])
            else:
                evaluation = ["--dataset", "fashion-mnist"]
                real = np.load(os.path.join(ROOT, "calibration", "fashion-mnist-real-512.npy"))[:count]
            real_path = os.path.join(folder, f"{name}-real.npy")
            np.save(real_path, real)
            for method in ["genie", "zeroq", "gaussian", "real"]:
                data, loss, speed = real_path, None, None
                if method != "real":
                    data = os.path.join(folder, f"{name}-{method}.npy")
                    summary = kiln(args.kiln, "synthesize", teacher, "-o", data, "--method", method, "--count",
                                   str(count), "--iterations", str(iterations), "--batch", str(batch), *threads)
                    if summary["finalLoss"]:
                        loss = float(np.mean(summary["finalLoss"]))
                        speed = summary.get("secondsPer100Iterations")
                student = os.path.join(folder, f"{name}-{method}.kiln")
                kiln(args.kiln, "quantize", teacher, "-o", student, "--calibration", data,
                     *(["--range", "minmax"] if method != "real" else []), *threads)
                result = kiln(args.kiln, "eval", student, *evaluation, "--reference", teacher, *threads)
                top1 = "-" if imagenet else f"{result['top1'] * 100:.2f}"
                print(f"{name:<18} {method:<9} {count:>5} {top1:>7} {result['agreement'] * 100:>8.2f}% "
                      f"{result['meanCosine']:>8.5f} {('%.4g' % loss) if loss is not None else '-':>9} "
                      f"{('%.1f' % speed) if speed else '-':>8}", flush=True)


if __name__ == "__main__":
    main()
