"""Shared helpers of the benchmark scripts: onnxruntime sessions and latency timing."""
import time

import numpy as np
import onnxruntime as ort

ort.set_default_logger_severity(3)


def session(path, threads):
    """An onnxruntime CPU session with `threads` intra-op threads, sequential execution, all graph optimisations."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def median_latency_ms(path, shape, runs, threads):
    """Median milliseconds of one run on a fixed input of `shape`, after runs // 10 (at least 5) warm-up runs."""
    s = session(path, threads)
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
