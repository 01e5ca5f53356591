"""What the media calls cost the training thread. Usage:
``python media_bench.py [RELAY_URL]`` (default: a relay that is not there, so images
go to the spool on disk).

Prints one JSON object of median microseconds per call on the calling thread:
``log_image`` of a 256x256x3 uint8 numpy array (the copy; encoding and upload are the
sender thread's), back to back and with 5 ms between calls; ``log_histogram`` of a
1M-element CPU torch tensor and of a 10,000-element list; ``log_text``; and a
``batch_end`` while ``watch()`` waits for its next due step (the cost on other steps).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from typing import Any, Callable

import stepwatch

DOWN = "http://127.0.0.1:9"  # nothing listens there


def median_us(
    fn: Callable[[], Any], rounds: int, per_round: int, between: Callable[[], Any]
) -> float:
    samples = []
    for _ in range(rounds):
        between()  # not timed: let the sender catch up so nothing is dropped
        t0 = time.perf_counter()
        for _ in range(per_round):
            fn()
        samples.append((time.perf_counter() - t0) / per_round * 1e6)
    return statistics.median(samples)


def spaced_us(fn: Callable[[], Any], calls: int, gap_s: float) -> float:
    """Median microseconds of single calls with ``gap_s`` of other work (a sleep)
    between them: the cost in a loop whose steps take longer than the call."""
    samples = []
    for _ in range(calls):
        time.sleep(gap_s)
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1e6)
    return statistics.median(samples)


def main() -> None:
    url = sys.argv[1] if len(sys.argv) > 1 else DOWN
    os.environ.setdefault("STEPWATCH_SPOOL_DIR", tempfile.mkdtemp(prefix="stepwatch-bench-"))
    sender = stepwatch.connect(
        url,
        run=f"media-bench-{os.getpid()}",
        commands=False,
        system_interval=0,
        heartbeat_interval=0,
        capture_logging=False,
    )
    out: dict[str, Any] = {"relay": "up" if url != DOWN else "down"}

    def settle() -> None:
        deadline = time.monotonic() + 30
        while sender.media_pending_bytes > 0 and time.monotonic() < deadline:
            time.sleep(0.005)

    try:
        import numpy as np

        img = np.random.default_rng(0).integers(0, 256, size=(256, 256, 3), dtype=np.uint8)
        dropped = sender.dropped
        out["log_image_256x256x3_uint8_us"] = median_us(
            lambda: stepwatch.log_image("bench/image", img), 20, 20, settle
        )
        out["images_dropped"] = sender.dropped - dropped
        out["log_image_256x256x3_uint8_spaced_us"] = spaced_us(
            lambda: stepwatch.log_image("bench/image", img), 200, 0.005
        )
    except ImportError:
        out["log_image_256x256x3_uint8_us"] = None
    values = [float(i % 97) for i in range(10_000)]
    out["log_histogram_list_10k_us"] = median_us(
        lambda: stepwatch.log_histogram("bench/list", values), 10, 20, lambda: None
    )
    out["log_text_us"] = median_us(
        lambda: stepwatch.log_text("bench/text", "a sample of generated text " * 4),
        10,
        1000,
        lambda: None,
    )
    try:
        import torch

        t = torch.randn(1_000_000)
        out["torch_threads"] = torch.get_num_threads()
        out["log_histogram_tensor_1M_cpu_us"] = median_us(
            lambda: stepwatch.log_histogram("bench/tensor", t), 10, 5, lambda: None
        )
        model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.Linear(64, 1))
        stepwatch.watch(model, log="all", every=10**9)  # never due here
        base = median_us(
            lambda: stepwatch.emit_batch_end(batch_idx=0, loss=1.0), 10, 10_000, lambda: None
        )
        stepwatch.unwatch(model)
        plain = median_us(
            lambda: stepwatch.emit_batch_end(batch_idx=0, loss=1.0), 10, 10_000, lambda: None
        )
        out["batch_end_while_watching_us"] = base
        out["batch_end_plain_us"] = plain
    except ImportError:
        out["log_histogram_tensor_1M_cpu_us"] = None
    stepwatch.disconnect(timeout=0.5)
    print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in out.items()}))


if __name__ == "__main__":
    main()
