"""The SDK against a relay that dies, restarts or answers late, and a trainer that is
killed: training never waits, and every event arrives exactly once, in order."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from conftest import Relay, free_port, trainer_env


def start_trainer(tmp_path: Path, code: str, **env: str) -> subprocess.Popen:
    script = tmp_path / f"trainer-{time.monotonic_ns()}.py"
    script.write_text(code)
    return subprocess.Popen(
        [sys.executable, str(script)],
        env=trainer_env(tmp_path, STEPWATCH_SYSTEM_INTERVAL="0", **env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_file(path: Path, trainer: subprocess.Popen, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if trainer.poll() is not None:
            raise AssertionError(f"trainer exited early: {trainer.stderr.read()}")
        assert time.monotonic() < deadline, f"{path.name} never appeared"
        time.sleep(0.02)


def all_events(relay: Relay, run: str) -> list[dict]:
    events: list[dict] = []
    while True:
        after = events[-1]["id"] if events else 0
        page = relay.get(f"/api/runs/{run}/events?after={after}&limit=5000")
        if not page:
            return events
        events += page


def assert_exactly_once_in_order(events: list[dict], steps: int) -> None:
    assert [e["id"] for e in events] == list(range(1, len(events) + 1)), "ids have gaps"
    seen = [(e["src"], e["seq"]) for e in events]
    assert len(seen) == len(set(seen)), "an event was stored twice"
    batches = [e["batch_idx"] for e in events if e["event"] == "batch_end"]
    assert batches == list(range(steps)), "batch_end lost, doubled or out of order"


def test_relay_killed_mid_run_and_restarted_loses_and_doubles_nothing(tmp_path):
    relay = Relay(tmp_path / "data").start()
    steps = 3000
    code = f"""
import time, stepwatch
stepwatch.connect("{relay.url}", run="killed")
stepwatch.emit_training_start(total_epochs=1)
for i in range({steps}):
    stepwatch.emit_batch_end(batch_idx=i, loss=1.0 / (i + 1))
    time.sleep(0.001)
stepwatch.emit_training_end()
assert stepwatch.flush(60), "not delivered"
"""
    trainer = start_trainer(tmp_path, code)
    try:
        seen = 0
        for _ in range(2):  # two outages while the trainer runs
            # Kill once the trainer has stored 300 more events since the last restart.
            target = seen + 300
            state = relay.wait_for("killed", lambda s, t=target: s["event_count"] >= t)
            seen = state["event_count"]
            relay.stop()  # SIGKILL
            time.sleep(0.8)  # the outage lasts this long while the trainer keeps emitting
            relay.start()
        assert trainer.wait(90) == 0, trainer.stderr.read()
        relay.wait_for("killed", lambda s: s["status"] == "completed")
        assert_exactly_once_in_order(all_events(relay, "killed"), steps)
    finally:
        trainer.kill()
        relay.stop()


class SlowProxy:
    """A TCP proxy in front of the relay that holds each answer for ``delay`` seconds."""

    def __init__(self, target_port: int, delay: float) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.delay = delay
        self.target = target_port
        self.server = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn, socket.create_connection(("127.0.0.1", self.target)) as up:
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                head += chunk
            header, body = head.split(b"\r\n\r\n", 1)
            length = 0
            for line in header.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            while len(body) < length:
                body += conn.recv(65536)
            header = header.replace(b"Connection: keep-alive", b"Connection: close")
            up.sendall(header + b"\r\n\r\n" + body)
            answer = b""
            while True:
                chunk = up.recv(65536)
                if not chunk:
                    break
                answer += chunk
            time.sleep(self.delay)
            conn.sendall(answer)

    def close(self) -> None:
        self.server.close()


def test_a_relay_answering_late_never_slows_the_loop(relay, tmp_path):
    proxy = SlowProxy(relay.port, delay=1.5)
    steps = 2000
    code = f"""
import time, stepwatch
stepwatch.connect("{proxy.url}", run="slow", commands=False)
stepwatch.emit_training_start(total_epochs=1)
t0 = time.perf_counter()
for i in range({steps}):
    stepwatch.emit_batch_end(batch_idx=i, loss=0.5)
print("LOOP", time.perf_counter() - t0, flush=True)
stepwatch.emit_training_end()
assert stepwatch.flush(60), "not delivered"
"""
    trainer = start_trainer(tmp_path, code)
    try:
        out, err = trainer.communicate(timeout=120)
        assert trainer.returncode == 0, err
        loop = float(out.split("LOOP")[1].split()[0])
        # Each answer takes 1.5 s; a loop that waited for even one would take longer.
        assert loop < 1.0, f"the loop waited on the relay: {loop:.2f} s"
        relay.wait_for("slow", lambda s: s["status"] == "completed")
        assert_exactly_once_in_order(all_events(relay, "slow"), steps)
    finally:
        trainer.kill()
        proxy.close()


def test_the_spool_survives_kill_9_of_the_trainer_and_the_next_run_sends_it(tmp_path):
    relay = Relay(tmp_path / "data")  # not started: the relay is down
    steps = 2000
    code = f"""
