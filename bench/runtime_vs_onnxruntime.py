#!/usr/bin/env python3
"""Peer benchmark (not a test): int8 inference at batch 1, KilnRuntime against onnxruntime and OpenVINO, same models,
same run.

    swift build -c release --product kiln
    python3 bench/runtime_vs_onnxruntime.py [--runs 200] [--threads 1 2] [--models resnet18 resnet50 mobilenet_v2 resnet20 mobilenetv2]
                                            [--isa avx2] [--bits w8a8 w4a8 w4a4] [--no-openvino]

Models: torchvision ResNet-18, ResNet-50 and MobileNetV2 at 224×224 (random initialisation, seed 0: speed does
not depend on the weights) and the committed Fashion-MNIST teachers. Each fp32 model is quantized twice: by
`kiln quantize` (per-channel int8 weights, uint8 activations) and by onnxruntime's `quantize_static` (QDQ,
per-channel, QUInt8 activations, QInt8 weights, after `quant_pre_process`), both calibrated on the same images (32 N(0, 1) images for the
torchvision models, the committed real calibration set for the teachers). KilnRuntime is timed by `kiln bench`
(median of --runs after warm-up, allocation-free context), the peers by the same loop in Python; they alternate
per model so machine noise hits all. onnxruntime runs in its default int8 mode (what its users get; on x86 without
VNNI it multiplies with vpmaddubsw, which saturates 16-bit pair sums and is inexact) and in its exact mode
(session.x64quantprecision=1), which computes what Kiln computes. OpenVINO (pip install openvino) runs
onnxruntime's QDQ file (latency hint, one stream). Prints the CPU and Kiln's kernel tier, the medians, Kiln / the
faster of onnxruntime (default) and OpenVINO ("kiln/best"; with --isa: Kiln / OpenVINO limited to the same
instruction set), Kiln / onnxruntime exact, and Kiln's GMAC/s.

--isa forces a lower Kiln tier (KILN_ISA) and sets ONEDNN_MAX_CPU_ISA for OpenVINO to the same instruction set
(OpenVINO is timed both with and without it, which shows whether it honours the variable); onnxruntime has no such
switch and always runs its best kernels. --bits adds Kiln students of the same teacher at other bit widths (no
reconstruction: speed does not depend on it) and prints each one's speed against W8A8's.
Needs torch, torchvision, onnx, onnxruntime and numpy from PyPI (openvino optional).
"""
import argparse
import json
import os
import subprocess
import tempfile

import numpy as np
import onnxruntime as ort
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from peers import median_latency_ms, openvino_latency_ms, openvino_version

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Reader(CalibrationDataReader):
    def __init__(self, name, images):
        self.items = iter([{name: images[i:i + 1]} for i in range(len(images))])

    def get_next(self):
        return next(self.items, None)


def export_torchvision(name, path):
    import torch
    import torchvision
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(weights=None).eval()
    torch.onnx.export(model, (torch.zeros(1, 3, 224, 224),), path, dynamo=False, opset_version=13,
                      input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}})


# ONEDNN_MAX_CPU_ISA values for Kiln's tiers.
ONEDNN_ISA = {"avx2": "AVX2", "avxvnni": "AVX2_VNNI", "avx512bw": "AVX512_CORE", "avx512vnni": "AVX512_CORE_VNNI"}


def kiln_student(kiln, fp32, calibration, student, bits="w8a8"):
    """Quantizes `fp32` by Kiln at `bits` (no block reconstruction) to `student`."""
    subprocess.run([kiln, "quantize", fp32, "-o", student, "--calibration", calibration, "--range", "minmax",
                    "--bits", bits, "--distill", "none", "--json"], check=True, capture_output=True)


def kiln_bench(kiln, student, runs, threads):
    """`kiln bench --json` of a student."""
    return json.loads(subprocess.run([kiln, "bench", student, "--runs", str(runs), "--threads", str(threads), "--json"],
                                     check=True, capture_output=True, text=True).stdout)


