"""Control from the dashboard, end to end: a real trainer process under a real relay."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request

from conftest import trainer_env

TRAINER = """
import time, stepwatch
from stepwatch import emit_training_start, emit_batch_end, emit_training_end, emit_checkpoint_saved

loaded = []
stepwatch.on_command("load_checkpoint", lambda path: loaded.append(path))
stepwatch.on_command("ask", lambda text: {"echo": text.upper(), "loaded": list(loaded)})
emit_training_start(total_epochs=1, total_batches=100000)
emit_checkpoint_saved(checkpoint_path="/ckpt/a.pt", epoch=1, step=0)
step = 0
while not stepwatch.should_stop() and step < 100000:
    step += 1
    emit_batch_end(batch_idx=step, loss=1.0 / step, lr=0.1)
    time.sleep(0.005)
emit_training_end()
assert stepwatch.flush(10)
"""


def post(relay, run: str, body) -> tuple[int, dict]:
    req = urllib.request.Request(
        f"{relay.url}/api/runs/{run}/commands",
        data=json.dumps(body).encode() if not isinstance(body, bytes) else body,
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def command(state: dict, cid: str) -> dict:
    return next(c for c in state["commands"] if c["id"] == cid)


def test_pause_resume_load_ask_stop_from_the_relay(relay, tmp_path):
    env = trainer_env(tmp_path, STEPWATCH_URL=relay.url, STEPWATCH_RUN="ctl")
    script = tmp_path / "trainer.py"
    script.write_text(TRAINER)
    proc = subprocess.Popen([sys.executable, str(script)], env=env, stderr=subprocess.PIPE)
    try:
        relay.wait_for("ctl", lambda s: s["step"] > 10)

        status, body = post(relay, "ctl", {"command": "pause"})
        assert status == 202, body
        pause_id = body["command_id"]
        state = relay.wait_for("ctl", lambda s: s["status"] == "paused")
        assert command(state, pause_id)["status"] == "accepted"
        # A second click returns the same open command: nothing pauses twice.
        status, again = post(relay, "ctl", {"command": "pause"})
        assert (status, again["command_id"], again["duplicate"]) == (202, pause_id, True)
        # Paused means the step counter stands still (observed over an interval).
        step = relay.get("/api/runs/ctl")["step"]
        time.sleep(0.5)
        assert relay.get("/api/runs/ctl")["step"] == step, "training went on while paused"

        # Handlers run at the control point, also while paused.
        status, bad = post(relay, "ctl", {"command": "load_checkpoint", "args": {"path": "/x.pt"}})
        assert status == 400 and "not a checkpoint this run reported" in bad["error"]
        status, body = post(
            relay, "ctl", {"command": "load_checkpoint", "args": {"path": "/ckpt/a.pt"}}
        )
        assert status == 202
        load_id = body["command_id"]
        state = relay.wait_for("ctl", lambda s: command(s, load_id)["status"] == "done")
        assert state["loaded_checkpoint"] == "/ckpt/a.pt"
        status, body = post(relay, "ctl", {"command": "ask", "args": {"input": "hello"}})
        ask_id = body["command_id"]
        state = relay.wait_for("ctl", lambda s: command(s, ask_id)["status"] == "done")
        assert command(state, ask_id)["output"] == {"echo": "HELLO", "loaded": ["/ckpt/a.pt"]}

        status, body = post(relay, "ctl", {"command": "resume"})
        resume_id = body["command_id"]
        state = relay.wait_for("ctl", lambda s: s["status"] == "running" and s["step"] > step)
        state = relay.wait_for("ctl", lambda s: command(s, resume_id)["status"] == "done")
        assert command(state, pause_id)["status"] == "done"

        status, body = post(relay, "ctl", {"command": "stop"})
        stop_id = body["command_id"]
        assert proc.wait(30) == 0, proc.stderr.read().decode()
        state = relay.wait_for("ctl", lambda s: s["status"] == "stopped")
        assert command(state, stop_id)["status"] == "done"
        # A finished run takes no more commands.
        status, body = post(relay, "ctl", {"command": "pause"})
        assert status == 409 and "has ended" in body["error"]
    finally:
        proc.kill()


def test_bad_commands_get_clear_errors(relay, run_script):
    proc = run_script(
        "import stepwatch\n"
        "stepwatch.connect(run='bad-cmd', commands=False)\n"
        "stepwatch.emit_training_start(total_epochs=1)\n"
        "assert stepwatch.flush(10)\n",
        env={"STEPWATCH_URL": relay.url},
    )
    assert proc.returncode == 0, proc.stderr
    cases = [
        ({"command": "explode"}, 400, "unknown command"),
        ({"args": {}}, 400, "missing field"),
        ({"command": 5}, 400, "must be a string"),
        ({"command": "pause", "args": [1]}, 400, "args"),
        ({"command": "ask"}, 400, "args.input"),
        ({"command": "load_checkpoint"}, 400, "args.path"),
        (b"{not json", 400, "invalid JSON"),
    ]
    for body, code, needle in cases:
        status, answer = post(relay, "bad-cmd", body)
        assert status == code and needle in answer["error"], (body, status, answer)
    status, answer = post(relay, "no-such-run", {"command": "pause"})
    assert status == 404


def test_a_trainer_without_a_handler_rejects_at_once(relay, tmp_path):
    code = """
import time, stepwatch
from stepwatch import emit_training_start, emit_batch_end
emit_training_start(total_epochs=1)
for i in range(3000):
    emit_batch_end(batch_idx=i, loss=1.0)
    time.sleep(0.005)
"""
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        env=trainer_env(tmp_path, STEPWATCH_URL=relay.url, STEPWATCH_RUN="nohandler"),
    )
    try:
        relay.wait_for("nohandler", lambda s: s["step"] > 5)
        status, body = post(relay, "nohandler", {"command": "ask", "args": {"input": "hi"}})
        cid = body["command_id"]
        state = relay.wait_for("nohandler", lambda s: command(s, cid)["status"] == "rejected")
        assert "does not support ask" in command(state, cid)["message"]
        status, body = post(relay, "nohandler", {"command": "resume"})
        cid = body["command_id"]
        state = relay.wait_for("nohandler", lambda s: command(s, cid)["status"] == "rejected")
        assert command(state, cid)["message"] == "not paused"
    finally:
        proc.kill()


def test_stop_can_raise_stop_training_and_the_run_ends_stopped(relay, tmp_path):
    code = """
import time, stepwatch
from stepwatch import emit_training_start, emit_batch_end
stepwatch.connect(raise_on_stop=True)
emit_training_start(total_epochs=1)
step = 0
try:
    while True:
        step += 1
        emit_batch_end(batch_idx=step, loss=1.0)
        time.sleep(0.005)
except stepwatch.StopTraining:
    print("STOPPED AT", step)
    raise
"""
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        env=trainer_env(tmp_path, STEPWATCH_URL=relay.url, STEPWATCH_RUN="raise"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        relay.wait_for("raise", lambda s: s["step"] > 5)
        status, body = post(relay, "raise", {"command": "stop"})
        cid = body["command_id"]
        out, err = proc.communicate(timeout=30)
        assert b"STOPPED AT" in out
        assert b"StopTraining" in err  # it propagated, as the trainer chose
        state = relay.wait_for("raise", lambda s: s["status"] == "stopped")
        assert command(state, cid)["status"] == "done"
    finally:
        proc.kill()
