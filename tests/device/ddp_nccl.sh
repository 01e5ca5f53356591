#!/usr/bin/env bash
# Manual check of a distributed run on CUDA with nccl (a machine with NVIDIA GPUs): up to
# 2 ranks of examples/ddp_train.py (DDP_BACKEND=nccl) against a release relay; pauses,
# resumes and stops them through the API and writes what the relay saw (every rank's
# pause step, GPU utilisation and memory, the final status) to ${OUT:-/tmp}/ddp.json.
# Needs target/release/stepwatch and torch with CUDA.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/stepwatch-ddp-check}
mkdir -p "$OUT"
gpus=$(nvidia-smi -L | wc -l)
n=$(( gpus < 2 ? gpus : 2 ))
data=$(mktemp -d)
url=http://127.0.0.1:18081
target/release/stepwatch serve --bind 127.0.0.1:18081 --data-dir "$data" --dist "$data/none" \
    > "$OUT/relay.log" 2>&1 &
relay=$!
for _ in $(seq 100); do curl -sf $url/healthz > /dev/null && break; sleep 0.1; done
PYTHONPATH=clients/python/src STEPWATCH_URL=$url STEPWATCH_SYSTEM_INTERVAL=1 DDP_BACKEND=nccl \
    DDP_STEPS=100000 DDP_CKPT="$OUT/final.pt" \
    python3 -m torch.distributed.run --nproc_per_node="$n" examples/ddp_train.py \
    > "$OUT/train.log" 2>&1 &
job=$!
python3 - "$url" "$n" "$OUT/ddp.json" <<'PY'
import json, sys, time, urllib.request
url, n, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def get(p):
    with urllib.request.urlopen(url + p, timeout=10) as r:
        return json.loads(r.read())
def post(p, body):
    req = urllib.request.Request(url + p, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())
for _ in range(120):
    runs = get("/api/runs")
    if runs and len((get(f"/api/runs/{runs[0]['run']}").get("world") or {}).get("ranks", [])) == n:
        break
    time.sleep(1)
run = runs[0]["run"]
time.sleep(5)
t0 = time.time()
cid = post(f"/api/runs/{run}/commands", {"command": "pause"})["command_id"]
for _ in range(200):
    acks = [a for a in get(f"/api/runs/{run}/events?event=command_ack&limit=1000") if a["command_id"] == cid]
    if len({a["rank"] for a in acks if a["status"] == "accepted"}) == n:
        break
    time.sleep(0.05)
paused_ms = 1000 * (max(a["time"] for a in acks) - t0)
time.sleep(3)
post(f"/api/runs/{run}/commands", {"command": "resume"})
time.sleep(3)
post(f"/api/runs/{run}/commands", {"command": "stop"})
time.sleep(10)
s = get(f"/api/runs/{run}")
json.dump({"run": run, "pause_steps": {a["rank"]: a.get("step") for a in acks if a["status"] == "accepted"},
           "pause_ms": paused_ms, "status": s["status"], "world": s["world"]}, open(out, "w"), indent=1)
print(json.dumps({"pause_steps": {a["rank"]: a.get("step") for a in acks if a["status"] == "accepted"},
                  "pause_ms": round(paused_ms), "status": s["status"],
                  "ranks": [(r["rank"], r["state"], r.get("gpu_util"), r.get("gpu_mem_bytes")) for r in s["world"]["ranks"]]}))
PY
rc=$?
wait $job
kill $relay
exit $rc
