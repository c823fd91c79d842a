"""Shared helpers of the benchmark scripts: onnxruntime and OpenVINO sessions and latency timing.

    python3 bench/peers.py openvino MODEL.onnx --shape 1 3 224 224 --runs 200 --threads 1

times OpenVINO in a process of its own, so that ONEDNN_MAX_CPU_ISA (read when its CPU plugin loads) can differ
between calls; it prints the median milliseconds.
"""
import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np
import onnxruntime as ort

ort.set_default_logger_severity(3)


def session(path, threads, exact=False):
    """An onnxruntime CPU session with `threads` intra-op threads, sequential execution, all graph optimisations.

    exact: onnxruntime's exact int8 mode (session.x64quantprecision=1). Its default mode, on x86 CPUs without VNNI,
    multiplies with vpmaddubsw, which saturates 16-bit pair sums: faster, but its results depend on the CPU.
    """
    options = ort.SessionOptions()
    if exact:
        options.add_session_config_entry("session.x64quantprecision", "1")
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def fixed_input(shape):
    """The input every peer is timed on."""
    return ((np.arange(np.prod(shape)) % 255) / 127 - 1).astype(np.float32).reshape(shape)


def median_ms(run, runs):
    """Median milliseconds of `run()`, after runs // 10 (at least 5) warm-up calls."""
    for _ in range(max(5, runs // 10)):
        run()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1e3)
    return float(np.median(times))


def median_latency_ms(path, shape, runs, threads, exact=False):
    """onnxruntime: median milliseconds of one run on a fixed input of `shape`."""
    s = session(path, threads, exact)
    name = s.get_inputs()[0].name
    x = fixed_input(shape)
    return median_ms(lambda: s.run(None, {name: x}), runs)


def openvino_version():
    """OpenVINO's version, or None where it is not installed."""
    try:
        import openvino
        return openvino.__version__
    except ImportError:
        return None


def openvino_latency_ms(path, shape, runs, threads, max_isa=None):
    """OpenVINO (CPU plugin, latency hint, one stream, `threads` threads) on the ONNX file at `path`, in a child
    process; `max_isa` sets ONEDNN_MAX_CPU_ISA there (e.g. AVX2). Returns the median milliseconds."""
    env = dict(os.environ)
    if max_isa:
        env["ONEDNN_MAX_CPU_ISA"] = max_isa
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "openvino", path, "--shape", *map(str, shape),
                          "--runs", str(runs), "--threads", str(threads)], env=env, check=True, capture_output=True,
                         text=True).stdout
    return json.loads(out)["ms"]


def _openvino_main(args):
    import openvino as ov
    core = ov.Core()
    compiled = core.compile_model(core.read_model(args.model), "CPU", {
        "INFERENCE_NUM_THREADS": args.threads, "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY"})
    request = compiled.create_infer_request()
    x = fixed_input(args.shape)
    print(json.dumps({"ms": median_ms(lambda: request.infer({0: x}), args.runs)}))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("peer", choices=["openvino"])
    parser.add_argument("model")
    parser.add_argument("--shape", nargs="+", type=int, required=True)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    _openvino_main(parser.parse_args())