def prepare(kiln, fp32, images, calibration, student, qdq, folder, name):
    """Quantizes `fp32` by Kiln (to `student`) and by onnxruntime's quantize_static (to `qdq`)."""
    kiln_student(kiln, fp32, calibration, student)
    prepared = os.path.join(folder, name + ".pre.onnx")
    # onnxruntime's recommended preparation (shape inference, graph optimisation): without it, its CPU
    # provider does not fuse the QDQ pattern into QLinearConv and runs 3-4x slower.
    quant_pre_process(fp32, prepared)
    input_name = ort.InferenceSession(fp32, providers=["CPUExecutionProvider"]).get_inputs()[0].name
    quantize_static(prepared, qdq, Reader(input_name, images), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["resnet18", "resnet50", "mobilenet_v2", "resnet20", "mobilenetv2"])
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--kiln", default=os.path.join(ROOT, ".build", "release", "kiln"))
    parser.add_argument("--keep", metavar="FOLDER",
                        help="keep the models in FOLDER and reuse the ones already there (for profiling afterwards)")
    parser.add_argument("--isa", choices=sorted(ONEDNN_ISA), help="force Kiln's kernel tier (KILN_ISA) and OpenVINO's "
                        "(ONEDNN_MAX_CPU_ISA), e.g. avx2 on an AVX-512 machine")
    parser.add_argument("--bits", nargs="+", default=["w8a8"], help="Kiln students at these bit widths too (first: the base)")
    parser.add_argument("--no-openvino", action="store_true", help="leave OpenVINO out even where it is installed")
    args = parser.parse_args()
    if args.isa:
        os.environ["KILN_ISA"] = args.isa
    with_openvino = not args.no_openvino and openvino_version() is not None
    forced = ONEDNN_ISA.get(args.isa) if args.isa else None
    print(f"batch 1, median of {args.runs} runs; onnxruntime {ort.__version__} (QDQ, per-channel, QUInt8 activations), "
          "default and exact (session.x64quantprecision=1) modes; "
          + (f"OpenVINO {openvino_version()} on the same QDQ file" if with_openvino else "OpenVINO not run"))
    header = (f"{'model':<14} {'threads':>7} {'kiln ms':>9} {'ort ms':>9} {'exact ms':>9}"
              + (f" {'ov ms':>9}" if with_openvino else "")
              + (f" {'ov ' + forced + ' ms':>16}" if with_openvino and forced else "")
              + f" {'kiln/best':>9} {'kiln/exact':>10} {'kiln GMAC/s':>12}")
    lowbit = []
    printed_machine = False
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.keep or scratch
        os.makedirs(folder, exist_ok=True)
        for name in args.models:
            fp32 = os.path.join(ROOT, "models", name + ".onnx")
            if os.path.exists(fp32):
                calibration = os.path.join(ROOT, "calibration", "fashion-mnist-real-512.npy")
                images = np.load(calibration)[:32]
                calibration = os.path.join(folder, name + "-calibration.npy")
                np.save(calibration, images)
            else:
                fp32 = os.path.join(folder, name + ".onnx")
                if not os.path.exists(fp32):
                    export_torchvision(name, fp32)
                images = np.random.default_rng(0).standard_normal((32, 3, 224, 224)).astype(np.float32)
                calibration = os.path.join(folder, name + "-calibration.npy")
                np.save(calibration, images)
            student = os.path.join(folder, name + ".kiln")
            qdq = os.path.join(folder, name + ".ort.qdq.onnx")
            if not (args.keep and os.path.exists(student) and os.path.exists(qdq)):
                prepare(args.kiln, fp32, images, calibration, student, qdq, folder, name)
            others = {}
            for bits in args.bits:
                if bits == "w8a8":
                    others[bits] = student
                    continue
                others[bits] = os.path.join(folder, f"{name}-{bits}.kiln")
                if not (args.keep and os.path.exists(others[bits])):
                    kiln_student(args.kiln, fp32, calibration, others[bits], bits)
            shape = [1] + list(images.shape[1:])
            for threads in args.threads:
                bench = kiln_bench(args.kiln, student, args.runs, threads)
                if not printed_machine:
                    print(f"CPU {bench['cpu']}; Kiln kernels {bench['kernels']}")
                    print(header)
                    printed_machine = True
                ort_ms = median_latency_ms(qdq, shape, args.runs, threads)
                exact_ms = median_latency_ms(qdq, shape, args.runs, threads, exact=True)
                peers_ms = [ort_ms]
                row = f"{name:<14} {threads:>7} {bench['medianMs']:9.3f} {ort_ms:9.3f} {exact_ms:9.3f}"
                if with_openvino:
                    ov_ms = openvino_latency_ms(qdq, shape, args.runs, threads)
                    row += f" {ov_ms:9.3f}"
                    if forced:
                        # Like for like: the peer limited to the same instruction set (onnxruntime cannot be).
                        ov_forced_ms = openvino_latency_ms(qdq, shape, args.runs, threads, max_isa=forced)
                        row += f" {ov_forced_ms:16.3f}"
                        peers_ms = [ov_forced_ms]
                    else:
                        peers_ms.append(ov_ms)
                row += (f" {bench['medianMs'] / min(peers_ms):9.2f} {bench['medianMs'] / exact_ms:10.2f}"
                        f" {bench['gmacPerSecond']:12.1f}")
                print(row, flush=True)
                if len(args.bits) > 1:
                    times = {bits: (bench if path == student else kiln_bench(args.kiln, path, args.runs, threads))["medianMs"]
                             for bits, path in others.items()}
                    lowbit.append((name, threads, times))
    if lowbit:
        base = args.bits[0]
        print(f"\nKiln students of the same teacher (no reconstruction), median ms and speed-up over {base}:")
        print(f"{'model':<14} {'threads':>7} " + " ".join(f"{bits + ' ms':>10}" for bits in args.bits)
              + " " + " ".join(f"{'×' + bits:>8}" for bits in args.bits[1:]))
        for name, threads, times in lowbit:
            print(f"{name:<14} {threads:>7} " + " ".join(f"{times[bits]:10.3f}" for bits in args.bits)
                  + " " + " ".join(f"{times[base] / times[bits]:8.2f}" for bits in args.bits[1:]))


if __name__ == "__main__":
    main()
