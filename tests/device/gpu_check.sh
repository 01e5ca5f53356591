#!/usr/bin/env bash
# Manual GPU-metrics check on a machine with an NVIDIA GPU (see gpu_check.py). Needs a
# release relay at target/release/stepwatch; writes its findings under ${OUT:-/tmp}.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/stepwatch-gpu-check}
mkdir -p "$OUT"
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
nvidia-smi --query-gpu=index,name,utilization.gpu,memory.used,memory.total,temperature.gpu,power.draw \
    --format=csv,noheader,nounits > "$OUT/query-gpu.csv" 2>&1
data=$(mktemp -d)
target/release/stepwatch serve --bind 127.0.0.1:18080 --data-dir "$data" --dist "$data/none" \
    > "$OUT/relay.log" 2>&1 &
relay=$!
for _ in $(seq 100); do curl -sf http://127.0.0.1:18080/healthz > /dev/null && break; sleep 0.1; done
python3 tests/device/gpu_check.py http://127.0.0.1:18080 "$OUT/report.json"
rc=$?
kill $relay
exit $rc
