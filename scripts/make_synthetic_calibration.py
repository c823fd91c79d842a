#!/usr/bin/env python3
"""Synthesizes the committed zero-shot calibration sets with `kiln synthesize` (Genie) and records how each was
made in calibration/manifest.json (teacher file and SHA-256, method, seed, iterations, count, losses).

    swift build -c release --product kiln
    python3 scripts/make_synthetic_calibration.py [--teacher resnet20 ...] [--count 128] [--iterations 200]

Teachers are the Fashion-MNIST teachers of models/teachers.json and the zoo of models/zoo/zoo.json; the zoo's are
synthesized as a user would, without stating their input domain (Kiln estimates it from the first BatchNorm).
"""
import argparse
import hashlib
import json
import os
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", action="append", help="teacher name in models/ (default: every Fashion-MNIST teacher)")
    parser.add_argument("--method", default="genie")
    parser.add_argument("--count", type=int, default=128)
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--kiln", default=os.path.join(ROOT, ".build", "release", "kiln"))
    args = parser.parse_args()
    teachers = {name: os.path.join("models", t["file"])
                for name, t in json.load(open(os.path.join(ROOT, "models", "teachers.json"))).items()
                if t.get("dataset") == "fashion-mnist"}
    zoo = os.path.join(ROOT, "models", "zoo", "zoo.json")
    if os.path.exists(zoo):
        teachers.update({name: os.path.join("models", "zoo", t["file"]) for name, t in json.load(open(zoo)).items()})
    names = args.teacher or sorted(teachers)
    manifest_path = os.path.join(ROOT, "calibration", "manifest.json")
    manifest = json.load(open(manifest_path)) if os.path.exists(manifest_path) else {}
    for name in names:
        model = teachers[name]
        output = f"{args.method}-{name}-{args.count}.npy"
        result = subprocess.run([args.kiln, "synthesize", os.path.join(ROOT, model), "-o",
                                 os.path.join(ROOT, "calibration", output), "--method", args.method,
                                 "--count", str(args.count), "--iterations", str(args.iterations),
                                 "--batch", str(args.batch), "--seed", str(args.seed), "--threads", str(args.threads),
                                 "--json"], check=True, capture_output=True, text=True)
        summary = json.loads(result.stdout)
        manifest[output] = {
            "kind": "synthetic",
            "method": args.method,
            "teacher": model,
            "teacher_sha256": sha256(os.path.join(ROOT, model)),
            "count": args.count,
            "batch": args.batch,
            "iterations": args.iterations,
            "seed": args.seed,
            "threads": args.threads,
            "bn_loss_initial": summary["initialLoss"],
            "bn_loss_final": summary["finalLoss"],
            "seconds_per_100_iterations": summary.get("secondsPer100Iterations"),
            "sha256": sha256(os.path.join(ROOT, "calibration", output)),
            "command": f"kiln synthesize {model} -o calibration/{output} --method {args.method} --count {args.count} "
                       f"--iterations {args.iterations} --batch {args.batch} --seed {args.seed} --threads {args.threads}",
        }
        print(f"{output}: loss {summary['initialLoss']} -> {summary['finalLoss']}")
    with open(manifest_path + ".tmp", "w") as f:
        json.dump(manifest, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(manifest_path + ".tmp", manifest_path)


if __name__ == "__main__":
    main()
