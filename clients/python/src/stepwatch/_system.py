"""System metrics, sampled on a daemon thread: CPU %, process and system RAM, and per
GPU utilisation, memory, temperature and power (``pynvml`` when installed, else
``nvidia-smi --query-gpu``). No GPU, no ``nvidia-smi``: no GPU fields and no error.
Each sample is a ``system`` event; it doubles as the heartbeat that tells a quiet but
alive trainer from a gone one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from typing import Any, Callable

#: Seconds between samples.
DEFAULT_INTERVAL = 5.0
#: The ``nvidia-smi`` query the sampler runs.
NVIDIA_SMI_QUERY = [
    "nvidia-smi",
    "--query-gpu=index,name,utilization.gpu,memory.used,memory.total,temperature.gpu,power.draw",
    "--format=csv,noheader,nounits",
]
_MIB = 1024 * 1024


def _number(text: str) -> float | None:
    """A number from nvidia-smi's CSV, with or without units; None for [N/A] and the like."""
    t = text.strip()
    for unit in (" %", "%", " MiB", " W", " C"):
        if t.endswith(unit):
            t = t[: -len(unit)].strip()
    try:
        return float(t)
    except ValueError:
        return None


def parse_nvidia_smi_csv(text: str) -> list[dict[str, Any]]:
    """Parses ``nvidia-smi --query-gpu=... --format=csv[,noheader][,nounits]``.

    With a header the columns are found by name; without one they are taken in the order
    of :data:`NVIDIA_SMI_QUERY`. Memory comes back in bytes.
    """
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        return []
    default_cols = [
        "index",
        "name",
        "utilization.gpu",
        "memory.used",
        "memory.total",
        "temperature.gpu",
        "power.draw",
    ]
    first = [c.strip() for c in lines[0].split(",")]
    if first and first[0].startswith("index"):
        cols = [c.split(" [")[0].strip() for c in first]
        rows = lines[1:]
    else:
        cols = default_cols
        rows = lines
    gpus: list[dict[str, Any]] = []
    for row in rows:
        cells = [c.strip() for c in row.split(",")]
        if len(cells) < len(cols):
            continue
        v = dict(zip(cols, cells))
        gpu: dict[str, Any] = {}
        idx = _number(v.get("index", ""))
        gpu["index"] = int(idx) if idx is not None else len(gpus)
        if v.get("name"):
            gpu["name"] = v["name"]
        fields = {
            "util_percent": ("utilization.gpu", 1.0),
            "mem_used_bytes": ("memory.used", _MIB),
            "mem_total_bytes": ("memory.total", _MIB),
            "temperature_c": ("temperature.gpu", 1.0),
            "power_w": ("power.draw", 1.0),
        }
        for key, (col, scale) in fields.items():
            x = _number(v.get(col, ""))
            if x is not None:
                gpu[key] = int(x * scale) if scale != 1.0 else x
        gpus.append(gpu)
    return gpus


def gpus_nvidia_smi(timeout: float = 5.0) -> list[dict[str, Any]]:
    """GPU samples from ``nvidia-smi``; empty when it is missing or fails."""
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(
            NVIDIA_SMI_QUERY, capture_output=True, text=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return []
    return parse_nvidia_smi_csv(out.stdout) if out.returncode == 0 else []


def gpus_nvml() -> list[dict[str, Any]] | None:
    """GPU samples from pynvml, or None when pynvml is not installed or fails."""
    try:
        import pynvml

        pynvml.nvmlInit()
        gpus = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            mem = pynvml.nvmlDeviceGetMemoryInfo(h)
            name = pynvml.nvmlDeviceGetName(h)
            gpus.append(
                {
                    "index": i,
                    "name": name.decode() if isinstance(name, bytes) else name,
                    "util_percent": float(pynvml.nvmlDeviceGetUtilizationRates(h).gpu),
                    "mem_used_bytes": int(mem.used),
                    "mem_total_bytes": int(mem.total),
                    "temperature_c": float(pynvml.nvmlDeviceGetTemperature(h, 0)),
                    "power_w": pynvml.nvmlDeviceGetPowerUsage(h) / 1000.0,
                }
            )
        return gpus
    except Exception:
        return None


def _cpu_times() -> tuple[float, float] | None:
    try:
        with open("/proc/stat") as f:
            parts = [float(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = parts[3] + (parts[4] if len(parts) > 4 else 0.0)
    return sum(parts), idle


def _meminfo() -> tuple[int, int] | None:
    try:
        info = {}
        with open("/proc/meminfo") as f:
            for line in f:
                k, v = line.split(":", 1)
                info[k] = int(v.split()[0]) * 1024
        return info["MemTotal"] - info.get("MemAvailable", info.get("MemFree", 0)), info["MemTotal"]
    except (OSError, ValueError, KeyError):
        return None


def _process_rss() -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return None


class SystemSampler:
    """Emits a ``system`` event every ``interval`` seconds until closed; with
    ``metrics=False`` a bare ``heartbeat`` event instead. Either tells the dashboard the
    trainer is alive while it is quiet (a long validation), so it shows "stale" only
    when the process is gone."""

    def __init__(
        self,
        emit: Callable[..., Any],
        interval: float = DEFAULT_INTERVAL,
        gpus: Callable[[], list[dict[str, Any]]] | None = None,
        metrics: bool = True,
    ) -> None:
        self._emit = emit
        self.metrics = metrics
        self.interval = interval
        self._gpus = gpus
        self._stop = threading.Event()
        self._last_cpu = _cpu_times()
        self._thread = threading.Thread(target=self._loop, name="stepwatch-system", daemon=True)
        self._thread.start()

    def sample(self) -> dict[str, Any]:
        fields: dict[str, Any] = {}
        now = _cpu_times()
        if now and self._last_cpu:
            total, idle = now[0] - self._last_cpu[0], now[1] - self._last_cpu[1]
            if total > 0:
                fields["cpu_percent"] = round(100.0 * (1.0 - idle / total), 1)
        self._last_cpu = now
        mem = _meminfo()
        if mem:
            fields["mem_used_bytes"], fields["mem_total_bytes"] = mem
        rss = _process_rss()
        if rss is not None:
            fields["process_rss_bytes"] = rss
        fields["pid"] = os.getpid()
        gpus = self._gpus() if self._gpus else (gpus_nvml() or gpus_nvidia_smi())
        if gpus:
            fields["gpus"] = gpus
        return fields

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                if self.metrics:
                    self._emit("system", **self.sample())
                else:
                    self._emit("heartbeat", pid=os.getpid())
            except Exception:
                pass  # a sampling hiccup never reaches training

    def close(self) -> None:
        self._stop.set()
