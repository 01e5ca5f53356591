"""What Stepwatch costs a Python training loop, and how much one process can send. Run by
``cargo xtask bench``.

Prints one JSON object: the median cost of one ``emit_batch_end`` on the training
thread (relay up, relay down); the step rate of a loop doing a fixed amount of work per
step without Stepwatch, with it (relay up) and with the relay down (events going to the
spool); a burst of emits as fast as one process makes them (events emitted and stored
per second, how many went through the spool or were dropped); and emit → visible on
the relay's stream (p50 / p99) for spaced emits from an idle trainer and from a busy
1 ms loop, seen by a subscriber in another process (so it takes no GIL from the
trainer), from the event's own ``time`` to its arrival. Usage:
``python emit_bench.py RELAY_URL``.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import subprocess
import sys
import time
import urllib.request

import stepwatch

DOWN = "http://127.0.0.1:9"  # nothing listens there
OFF = {"system_interval": 0, "heartbeat_interval": 0}
#: Emits in the burst (``BENCH_BURST`` for a quicker look).
BURST = int(os.environ.get("BENCH_BURST", 2_000_000))


def emit_cost(url: str, run: str) -> float:
    """Median microseconds per emit over 20 rounds of 10,000."""
    stepwatch.connect(url, run=run, **OFF)
    samples = []
    for _ in range(20):
        t0 = time.perf_counter()
        for i in range(10_000):
            stepwatch.emit_batch_end(batch_idx=i, loss=1.0, lr=0.001)
        samples.append((time.perf_counter() - t0) / 10_000 * 1e6)
    stepwatch.disconnect(timeout=0.5)
    return statistics.median(samples)


def work(n: int) -> float:
    """Pure-Python arithmetic standing in for a training step (:func:`work_for` says
    which ``n`` takes how long here)."""
    acc = 0.0
    for k in range(n):
        acc += (k % 7) * 0.5
    return acc


def work_for(seconds: float) -> int:
    """The ``n`` for which :func:`work` takes ``seconds`` on this machine (the best of
    a few timings of 2,000 steps' worth, so a busy moment does not shorten the steps)."""
    probe = 3000
    best = min(_timed(probe, 200) for _ in range(5))
    return max(1, round(probe * seconds / best))


def _timed(n: int, reps: int) -> float:
    t0 = time.perf_counter()
    for _ in range(reps):
        work(n)
    return (time.perf_counter() - t0) / reps


def loop_rate(url: str | None, run: str, n: int, steps: int) -> float:
    """Steps per second of a loop emitting one batch_end per step (no emit without url)."""
    if url:
        stepwatch.connect(url, run=run, **OFF)
    t0 = time.perf_counter()
    for i in range(steps):
        loss = work(n)
        if url:
            stepwatch.emit_batch_end(batch_idx=i, loss=loss, lr=0.001)
    rate = steps / (time.perf_counter() - t0)
    if url:
        stepwatch.disconnect(timeout=0.5)
    return rate


def step_rates(up: str, label: str, n: int, steps: int, rounds: int = 7) -> dict[str, float]:
    """Median step rate plain, relay up and relay down, measured in interleaved rounds
    so that machine noise hits all three alike."""
    configs = {"plain": None, "up": up, "down": DOWN}
    rates: dict[str, list[float]] = {k: [] for k in configs}
    for _ in range(rounds):
        for name, url in configs.items():
            rates[name].append(loop_rate(url, f"bench-py-{label}-{name}", n, steps))
    return {f"steps_{label}_{k}": statistics.median(v) for k, v in rates.items()}


def last_id(url: str, run: str) -> int:
    with urllib.request.urlopen(f"{url}/api/runs/{run}", timeout=30) as r:
        return int(json.loads(r.read())["last_id"])


def burst(url: str, run: str, n: int = BURST) -> dict[str, float]:
    """``n`` batch_end events (loss, lr and two metrics) emitted as fast as the loop
    goes, then flushed: events/s emitted, events/s stored (from the first emit until
    the relay holds them), and how many went through the spool or were dropped."""
    s = stepwatch.connect(url, run=run, **OFF)
    stepwatch.emit_training_start(total_epochs=1)
    assert stepwatch.flush(30)
    before = last_id(url, run)
    metrics = {"acc": 0.5, "grad_norm": 1.0}
    t0 = time.perf_counter()
    for i in range(n):
        stepwatch.emit_batch_end(batch_idx=i, loss=1.0 / (i + 1), lr=0.001, metrics=metrics)
    emitted = time.perf_counter() - t0
    flushed = stepwatch.flush(600)
    total = time.perf_counter() - t0
    stored = last_id(url, run) - before
    out = {
        "burst_n": n,
        "burst_emit_per_s": n / emitted,
        "burst_stored_per_s": stored / total,
        "burst_stored": stored,
        "burst_spilled": getattr(s, "spilled", 0),
        "burst_dropped": s.dropped,
        "burst_flushed": flushed,
    }
    stepwatch.disconnect(timeout=5)
    return out


def subscribe(url: str, run: str, after: int, want: int, timeout: float) -> None:
    """The subscriber process: ms from each ``bench_probe`` event's time to its arrival
    on the run's stream, printed as a JSON list once ``want`` arrived (or at timeout)."""
    req = urllib.request.Request(f"{url}/api/runs/{run}/stream?after={after}")
    lat: list[float] = []
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        print("ready", flush=True)
        deadline = time.monotonic() + timeout
        name = b""
        for line in resp:
            if line.startswith(b"event:"):
                name = line[6:].strip()
            elif line.startswith(b"data:") and name == b"bench_probe":
                lat.append((time.time() - json.loads(line[5:])["time"]) * 1000)
                if len(lat) >= want or time.monotonic() > deadline:
                    break
    print(json.dumps(lat), flush=True)


def latency(url: str, run: str, busy: bool, probes: int = 200) -> tuple[float, float]:
    """p50 / p99 ms, emit → the relay's stream, of ``probes`` events 20–50 ms apart,
    from a trainer that sleeps between them, or (``busy``) from a loop of 1 ms steps
    emitting a batch_end each step, the probes among them."""
    stepwatch.connect(url, run=run, **OFF)
    stepwatch.emit_training_start(total_epochs=1)
    assert stepwatch.flush(30)
    sub = subprocess.Popen(
        [sys.executable, __file__, "--subscribe", url, run, str(last_id(url, run)), str(probes)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert sub.stdout is not None and sub.stdout.readline().strip() == "ready"
    time.sleep(0.2)
    rng = random.Random(1)
    step = 0
    n_1ms = work_for(0.001)
    for k in range(probes):
        gap = rng.uniform(0.02, 0.05)
        if busy:
            end = time.perf_counter() + gap
            while time.perf_counter() < end:
                work(n_1ms)
                stepwatch.emit_batch_end(batch_idx=step, loss=0.5, lr=0.001)
                step += 1
        else:
            time.sleep(gap)
        stepwatch.training_emitter.emit("bench_probe", k=k)
    out, _ = sub.communicate(timeout=60)
    stepwatch.disconnect(timeout=5)
    lat = sorted(json.loads(out.strip().splitlines()[-1]))
    if not lat:
        return float("nan"), float("nan")
    return lat[len(lat) // 2], lat[min(len(lat) - 1, round(0.99 * (len(lat) - 1)))]


def main() -> None:
    if sys.argv[1] == "--subscribe":
        url, run, after, want = sys.argv[2:6]
        subscribe(url, run, int(after), int(want), timeout=120)
        return
    up = sys.argv[1]
    only = set(sys.argv[2:])  # (parts to run, for a quick look: cost loops burst latency)
    tag = f"{os.getpid()}"
    result: dict[str, float] = {}
    if not only or "cost" in only:
        result["emit_up_us"] = emit_cost(up, f"bench-py-emit-{tag}")
        result["emit_down_us"] = emit_cost(DOWN, f"bench-py-emit-down-{tag}")
    if not only or "loops" in only:
        # Steps of 100 µs and 1 ms of pure-Python work, timed on this machine.
        result.update(step_rates(up, "100us", work_for(100e-6), 10_000))
        result.update(step_rates(up, "1ms", work_for(1e-3), 1_000))
    if not only or "latency" in only:
        for busy in (False, True):
            label = "busy" if busy else "idle"
            p50, p99 = latency(up, f"bench-py-latency-{label}-{tag}", busy)
            result[f"lat_{label}_p50_ms"] = p50
            result[f"lat_{label}_p99_ms"] = p99
    if not only or "burst" in only:
        result.update(burst(up, f"bench-py-burst-{tag}"))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
