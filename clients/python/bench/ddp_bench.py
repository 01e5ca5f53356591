"""What Stepwatch costs a distributed run, and how fast a pause reaches every rank.

    python -m torch.distributed.run --nproc_per_node=2 clients/python/bench/ddp_bench.py URL

Each rank trains a small DDP model on CPU (gloo) with 10 ms steps: first without
Stepwatch, then connected with ``emit_batch_end`` at every step (rank 0 sends the
training events, every rank takes part in the per-step agreement on commands), then
without again (the noise). Then rank 0 sends ``pause`` five times through the relay's API
and measures command → every rank paused (the time of the last rank's pause answer),
resuming each time, and finally ``stop``. Rank 0 prints one JSON object.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import threading
import time
import urllib.request

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

URL = sys.argv[1].rstrip("/")
STEPS = int(os.environ.get("BENCH_STEPS", "300"))
STEP_S = 0.01

dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
torch.manual_seed(rank)
model = DDP(nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 1)))
opt = torch.optim.SGD(model.parameters(), lr=0.01)


def train_step() -> float:
    x = torch.randn(32, 16)
    loss = model(x).pow(2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    time.sleep(STEP_S)
    return float(loss.item())


def timed(emit: bool) -> float:
    """Mean seconds per step over STEPS steps."""
    dist.barrier()
    t0 = time.perf_counter()
    for i in range(STEPS):
        loss = train_step()
        if emit:
            stepwatch.emit_batch_end(i, loss, step=i + 1)
    dist.barrier()
    return (time.perf_counter() - t0) / STEPS


def call(method: str, path: str, body: dict[str, object] | None = None) -> object:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(URL + path, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def pause_latencies(run: str, out: list[float]) -> None:
    """Rank 0's thread: pause, wait for every rank's answer, resume; five times; stop."""
    time.sleep(1.0)
    for _ in range(5):
        t0 = time.time()
        cid = call("POST", f"/api/runs/{run}/commands", {"command": "pause"})["command_id"]  # type: ignore[index]
        deadline = time.time() + 20
        while time.time() < deadline:
            acks = call("GET", f"/api/runs/{run}/events?event=command_ack&limit=1000")
            paused = [
                a
                for a in acks  # type: ignore[union-attr]
                if a.get("command_id") == cid and a.get("status") == "accepted"
            ]
            if len({a.get("rank") for a in paused}) == world:
                out.append(max(a["time"] for a in paused) - t0)
                break
            time.sleep(0.02)
        call("POST", f"/api/runs/{run}/commands", {"command": "resume"})
        time.sleep(0.5)
    call("POST", f"/api/runs/{run}/commands", {"command": "stop"})


plain = timed(False)
import stepwatch  # noqa: E402  (connected only for the measured phase)

run = os.environ.get("BENCH_RUN", "bench-ddp")
stepwatch.connect(URL, run=run, system_interval=1)
with_sw = timed(True)
stepwatch.disconnect()
plain2 = timed(False)

stepwatch.connect(URL, run=run + "-pause", system_interval=1)
lat: list[float] = []
if rank == 0:
    threading.Thread(target=pause_latencies, args=(run + "-pause", lat), daemon=True).start()
i = 0
while not stepwatch.should_stop() and i < 100_000:
    i += 1
    stepwatch.emit_batch_end(i, train_step(), step=i)
stepwatch.emit_training_end(status="stopped")
stepwatch.disconnect()

mine = {"plain_ms": plain * 1e3, "with_ms": with_sw * 1e3, "plain2_ms": plain2 * 1e3}
every: list[dict[str, float]] = [{} for _ in range(world)]
dist.all_gather_object(every, mine)
if rank == 0:
    print(
        json.dumps(
            {
                "world": world,
                "ranks": every,
                "pause_ms": [x * 1e3 for x in lat],
                "pause_median_ms": statistics.median(lat) * 1e3 if lat else None,
            }
        )
    )
dist.destroy_process_group()
