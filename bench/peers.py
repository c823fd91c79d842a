"""Shared helpers of the benchmark scripts: onnxruntime sessions and latency timing."""
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


def median_latency_ms(path, shape, runs, threads, exact=False):
    """Median milliseconds of one run on a fixed input of `shape`, after runs // 10 (at least 5) warm-up runs."""
    s = session(path, threads, exact)
    name = s.get_inputs()[0].name
    x = ((np.arange(np.prod(shape)) % 255) / 127 - 1).astype(np.float32).reshape(shape)
    for _ in range(max(5, runs // 10)):
        s.run(None, {name: x})
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        s.run(None, {name: x})
        times.append((time.perf_counter() - start) * 1e3)
    return float(np.median(times))