import time, stepwatch
stepwatch.connect("{relay.url}", run="crashy")
stepwatch.emit_training_start(total_epochs=1)
for i in range({steps}):
    stepwatch.emit_batch_end(batch_idx=i, loss=1.0 / (i + 1))
stepwatch.emit_checkpoint_saved(checkpoint_path="/ckpt/last.pt", epoch=0, step={steps})
open("{tmp_path / "emitted"}", "w").close()
time.sleep(600)
"""
    trainer = start_trainer(tmp_path, code)
    try:
        wait_for_file(tmp_path / "emitted", trainer)
        spool = tmp_path / "spool" / "crashy"
        deadline = time.monotonic() + 20
        while sum(len(p.read_bytes().splitlines()) for p in spool.glob("*.ndjson")) < steps + 2:
            assert time.monotonic() < deadline, "events never reached the spool on disk"
            time.sleep(0.05)
        trainer.send_signal(signal.SIGKILL)
        trainer.wait(10)
        relay.start()
        second = start_trainer(
            tmp_path,
            f"""
import stepwatch
stepwatch.connect("{relay.url}", run="crashy")
stepwatch.emit_training_end()
assert stepwatch.flush(30), "not delivered"
""",
        )
        assert second.wait(60) == 0, second.stderr.read()
        events = all_events(relay, "crashy")
        assert_exactly_once_in_order(events, steps)
        names = [e["event"] for e in events]
        assert names[0] == "training_start" and names[-1] == "training_end"
        assert "checkpoint_saved" in names
        assert not list(spool.glob("*.ndjson")), "spool not cleared after sending"
    finally:
        trainer.kill()
        relay.stop()


def test_a_full_spool_drops_the_oldest_batch_ends_only_and_reports_how_many(tmp_path):
    relay = Relay(tmp_path / "data")
    cap = 64 * 1024
    steps = 5000
    code = f"""
import os, time, stepwatch
from pathlib import Path
s = stepwatch.connect("{relay.url}", run="capped")
stepwatch.emit_training_start(total_epochs=1, config={{"event": "batch_end"}})
for i in range({steps}):
    stepwatch.emit_batch_end(batch_idx=i, loss=1.0 / (i + 1), lr=0.001, note="x" * 40)
    if i == 100:
        stepwatch.emit_checkpoint_saved(checkpoint_path="/ckpt/early.pt", epoch=0, step=i)
        stepwatch.emit_error_occurred("early warning", fatal=False)
deadline = time.monotonic() + 20
while (s.dropped == 0 or s._queue) and time.monotonic() < deadline:
    time.sleep(0.05)
sizes = [p.stat().st_size for p in Path("{tmp_path}/spool/capped").glob("*.ndjson")]
print("SPOOLED", s.dropped, max(sizes), flush=True)
open("{tmp_path / "spooled"}", "w").close()
stepwatch.emit_training_end()
assert stepwatch.flush(60), "not delivered"
"""
    trainer = start_trainer(tmp_path, code, STEPWATCH_SPOOL_MAX_BYTES="64K")
    try:
        wait_for_file(tmp_path / "spooled", trainer, timeout=40)
        relay.start()
        out, err = trainer.communicate(timeout=90)
        assert trainer.returncode == 0, err
        dropped, biggest = out.split("SPOOLED")[1].split()[:2]
        dropped = int(dropped)
        assert dropped > 0, "nothing was dropped: the cap was not reached"
        assert int(biggest) <= cap, f"spool grew to {biggest} bytes, cap {cap}"
        events = all_events(relay, "capped")
        names = [e["event"] for e in events]
        for kept in ("training_start", "checkpoint_saved", "error_occurred", "training_end"):
            assert kept in names, f"{kept} was dropped"
        batches = [e["batch_idx"] for e in events if e["event"] == "batch_end"]
        assert batches == list(range(steps - len(batches), steps)), "not the oldest dropped"
        assert len(batches) == steps - dropped
        report = [e for e in events if e.get("dropped_events")]
        assert report and report[-1]["dropped_events"] == dropped
        assert report[-1]["level"] == "warning"
        state = relay.get("/api/runs/capped")
        assert state["status"] == "completed"
    finally:
        trainer.kill()
        relay.stop()
