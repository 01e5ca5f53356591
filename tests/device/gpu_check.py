"""GPU metrics on a real GPU machine, end to end (a manual check, not part of the suite).

Run by ``tests/device/gpu_check.sh`` on a machine with an NVIDIA GPU: a real relay, a
real trainer using the Python SDK with system metrics every second, and (when PyTorch
with CUDA is there) real GPU work, so utilisation must rise above zero. Writes a JSON
report and exits non-zero when what the dashboard would show is missing or wrong.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "clients" / "python" / "src"))

import stepwatch  # noqa: E402
from stepwatch import _system  # noqa: E402


def get(url: str):
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def main() -> int:
    relay, out = sys.argv[1], Path(sys.argv[2])
    report: dict = {"nvidia_smi": _system.gpus_nvidia_smi(), "nvml": _system.gpus_nvml()}
    try:
        import torch

        report["torch"] = torch.__version__
        cuda = torch.cuda.is_available()
    except ImportError:
        report["torch"] = None
        cuda = False
    run = "gpu-check"
    stepwatch.connect(relay, run=run, system_interval=1.0, commands=False)
    stepwatch.emit_training_start(config={"check": "gpu"}, total_epochs=1, total_batches=40)
    t0 = time.time()
    step = 0
    if cuda:
        a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
        while time.time() - t0 < 8:
            for _ in range(20):
                a = (a @ a).clamp_(-1, 1)
            torch.cuda.synchronize()
            step += 1
            stepwatch.emit_batch_end(epoch=0, batch_idx=step, loss=1.0 / step, lr=1e-3)
    else:
        while time.time() - t0 < 4:
            time.sleep(0.1)
            step += 1
            stepwatch.emit_batch_end(epoch=0, batch_idx=step, loss=1.0 / step, lr=1e-3)
    time.sleep(1.5)
    stepwatch.emit_training_end(status="completed")
    stepwatch.flush(10)
    state = get(f"{relay}/api/runs/{run}")
    events = get(f"{relay}/api/runs/{run}/events?after=0&limit=10000")
    samples = [e for e in events if e.get("event") == "system"]
    report["steps"] = step
    report["system_samples"] = len(samples)
    report["last_sample"] = samples[-1] if samples else None
    report["state_system"] = state.get("system")
    gpus = [g for s in samples for g in (s.get("gpus") or [])]
    report["max_util_percent"] = max((g.get("util_percent") or 0) for g in gpus) if gpus else None
    out.write_text(json.dumps(report, indent=2, default=str))
    problems = []
    if not report["nvidia_smi"]:
        problems.append("nvidia-smi gave no GPU")
    if len(samples) < 3:
        problems.append(f"only {len(samples)} system samples stored")
    if not gpus:
        problems.append("no GPU fields in the stored system samples")
    for g in gpus[-1:]:
        for key in ("name", "util_percent", "mem_used_bytes", "mem_total_bytes"):
            if g.get(key) is None:
                problems.append(f"GPU field {key} missing: {g}")
    if cuda and not (report["max_util_percent"] or 0) > 0:
        problems.append("GPU busy with matmuls but utilisation never rose above 0")
    print(
        json.dumps({k: report[k] for k in ("torch", "steps", "system_samples", "max_util_percent")})
    )
    print("last GPU sample:", json.dumps(gpus[-1] if gpus else None))
    print("PROBLEMS:" if problems else "OK", *problems, sep="\n  ")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
