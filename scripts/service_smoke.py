#!/usr/bin/env python3
"""Smoke test of Examples/KilnService on loopback, run by the test command so that the example cannot rot.

    scripts/service_smoke.py SERVICE_BINARY [--requests 300]

Serves the committed ResNet-20 student on a free port, sends REQUESTS predictions from 8 threads (JSON and raw
float32 bodies of one Fashion-MNIST test image: every answer must be 200 and the same logits), one malformed body
(must be a 4xx with a JSON message, the service still up), reads /metrics, then sends SIGTERM: the service must exit
with status 0 within 10 s. Exits non-zero with the reason on any failure. Python's standard library only.
"""
import argparse
import concurrent.futures
import gzip
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def fail(message):
    sys.exit(f"service smoke test: {message}")


def post(url, body, content_type):
    request = urllib.request.Request(url, data=body, headers={"Content-Type": content_type}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("service")
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    model = os.path.join(ROOT, "models", "students", "resnet20-w8a8.kiln")
    process = subprocess.Popen([args.service, model, "--port", str(port), "--threads", "1"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                with urllib.request.urlopen(base + "/healthz", timeout=1) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError):
                if process.poll() is not None:
                    fail(f"the service exited with {process.returncode}: {process.stderr.read()}")
                time.sleep(0.1)
        else:
            fail("the service did not answer /healthz within 30 s")
        with gzip.open("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz") as f:
            data = f.read()
        pixels = [(b / 255.0 - 0.2860) / 0.3530 for b in data[16:16 + 784]]
        bodies = [(json.dumps(pixels).encode(), "application/json"),
                  (struct.pack("<784f", *pixels), "application/octet-stream")]
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda i: post(base + "/v1/predict", *bodies[i % 2]), range(args.requests)))
        statuses = [status for status, _ in results]
        if any(status != 200 for status in statuses):
            fail(f"{sum(s != 200 for s in statuses)} of {len(statuses)} predictions failed: {sorted(set(statuses))}")
        answers = {json.dumps(json.loads(body), sort_keys=True) for _, body in results}  # key order varies
        if len(answers) != 1:
            fail(f"the same image gave {len(answers)} different answers")
        status, body = post(base + "/v1/predict", b"[1, 2, oops", "application/json")
        if not 400 <= status < 500 or "error" not in json.loads(body):
            fail(f"a malformed body got {status} {body[:200]!r}, not a 4xx with a JSON error")
        with urllib.request.urlopen(base + "/metrics", timeout=5) as response:
            metrics = response.read().decode()
        if "/v1/predict" not in metrics:
            fail("/metrics does not count /v1/predict")
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            fail("the service did not exit within 10 s of SIGTERM")
        if code != 0:
            fail(f"the service exited with {code} after SIGTERM: {process.stderr.read()[-2000:]}")
        print(f"service smoke test: {args.requests} predictions answered alike, a malformed body got {status}, "
              f"SIGTERM exited 0")
    finally:
        if process.poll() is None:
            process.kill()


if __name__ == "__main__":
    main()
