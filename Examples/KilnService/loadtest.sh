#!/usr/bin/env bash
# Load test of KilnService on loopback (a measurement, not a test): builds the service in release mode, serves the
# committed ResNet-20 student, drives it with wrk (bounded in time), sends bad requests, checks the 503 bound and a
# graceful SIGTERM, and reports throughput, p50/p99 latency, errors and the service's RSS before and after.
#
#   Examples/KilnService/loadtest.sh [SECONDS] [CONNECTIONS]
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-10}
connections=${2:-16}
root=$(cd ../.. && pwd)
model=$root/models/students/resnet20-w8a8.kiln
port=18080
url=http://127.0.0.1:$port
for tool in wrk curl; do
    command -v $tool >/dev/null || { sudo=""; [ "$(id -u)" -ne 0 ] && sudo=sudo; $sudo apt-get install -y -q wrk curl >/dev/null; }
done
swift build -c release 2>&1 | tail -1
work=$(mktemp -d)
trap 'kill $pid 2>/dev/null || true; rm -rf "$work"' EXIT

# Request bodies: one normalized Fashion-MNIST test image as raw float32 and as JSON, and bad variants.
python3 - "$work" <<'PY'
import gzip, json, struct, sys
folder = sys.argv[1]
with gzip.open("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz") as f:
    data = f.read()
pixels = [((b / 255.0) - 0.2860) / 0.3530 for b in data[16:16 + 784]]
open(f"{folder}/one.f32", "wb").write(struct.pack("<784f", *pixels))
open(f"{folder}/one.json", "w").write(json.dumps(pixels))
open(f"{folder}/short.f32", "wb").write(struct.pack("<783f", *pixels[:783]))
open(f"{folder}/nan.f32", "wb").write(struct.pack("<784f", *([float("nan")] + pixels[1:])))
open(f"{folder}/huge.f32", "wb").write(b"\0" * (4 << 20))
PY

.build/release/KilnService "$model" --port $port --max-in-flight 32 &
pid=$!
for _ in $(seq 1 100); do curl -sf $url/healthz >/dev/null 2>&1 && break; sleep 0.1; done
rss() { awk '/VmRSS/ {print $2}' /proc/$pid/status; }
echo "answer (JSON body): $(curl -s -H 'Content-Type: application/json' --data-binary @$work/one.json $url/v1/predict | cut -c1-60)..."
# Warm up, then measure RSS before the load.
wrk -t1 -c4 -d2s -s post.lua $url/v1/predict -- "$work/one.f32" >/dev/null
before=$(rss)
echo "== wrk: $connections connections, ${seconds}s, batch-1 float32 bodies"
wrk -t2 -c$connections -d${seconds}s --latency -s post.lua $url/v1/predict -- "$work/one.f32" | tee "$work/wrk.txt"
after=$(rss)

echo "== bad requests (status, message)"
check() {  # expected-status description curl-arguments...
    local expected=$1 what=$2; shift 2
    local out status
    out=$(curl -s -w '\n%{http_code}' "$@" $url/v1/predict)
    status=${out##*$'\n'}
    echo "$status $what: ${out%$'\n'*}"
    [ "$status" = "$expected" ] || { echo "expected $expected" >&2; exit 1; }
}
check 415 "wrong content type" -H 'Content-Type: text/plain' --data-binary @$work/one.f32
check 400 "wrong length" -H 'Content-Type: application/octet-stream' --data-binary @$work/short.f32
check 400 "NaN input" -H 'Content-Type: application/octet-stream' --data-binary @$work/nan.f32
check 400 "not JSON" -H 'Content-Type: application/json' --data-binary 'hello'
check 413 "oversized body" -H 'Content-Type: application/octet-stream' --data-binary @$work/huge.f32
for _ in $(seq 1 200); do
    curl -s -o /dev/null -H 'Content-Type: application/octet-stream' --data-binary @$work/nan.f32 $url/v1/predict
done
curl -sf $url/healthz >/dev/null && echo "service up after bad requests; RSS $(rss) kB"

echo "== overload: 128 connections against --max-in-flight 32"
wrk -t2 -c128 -d3s -s post.lua $url/v1/predict -- "$work/one.f32" | grep -E "Requests/sec|Non-2xx" || true
curl -s $url/metrics | grep -E "^kiln_(rejected|errors)_total|predict_seconds_count"

echo "== SIGTERM"
kill -TERM $pid
start=$(date +%s%N)
wait $pid && status=0 || status=$?
echo "exit status $status after $(( ($(date +%s%N) - start) / 1000000 )) ms"
echo "== summary: RSS before load ${before} kB, after ${after} kB, after bad requests and overload (see above)"
grep -E "Requests/sec|50%|99%|Non-2xx|Socket errors" "$work/wrk.txt" || true
