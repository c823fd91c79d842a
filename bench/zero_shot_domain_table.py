#!/usr/bin/env python3
"""Measurement (not a test): zero-shot students of every Fashion-MNIST teacher (the committed ones and the zoo of
models/zoo, exported as users export) with the input domain given and not given.

    swift build -c release --product kiln
    python3 bench/zero_shot_domain_table.py [--teachers resnet20 mobilenetv2 vgg wide conv5] [--bits w8a8 w4a4 w2a4]
    python3 bench/zero_shot_domain_table.py --policies      # W8A8 input-range policies for an unknown domain

For each teacher and each of "given" (--input-mean/--input-std of its true normalization) and "not given" (a copy
of the teacher without kiln.* metadata, no flags), Kiln synthesizes the default calibration set (128 Genie images,
200 iterations per batch) and quantizes it at each bit width (W8A8: the plain quantizer with minmax ranges, as
`kiln quantize` does for synthetic data; lower widths: block reconstruction, 500 iterations per block). Every
student is evaluated on the 10k test images normalized the true way: top-1, agreement with the teacher, and the
seconds of synthesis and of quantization.

--policies compares input-quantizer ranges for an unknown domain at W8A8 on the "not given" synthetic sets: the
synthetic images' range, and the estimated mean ± k std (from `kiln inspect`, the first BatchNorm) for several k.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import onnx

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import fashion_mnist  # noqa: E402


def teachers():
    """name → (path, true mean, true std) for the committed Fashion-MNIST teachers and the zoo."""
    result = {}
    records = json.load(open(os.path.join(ROOT, "models", "teachers.json")))
    for name, record in sorted(records.items()):
        if record.get("dataset") == "fashion-mnist":
            result[name] = (os.path.join(ROOT, "models", record["file"]), record["input_mean"], record["input_std"])
    zoo = os.path.join(ROOT, "models", "zoo", "zoo.json")
    if os.path.exists(zoo):
        for name, record in sorted(json.load(open(zoo)).items()):
            result[name] = (os.path.join(ROOT, "models", "zoo", record["file"]), record["input_mean"], record["input_std"])
    return result


def without_metadata(path, folder):
    """A copy of the teacher without kiln.* metadata (external data files stay where they are)."""
    proto = onnx.load(path, load_external_data=False)
    kept = [p for p in proto.metadata_props if not p.key.startswith("kiln.")]
    if len(kept) == len(proto.metadata_props):
        return path
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    copy = os.path.join(folder, os.path.basename(path))
    onnx.save(proto, copy)
    return copy


def run(binary, *args):
    start = time.time()
    out = subprocess.run([binary, *args], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {out.stderr}")
    return out, time.time() - start


def evaluate(binary, student, teacher, mean, std):
    out, _ = run(binary, "eval", student, "--dataset", "fashion-mnist", "--input-mean", str(mean), "--input-std", str(std),
                 "--reference", teacher, "--json")
    result = json.loads(out.stdout)
    return result["top1"] * 100, result["agreement"] * 100, result["referenceTop1"] * 100


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teachers", nargs="+")
    parser.add_argument("--bits", nargs="+", default=["w8a8", "w4a4", "w2a4"])
    parser.add_argument("--policies", action="store_true")
    parser.add_argument("--spreads", nargs="+", type=float, default=[2, 2.5, 3, 4])
    parser.add_argument("--keep", metavar="FOLDER",
                        help="keep synthetic sets, students and measured rows (FOLDER/rows.json) in FOLDER and reuse them")
    parser.add_argument("--kiln", default=os.path.join(ROOT, ".build", "release", "kiln"))
    args = parser.parse_args()
    known = teachers()
    names = args.teachers or list(known)
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.keep or scratch
        os.makedirs(folder, exist_ok=True)
        rows_path = os.path.join(folder, "rows.json")
        rows = json.load(open(rows_path)) if os.path.exists(rows_path) else {}
        if args.policies:
            print(f"{'teacher':<12} {'input range policy':<34} {'range':<18} {'top-1':>7} {'drop':>6} {'agreement':>9}")
        else:
            print(f"{'teacher':<12} {'domain':<9} {'bits':<5} {'top-1':>7} {'drop':>6} {'agreement':>9} "
                  f"{'synth s':>8} {'quant s':>8}")
        for name in names:
            path, mean, std = known[name]
            plain = without_metadata(path, folder)
            flags = {"given": ["--input-mean", str(mean), "--input-std", str(std)], "not given": []}
            for domain in (["not given"] if args.policies else ["given", "not given"]):
                teacher = path if domain == "given" else plain
                synthetic = os.path.join(folder, f"{name}-{domain.replace(' ', '-')}-genie.npy")
                synthesis_key = f"{name}/{domain}/synthesis seconds"
                if all(f"{name}/{domain}/{bits}" in rows for bits in args.bits) and not args.policies:
                    pass
                elif not os.path.exists(synthetic):
                    _, rows[synthesis_key] = run(args.kiln, "synthesize", teacher, "-o", synthetic, *flags[domain])
                synthesis_seconds = rows.get(synthesis_key, float("nan"))
                if args.policies:
                    images = np.load(synthetic)
                    inspect = json.loads(run(args.kiln, "inspect", teacher, "--json")[0].stdout)
                    mu, sigma = inspect.get("estimatedInputMean"), inspect.get("estimatedInputStd")
                    policies = [("synthetic images' range", float(min(images.min(), 0)), float(max(images.max(), 0)))]
                    if mu is not None:
                        for k in args.spreads:
                            policies.append((f"estimated mean ± {k:g} std", min(mu) - k * sigma, max(mu) + k * sigma))
                    true_range = ((0 - mean) / std, (1 - mean) / std)
                    policies.append(("the true domain (given)", *true_range))
                    for label, low, high in policies:
                        student = os.path.join(folder, f"{name}-policy.kiln")
                        run(args.kiln, "quantize", teacher, "-o", student, "--calibration", synthetic, "--range", "minmax",
                            f"--input-range={low},{high}")
                        top1, agreement, reference = evaluate(args.kiln, student, teacher, mean, std)
                        print(f"{name:<12} {label:<34} {f'[{low:.2f}, {high:.2f}]':<18} {top1:6.2f}% {reference - top1:6.2f} "
                              f"{agreement:8.2f}%", flush=True)
                    continue
                for bits in args.bits:
                    key = f"{name}/{domain}/{bits}"
                    if key not in rows:
                        student = os.path.join(folder, f"{name}-{domain.replace(' ', '-')}-{bits}.kiln")
                        quantize = ["quantize", teacher, "-o", student, "--calibration", synthetic, "--bits", bits,
                                    *flags[domain]]
                        if bits == "w8a8":
                            quantize += ["--range", "minmax"]
                        _, seconds = run(args.kiln, *quantize)
                        rows[key] = [*evaluate(args.kiln, student, teacher, mean, std), seconds]
                        with open(rows_path, "w") as file:
                            json.dump(rows, file, indent=1)
                    top1, agreement, reference, seconds = rows[key]
                    print(f"{name:<12} {domain:<9} {bits:<5} {top1:6.2f}% {reference - top1:6.2f} {agreement:8.2f}% "
                          f"{synthesis_seconds:8.1f} {seconds:8.1f}", flush=True)


if __name__ == "__main__":
    main()
