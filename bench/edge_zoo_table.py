#!/usr/bin/env python3
"""Measurement (not a test): the edge zoo (scripts/make_edge_zoo.py) through Kiln, one row per model.

    swift build -c release --product kiln
    python3 bench/edge_zoo_table.py                                   # the suite's small variants (models/edge)
    python3 scripts/make_edge_zoo.py --full -o /tmp/edge224 && python3 bench/edge_zoo_table.py --folder /tmp/edge224

Columns: imports (y/n, else the importer's error); fp32 max relative error of Kiln's interpreter against onnxruntime
on the model's probe input; nodes that cannot run in a student at all (count); nodes that run as fp32 islands
(count; no int8 kernel); the W8A8 student's output cosine against the
fp32 teacher on 16 fixed inputs, and the same for onnxruntime's own `quantize_static` W8A8 model on the same
calibration inputs (peer cos: what an established quantizer reaches on the model); onnxruntime (exact mode) on
Kiln's QDQ export against the student (cosine); and
batch-1, 1-thread latency of KilnRuntime and of onnxruntime on its own `quantize_static` QDQ model (default mode),
with their ratio, in the same run.

Inputs: the models have random weights, so there are no real images; calibration (64) and evaluation (16) inputs
are random pixels in [0, 1] normalized with ImageNet's mean and std, the domain the student is told
(`--preprocess imagenet`), from fixed seeds.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import onnxruntime as ort
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from peers import median_latency_ms, session  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32).reshape(1, 3, 1, 1)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32).reshape(1, 3, 1, 1)


class Reader(CalibrationDataReader):
    def __init__(self, name, images):
        self.items = iter([{name: images[i:i + 1]} for i in range(len(images))])

    def get_next(self):
        return next(self.items, None)


def images(count, size, seed):
    pixels = np.random.default_rng(seed).random((count, 3, size, size), dtype=np.float32)
    return ((pixels - MEAN) / STD).astype(np.float32)


def cosine(a, b):
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-30))


def kiln(binary, *args):
    return subprocess.run([binary, *args], capture_output=True, text=True)


def run_kiln(binary, model, x, folder, name, outputs):
    """Every output of `model` on `x` through `kiln run`, flattened per sample and joined: [N, total]."""
    source, target = os.path.join(folder, f"{name}.in.npy"), os.path.join(folder, f"{name}.out.npy")
    np.save(source, x)
    out = kiln(binary, "run", model, "--input", source, "-o", target, "--threads", "2")
    if out.returncode != 0:
        raise RuntimeError(out.stderr.strip())
    files = [target] if outputs == 1 else [os.path.join(folder, f"{name}.out.{i}.npy") for i in range(outputs)]
    return joined([np.load(file) for file in files])


def joined(outputs):
    """Outputs of one batch, flattened per sample and concatenated: [N, total]."""
    return np.concatenate([o.reshape(o.shape[0], -1) for o in outputs], axis=1)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", default=os.path.join(ROOT, "models", "edge"))
    parser.add_argument("--models", nargs="+")
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--kiln", default=os.path.join(ROOT, ".build", "release", "kiln"))
    args = parser.parse_args()
    records = json.load(open(os.path.join(args.folder, "edge.json")))
    print(f"{'model':<20} {'imports':<8} {'fp32 err':>9} {'unlowered':>9} {'islands':>7} {'W8A8 cos':>9} {'peer cos':>9} {'QDQ cos':>8} "
          f"{'kiln ms':>8} {'ort ms':>8} {'ratio':>6}")
    printed_machine = False
    with tempfile.TemporaryDirectory() as folder:
        for name in args.models or sorted(records):
            record = records[name]
            path = os.path.join(args.folder, record["file"])
            size = record["input_shape"][2]
            row = {"imports": "y", "err": "", "unlowered": "", "islands": "", "cos": "", "peer_cos": "", "ort": "", "kiln_ms": "", "ort_ms": "", "ratio": ""}
            inspect = kiln(args.kiln, "inspect", path, "--json")
            if inspect.returncode != 0:
                row["imports"] = "n"
                print(f"{name:<20} n        {inspect.stderr.strip()[:150]}", flush=True)
                continue
            report = json.loads(inspect.stdout)
            unlowered = report.get("unloweredNodes") or []
            row["unlowered"] = str(len(unlowered))
            row["islands"] = str(len(report.get("islandNodes") or []))
            probe = np.load(os.path.join(args.folder, record["probe_input"]))
            reference = session(path, 2)
            input_name = reference.get_inputs()[0].name
            count = len(record["probe_outputs"])
            expected = joined(reference.run(None, {input_name: probe}))
            try:
                got = run_kiln(args.kiln, path, probe, folder, name, count)
                row["err"] = f"{np.abs(got - expected).max() / (np.abs(expected).max() + 1e-30):.1e}"
            except RuntimeError as error:
                row["err"] = "fails"
                print(f"  {name}: kiln run: {error}", file=sys.stderr)
            if not unlowered:
                calibration = images(64, size, 1)
                evaluation = images(16, size, 2)
                calibration_path = os.path.join(folder, f"{name}.calibration.npy")
                np.save(calibration_path, calibration)
                student, qdq = os.path.join(folder, f"{name}.kiln"), os.path.join(folder, f"{name}.qdq.onnx")
                made = kiln(args.kiln, "quantize", path, "-o", student, "--calibration", calibration_path,
                            "--preprocess", "imagenet", "--onnx-out", qdq, "--json")
                if made.returncode != 0:
                    print(f"{name:<20} y        {row['err']:>9} {row['unlowered']:>9} quantize fails: {made.stderr.strip()[:150]}", flush=True)
                    continue
                # The student and the teacher run batch 1 (the export's fixed batch); one input at a time.
                teacher_outputs = np.concatenate([joined(reference.run(None, {input_name: evaluation[i:i + 1]})) for i in range(16)])
                student_outputs = np.concatenate([run_kiln(args.kiln, student, evaluation[i:i + 1], folder, name, count)
                                                  for i in range(16)])
                row["cos"] = f"{cosine(student_outputs, teacher_outputs):.4f}"
                exported = session(qdq, 2, exact=True)
                qdq_outputs = np.concatenate([joined(exported.run(None, {exported.get_inputs()[0].name: evaluation[i:i + 1]}))
                                              for i in range(16)])
                row["ort"] = f"{cosine(qdq_outputs, student_outputs):.4f}"
                prepared, peer = os.path.join(folder, f"{name}.pre.onnx"), os.path.join(folder, f"{name}.ort.qdq.onnx")
                try:
                    quant_pre_process(path, prepared)
                except Exception:  # its symbolic shape inference fails on some of PyTorch's Constant nodes
                    quant_pre_process(path, prepared, skip_symbolic_shape=True)
                quantize_static(prepared, peer, Reader(input_name, calibration), quant_format=QuantFormat.QDQ,
                                per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
                peer_session = session(peer, 2)  # its exact mode fails to load some of its own QDQ models
                peer_outputs = np.concatenate([joined(peer_session.run(None, {peer_session.get_inputs()[0].name: evaluation[i:i + 1]}))
                                               for i in range(16)])
                row["peer_cos"] = f"{cosine(peer_outputs, teacher_outputs):.4f}"
                bench = json.loads(kiln(args.kiln, "bench", student, "--runs", str(args.runs), "--threads", "1", "--json").stdout)
                if not printed_machine:
                    print(f"# CPU {bench['cpu']}; Kiln kernels {bench['kernels']}; onnxruntime {ort.__version__}", flush=True)
                    printed_machine = True
                ort_ms = median_latency_ms(peer, [1, 3, size, size], args.runs, 1)
                row["kiln_ms"], row["ort_ms"] = f"{bench['medianMs']:.3f}", f"{ort_ms:.3f}"
                row["ratio"] = f"{bench['medianMs'] / ort_ms:.2f}"
            print(f"{name:<20} {row['imports']:<8} {row['err']:>9} {row['unlowered']:>9} {row['islands']:>7} {row['cos']:>9} {row['peer_cos']:>9} {row['ort']:>8} "
                  f"{row['kiln_ms']:>8} {row['ort_ms']:>8} {row['ratio']:>6}", flush=True)


if __name__ == "__main__":
    main()
