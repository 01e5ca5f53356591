"""What Stepwatch costs a Python training loop. Run by ``cargo xtask bench``.

Prints one JSON object: the median cost of one ``emit_batch_end`` on the training
thread (relay up, relay down), and the step rate of a loop doing a fixed amount of
work per step without Stepwatch, with it (relay up) and with the relay down (events
going to the spool). Usage: ``python emit_bench.py RELAY_URL``.
"""

from __future__ import annotations

import json
import statistics
import sys
import time

import stepwatch

DOWN = "http://127.0.0.1:9"  # nothing listens there


def emit_cost(url: str, run: str) -> float:
    """Median microseconds per emit over 20 rounds of 10,000."""
    stepwatch.connect(url, run=run, system_interval=0, heartbeat_interval=0)
    samples = []
    for _ in range(20):
        t0 = time.perf_counter()
        for i in range(10_000):
            stepwatch.emit_batch_end(batch_idx=i, loss=1.0, lr=0.001)
        samples.append((time.perf_counter() - t0) / 10_000 * 1e6)
    stepwatch.disconnect(timeout=0.5)
    return statistics.median(samples)


def work(n: int) -> float:
    """Pure-Python arithmetic standing in for a training step (n=1500: about 100 µs)."""
    acc = 0.0
    for k in range(n):
        acc += (k % 7) * 0.5
    return acc


def loop_rate(url: str | None, run: str, n: int, steps: int) -> float:
    """Steps per second of a loop emitting one batch_end per step (no emit without url)."""
    if url:
        stepwatch.connect(url, run=run, system_interval=0, heartbeat_interval=0)
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


def main() -> None:
    up = sys.argv[1]
    result = {
        "emit_up_us": emit_cost(up, "bench-py-emit"),
        "emit_down_us": emit_cost(DOWN, "bench-py-emit-down"),
    }
    result.update(step_rates(up, "100us", 1500, 10_000))
    result.update(step_rates(up, "1ms", 15_000, 1_000))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
