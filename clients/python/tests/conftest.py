"""Fixtures: a real relay process on a free port, with its own data dir."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
FIXTURES = REPO / "crates" / "events" / "tests" / "fixtures"
# The SDK under test is the source tree, not an installed copy.
sys.path.insert(0, str(REPO / "clients" / "python" / "src"))


def trainer_env(tmp_path: Path, **extra: str) -> dict:
    """Environment for a trainer subprocess: the SDK from source, a private spool."""
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO / "clients" / "python" / "src"),
        "STEPWATCH_SPOOL_DIR": str(tmp_path / "spool"),
    }
    env.update(extra)
    return env


def relay_binary() -> Path:
    env = os.environ.get("STEPWATCH_BIN")
    path = Path(env) if env else REPO / "target" / "debug" / "stepwatch"
    if not path.exists():
        pytest.fail(f"relay binary not found at {path}: run `cargo build -p stepwatch-relay`")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def postgres_database(data_dir: Path) -> str | None:
    """With STEPWATCH_TEST_BACKEND=postgres: the PostgreSQL database standing for this
    data dir (created on first use, so a restarted relay finds its history)."""
    if os.environ.get("STEPWATCH_TEST_BACKEND") != "postgres":
        return None
    server = os.environ.get("STEPWATCH_TEST_PG")
    if not server:
        pytest.fail("STEPWATCH_TEST_BACKEND=postgres needs STEPWATCH_TEST_PG=postgres://…")
    name = "sw_py_" + hashlib.sha1(str(data_dir.resolve()).encode()).hexdigest()[:16]
    exists = subprocess.run(
        [
            "psql",
            f"{server}/postgres",
            "-tAc",
            f"SELECT 1 FROM pg_database WHERE datname = '{name}'",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if not exists:
        subprocess.run(
            ["psql", f"{server}/postgres", "-qc", f"CREATE DATABASE {name}"],
            capture_output=True,
            check=True,
        )
    return f"{server}/{name}"


class Relay:
    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.extra: list[str] = []  # more `serve` flags
        self.token: str | None = None  # sent by get() when set

    def start(self) -> Relay:
        database = postgres_database(self.data_dir)
        self.proc = subprocess.Popen(
            [
                str(relay_binary()),
                "serve",
                "--bind",
                f"127.0.0.1:{self.port}",
                "--data-dir",
                str(self.data_dir),
                "--dist",
                str(self.data_dir / "no-dist"),
                *(["--database", database] if database else []),
                *self.extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("relay did not start")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def get(self, path: str):
        req = urllib.request.Request(self.url + path)
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        with urllib.request.urlopen(req, timeout=5) as r:
            return json.loads(r.read())

    def wait_for(self, run: str, predicate, timeout: float = 15.0):
        deadline = time.monotonic() + timeout
        state = None
        while time.monotonic() < deadline:
            try:
                state = self.get(f"/api/runs/{run}")
                if predicate(state):
                    return state
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"condition not met for run {run}; last state: {state}")


@pytest.fixture
def relay(tmp_path):
    r = Relay(tmp_path / "data").start()
    yield r
    r.stop()


@pytest.fixture
def run_script(tmp_path):
    """Runs a Python script in a fresh interpreter with the SDK importable."""

    def run(code: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
        script = tmp_path / "trainer.py"
        script.write_text(code)
        full_env = trainer_env(tmp_path, **(env or {}))
        return subprocess.run(
            [sys.executable, str(script)],
            env=full_env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    return run
