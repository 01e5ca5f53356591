"""Delivery: the training loop never blocks or raises; events survive a relay outage."""

from __future__ import annotations

import json
import time

from conftest import FIXTURES, Relay, free_port, trainer_env


def test_relay_down_training_goes_on_and_nothing_raises(run_script):
    port = free_port()  # nothing listens here
    code = f"""
import time, stepwatch
stepwatch.connect("http://127.0.0.1:{port}", run="offline")
t0 = time.perf_counter()
for i in range(20000):
    stepwatch.emit_batch_end(batch_idx=i, loss=1.0 / (i + 1), lr=0.001)
dt = time.perf_counter() - t0
assert stepwatch.flush(0.2) is False  # bounded wait, relay still down
print(f"EMITS {{dt / 20000 * 1e6:.2f}} us")
"""
    start = time.monotonic()
    proc = run_script(code, env={"STEPWATCH_EXIT_FLUSH": "0.5"})
    assert proc.returncode == 0, proc.stderr
    assert "EMITS" in proc.stdout
    assert time.monotonic() - start < 30, "exit was not bounded"


def test_events_sent_while_relay_is_down_arrive_after_it_returns(tmp_path, run_script):
    relay = Relay(tmp_path / "data")
    code = f"""
import time, stepwatch
stepwatch.connect("{relay.url}", run="outage")
stepwatch.emit_training_start(total_epochs=1)
for i in range(300):
    stepwatch.emit_batch_end(batch_idx=i, loss=float(i), lr=0.1)
open("{tmp_path / "emitted"}", "w").close()
assert stepwatch.flush(30), "not delivered after the relay came up"
stepwatch.emit_training_end()
"""
    import subprocess
    import sys

    script = tmp_path / "t.py"
    script.write_text(code)
    env = {
        "PYTHONPATH": str(FIXTURES.parents[3] / "clients" / "python" / "src"),
        "PATH": "/usr/bin:/bin",
        "STEPWATCH_SPOOL_DIR": str(tmp_path / "spool"),
    }
    proc = subprocess.Popen([sys.executable, str(script)], env=env, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while not (tmp_path / "emitted").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (tmp_path / "emitted").exists()
        relay.start()  # the relay comes up only after everything was emitted
        assert proc.wait(60) == 0, proc.stderr.read().decode()
        state = relay.wait_for("outage", lambda s: s["status"] == "completed")
        assert state["batch_count"] == 300
        events = relay.get("/api/runs/outage/events?event=batch_end&limit=1000")
        assert [e["batch_idx"] for e in events] == list(range(300)), "order or count wrong"
    finally:
        proc.kill()
        relay.stop()


def test_golden_fixtures_travel_through_the_sdk(relay, run_script):
    names = [
        p.stem
        for p in sorted(FIXTURES.glob("*.json"))
        if p.stem not in ("stored",)  # stored.json carries relay-assigned fields
    ]
    code = f"""
import json, stepwatch
from pathlib import Path
stepwatch.connect(run="golden", commands=False)
for name in {names!r}:
    e = json.loads((Path({str(FIXTURES)!r}) / (name + ".json")).read_text())
    event = e.pop("event")
    for k in ("src", "seq", "time"):
        e.pop(k, None)
    stepwatch.training_emitter.emit(event, **e)
assert stepwatch.flush(10)
"""
    proc = run_script(code, env={"STEPWATCH_URL": relay.url})
    assert proc.returncode == 0, proc.stderr
    stored = relay.get("/api/runs/golden/events?limit=100")
    # What the trainer sent; the relay's own records (its default alert rules fire on the
    # fixtures' NaN loss and fatal error) are left out.
    stored = [
        e
        for e in stored
        if not e["event"].startswith(("alert_fired", "alert_resolved", "alert_delivery"))
    ]
    assert len(stored) == len(names)
    for name, got in zip(names, stored):
        want = json.loads((FIXTURES / f"{name}.json").read_text())
        for k in ("src", "seq", "time", "id", "received"):
            want.pop(k, None)
            got.pop(k, None)
        assert got == want, name


def test_listener_errors_never_reach_the_training_loop():
    from stepwatch import TrainingEventEmitter

    em = TrainingEventEmitter(history=5)

    def broken(_):
        raise RuntimeError("UI bug")

    em.on("batch_end", broken)
    for i in range(10):
        em.emit("batch_end", batch_idx=i, loss=1.0)
    hist = em.get_history("batch_end")
    assert [h["batch_idx"] for h in hist] == [5, 6, 7, 8, 9]
    assert em.get_history("batch_end", limit=2)[0]["batch_idx"] == 8


def test_one_bad_event_is_dropped_alone_and_the_rest_arrive(relay, run_script):
    code = """
import stepwatch
s = stepwatch.connect(run="partial")
stepwatch.emit_log("before")
stepwatch.training_emitter.emit("Not A Valid Name", x=1)
stepwatch.emit_batch_end(batch_idx="not-a-number", loss=1.0)
stepwatch.emit_log("after")
assert stepwatch.flush(10)
assert s.rejected == 2, s.rejected
assert "batch_idx" in s.last_rejection, s.last_rejection
"""
    proc = run_script(code, env={"STEPWATCH_URL": relay.url})
    assert proc.returncode == 0, proc.stderr
    events = relay.get("/api/runs/partial/events")
    assert [e.get("message") for e in events] == ["before", "after"]


def test_a_trainer_that_exits_while_the_relay_is_down_leaves_a_spool_the_next_one_sends(
    tmp_path, run_script
):
    relay = Relay(tmp_path / "data")
    spool = tmp_path / "spool"
    first = f"""
import stepwatch
stepwatch.connect("{relay.url}", run="spooled")
stepwatch.emit_training_start(total_epochs=1)
for i in range(500):
    stepwatch.emit_batch_end(batch_idx=i, loss=1.0 / (i + 1))
"""
    proc = run_script(first, env={"STEPWATCH_EXIT_FLUSH": "0.3"})
    assert proc.returncode == 0, proc.stderr
    files = list((spool / "spooled").glob("*.ndjson"))
    assert len(files) == 1, "nothing spooled"
    assert len(files[0].read_text().splitlines()) == 501
    relay.start()
    try:
        second = f"""
import stepwatch
stepwatch.connect("{relay.url}", run="spooled")
stepwatch.emit_batch_end(batch_idx=500, loss=0.001)
stepwatch.emit_training_end()
assert stepwatch.flush(20)
"""
        proc = run_script(second)
        assert proc.returncode == 0, proc.stderr
        events = relay.get("/api/runs/spooled/events?event=batch_end&limit=1000")
        assert [e["batch_idx"] for e in events] == list(range(501)), "lost or out of order"
        assert relay.get("/api/runs/spooled")["status"] == "completed"
        assert not list((spool / "spooled").glob("*.ndjson")), "spool not cleared"
    finally:
        relay.stop()


def test_python_m_stepwatch_sync_sends_the_spool_once(tmp_path, run_script):
    import subprocess
    import sys

    relay = Relay(tmp_path / "data")
    spool = tmp_path / "spool"
    code = f"""
import stepwatch
stepwatch.connect("{relay.url}", run="offline-sync")
for i in range(50):
    stepwatch.emit_batch_end(batch_idx=i, loss=1.0)
"""
    assert run_script(code, env={"STEPWATCH_EXIT_FLUSH": "0.2"}).returncode == 0
    relay.start()
    try:
        env = {"PYTHONPATH": str(FIXTURES.parents[3] / "clients" / "python" / "src")}
        cmd = [sys.executable, "-m", "stepwatch", "sync", str(spool), "--url", relay.url]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert "1 spool files sent, 0 left" in out.stdout
        assert len(relay.get("/api/runs/offline-sync/events?limit=1000")) == 50
        again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
        assert "0 spool files sent" in again.stdout
    finally:
        relay.stop()


def test_an_uncaught_exception_fails_the_run_with_its_traceback(relay, run_script):
    code = """
import stepwatch
stepwatch.connect(run="crash")
stepwatch.emit_training_start(total_epochs=1)
stepwatch.emit_batch_end(batch_idx=0, loss=1.0)
def step():
    raise RuntimeError("CUDA out of memory")
step()
"""
    proc = run_script(code, env={"STEPWATCH_URL": relay.url})
    assert proc.returncode == 1
    assert "CUDA out of memory" in proc.stderr, "the original error must still be printed"
    state = relay.get("/api/runs/crash")
    assert state["status"] == "failed"
    err = state["last_error"]
    assert err["message"] == "RuntimeError: CUDA out of memory" and err["fatal"] is True
    assert "in step" in err["traceback"]


def test_sigterm_and_ctrl_c_end_the_run_as_stopped_with_everything_sent(relay, tmp_path):
    import signal
    import subprocess
    import sys

    code = """
import time, stepwatch
stepwatch.connect()
stepwatch.emit_training_start(total_epochs=1)
i = 0
while True:
    stepwatch.emit_batch_end(batch_idx=i, loss=1.0)
    i += 1
    time.sleep(0.002)
"""
    # SIGTERM: exit status 128 + 15; Ctrl-C: Python re-raises SIGINT (-2) after cleanup.
    for run, sig, code_expected in (("term", signal.SIGTERM, 143), ("int", signal.SIGINT, -2)):
        env = trainer_env(tmp_path, STEPWATCH_URL=relay.url, STEPWATCH_RUN=run)
        proc = subprocess.Popen([sys.executable, "-c", code], env=env, stderr=subprocess.PIPE)
        relay.wait_for(run, lambda s: s["step"] > 20)
        proc.send_signal(sig)
        assert proc.wait(30) == code_expected, proc.stderr.read().decode()
        state = relay.wait_for(run, lambda s: s["status"] == "stopped")
        # The exit flush sent every batch the loop emitted before the signal.
        events = relay.get(f"/api/runs/{run}/events?event=batch_end&limit=100000")
        assert [e["batch_idx"] for e in events] == list(range(len(events)))
        assert state["batch_count"] == len(events) > 20


def test_current_run_names_the_connection(tmp_path, monkeypatch):
    import stepwatch

    monkeypatch.setenv("STEPWATCH_SPOOL_DIR", str(tmp_path / "spool"))
    assert stepwatch.current_run() is None
    stepwatch.connect(f"http://127.0.0.1:{free_port()}", run="named", commands=False)
    try:
        assert stepwatch.current_run() == "named"
    finally:
        stepwatch.disconnect(timeout=0)
    assert stepwatch.current_run() is None


def test_with_auth_on_the_token_lets_events_in_and_a_refused_token_loses_nothing(
    tmp_path, run_script
):
    token = "py-trainer-token-0123456789"
    config = tmp_path / "stepwatch.toml"
    config.write_text(
        f'[[users]]\nname = "ci"\nrole = "trainer"\ntokens = ["{token}"]\n'
        f'[[users]]\nname = "root"\nrole = "admin"\ntokens = ["admin-token-0123456789"]\n'
    )
    relay = Relay(tmp_path / "data")
    relay.extra = ["--config", str(config)]
    relay.start()
    try:
        code = f"""
import stepwatch
s = stepwatch.connect("{relay.url}", run="authed")
for i in range(20):
    stepwatch.emit_batch_end(batch_idx=i, loss=1.0)
ok = stepwatch.flush(5)
print("OK" if ok else "NOT", s.last_error)
"""
        good = run_script(code, env={"STEPWATCH_TOKEN": token})
        assert good.returncode == 0 and "OK" in good.stdout, good.stdout + good.stderr
        bad = run_script(
            code, env={"STEPWATCH_TOKEN": "wrong-token-000000000", "STEPWATCH_EXIT_FLUSH": "0.5"}
        )
        assert bad.returncode == 0, bad.stderr
        assert "NOT relay refused our credentials (401)" in bad.stdout, bad.stdout
        # Nothing was lost: the refused events wait in the spool for a good token.
        retry = run_script(
            f'import stepwatch\nstepwatch.connect("{relay.url}", run="authed")\n'
            "assert stepwatch.flush(20)\n",
            env={"STEPWATCH_TOKEN": token},
        )
        assert retry.returncode == 0, retry.stderr
        relay.token = "admin-token-0123456789"
        events = relay.get("/api/runs/authed/events?limit=1000")
        batches = [e["batch_idx"] for e in events if e["event"] == "batch_end"]
        assert batches == list(range(20)) * 2, [e["event"] for e in events]
    finally:
        relay.stop()
