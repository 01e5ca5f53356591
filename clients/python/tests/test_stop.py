"""Stop from the dashboard, end to end: real trainer processes shaped like the scripts people
write (a ``train()`` function with the batch loop, an epoch loop with validation and a save
of the best model, ``except KeyboardInterrupt``, a final test pass), under a real relay,
stopped the way the dashboard does it (``POST /api/runs/{run}/commands``).

The tests that train a model need torch (CPU); without it they are skipped, unless
``STEPWATCH_REQUIRE_FRAMEWORKS=1``.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import REPO, trainer_env

INTERRUPT_ACCEPTED = (
    "stop accepted; this loop does not check should_stop(): interrupting at the next step"
)
FLAG_ACCEPTED = "stop accepted; the loop ends when it next checks should_stop()"


def need_torch() -> None:
    try:
        importlib.import_module("torch")
    except ImportError as e:
        if os.environ.get("STEPWATCH_REQUIRE_FRAMEWORKS") == "1":
            pytest.fail(f"STEPWATCH_REQUIRE_FRAMEWORKS=1 but torch is not importable: {e}")
        pytest.skip(f"torch not installed: {e}")


def post(relay, run: str, body: dict) -> tuple[int, dict]:
    req = urllib.request.Request(
        f"{relay.url}/api/runs/{run}/commands",
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def stop(relay, run: str) -> str:
    status, body = post(relay, run, {"command": "stop"})
    assert status == 202, body
    return body["command_id"]


def events(relay, run: str, *names: str) -> list[dict]:
    query = f"?limit=10000&event={','.join(names)}" if names else "?limit=10000"
    return relay.get(f"/api/runs/{run}/events{query}")


def acks(relay, run: str, cid: str) -> list[tuple[str, str]]:
    """The trainer's answers to one command, in order: (status, message)."""
    return [
        (e["status"], e.get("message", ""))
        for e in events(relay, run, "command_ack")
        if e.get("command_id") == cid
    ]


def command(state: dict, cid: str) -> dict:
    return next(c for c in state["commands"] if c["id"] == cid)


def start(tmp_path: Path, code: str, **env: str) -> subprocess.Popen:
    script = tmp_path / "trainer.py"
    script.write_text(code)
    return subprocess.Popen(
        [sys.executable, str(script)],
        env=trainer_env(tmp_path, OMP_NUM_THREADS="1", **env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen, timeout: float = 60) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"trainer did not end after the stop\n{out}\n{err}") from None
    return proc.returncode, out, err


# -- the common script shape, with torch ---------------------------------------------------
# A train() function with the batch loop (the README's emit lines, no should_stop()), an
# epoch loop: train, validate, save the best model whole; Ctrl-C ends training early; then
# the best model is loaded back and tested.
LM_SCRIPT = r"""
import os, time
import torch
from torch import nn
import stepwatch
from stepwatch import (emit_training_start, emit_epoch_start, emit_batch_end,
                       emit_epoch_end, emit_checkpoint_saved, emit_training_end)

EPOCHS = 50
BATCHES = int(os.environ["BATCHES"])
VAL_BATCHES = int(os.environ["VAL_BATCHES"])
VAL_SLEEP = float(os.environ.get("VAL_SLEEP", "0.005"))
SAVE = os.environ["SAVE"]
EVAL_CONTROL = os.environ.get("EVAL_CONTROL") == "1"

torch.manual_seed(0)
model = nn.Sequential(nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 16))
criterion = nn.MSELoss()
optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
train_data = torch.randn(BATCHES, 8, 16)
val_data = torch.randn(VAL_BATCHES, 8, 16)
test_data = torch.randn(VAL_BATCHES, 8, 16)


def evaluate(data, name):
    model.eval()
    print("VAL START", name, flush=True)
    total = 0.0
    with torch.no_grad():
        for i in range(len(data)):
            total += criterion(model(data[i]), data[i]).item()
            time.sleep(VAL_SLEEP)
            if EVAL_CONTROL:
                stepwatch.control_point()
    print("VAL END", name, len(data), flush=True)
    return total / len(data)


def train():
    model.train()
    for batch in range(BATCHES):
        x = train_data[batch]
        optimizer.zero_grad()
        loss = criterion(model(x), x)
        loss.backward()
        optimizer.step()
        emit_batch_end(batch_idx=batch, loss=loss.item(), lr=0.05, epoch=epoch)
        time.sleep(0.01)


emit_training_start(total_epochs=EPOCHS, total_batches=BATCHES)
best_val_loss = None
try:
    for epoch in range(1, EPOCHS + 1):
        emit_epoch_start(epoch=epoch, total_epochs=EPOCHS)
        train()
        val_loss = evaluate(val_data, "val")
        emit_epoch_end(epoch=epoch, metrics={"val_loss": val_loss})
        if not best_val_loss or val_loss < best_val_loss:
            with open(SAVE, "wb") as f:
                torch.save(model, f)
            emit_checkpoint_saved(checkpoint_path=SAVE, epoch=epoch)
            print("SAVED", epoch, flush=True)
            best_val_loss = val_loss
except KeyboardInterrupt:
    print("-" * 40)
    print("Exiting from training early", flush=True)

with open(SAVE, "rb") as f:
    model = torch.load(f, weights_only=False)
test_loss = evaluate(test_data, "test")
print("TEST LOSS", test_loss, flush=True)
if os.environ.get("END") == "1":
    emit_training_end()
"""


def test_stop_interrupts_an_unmodified_loop_and_the_script_saves_and_tests(relay, tmp_path):
    # A Stop in epoch 2's batch loop: the script's except KeyboardInterrupt runs, the
    # model saved after epoch 1 survives and is tested, no validation runs after the stop,
    # and the process exits normally without emit_training_end: the run ends stopped.
    need_torch()
    save = tmp_path / "model.pt"
    proc = start(
        tmp_path,
        LM_SCRIPT,
        STEPWATCH_URL=relay.url,
        STEPWATCH_RUN="lm-stop",
        BATCHES="100",
        VAL_BATCHES="20",
        SAVE=str(save),
    )
    try:
        relay.wait_for("lm-stop", lambda s: s["step"] > 105, timeout=60)
        cid = stop(relay, "lm-stop")
        code, out, err = finish(proc)
    finally:
        proc.kill()
    assert code == 0, err
    assert "Exiting from training early" in out
    assert out.count("VAL START val") == 1, out  # epoch 1's only: none after the stop
    assert "SAVED 1" in out and "SAVED 2" not in out
    assert "VAL END test 20" in out and "TEST LOSS" in out  # the saved model loaded
    assert save.exists()
    state = relay.wait_for("lm-stop", lambda s: s["status"] == "stopped")
    assert command(state, cid)["status"] == "done"
    answers = acks(relay, "lm-stop", cid)
    assert [a[0] for a in answers] == ["accepted", "accepted", "done"], answers
    assert answers[0][1] == INTERRUPT_ACCEPTED
    interrupted_at = int(answers[1][1].split("at step ")[1].split(" ")[0])
    assert answers[1][1] == f"interrupting the loop at step {interrupted_at} (KeyboardInterrupt)"
    assert answers[2][1] == "stopped"
    # Interrupted in epoch 2's batch loop, at the first batch after the stop arrived:
    # nothing trained after it.
    assert 105 < interrupted_at < 200
    assert state["batch_count"] == interrupted_at and state["current_epoch"] == 2
    assert [e["status"] for e in events(relay, "lm-stop", "training_end")] == ["stopped"]
    assert events(relay, "lm-stop", "error_occurred") == []
    assert [c["epoch"] for c in state["checkpoints"]] == [1]


def test_an_error_after_the_stop_is_recorded_and_the_run_still_ends_stopped(relay, tmp_path):
    # A Stop in epoch 1: nothing was saved yet, so the script's own "load the best model"
    # fails after the interrupt. The error is printed as usual, recorded as non-fatal
    # "after the stop", and the run ends stopped, not failed.
    need_torch()
    save = tmp_path / "never-saved.pt"
    proc = start(
        tmp_path,
        LM_SCRIPT,
        STEPWATCH_URL=relay.url,
        STEPWATCH_RUN="lm-early",
        BATCHES="200",
        VAL_BATCHES="20",
        SAVE=str(save),
    )
    try:
        relay.wait_for("lm-early", lambda s: s["step"] > 5, timeout=60)
        cid = stop(relay, "lm-early")
        code, out, err = finish(proc)
    finally:
        proc.kill()
    assert code == 1, err  # the FileNotFoundError, uncaught, as without Stepwatch
    assert "Exiting from training early" in out
    assert "VAL START" not in out
    assert "Traceback" in err and "FileNotFoundError" in err and str(save) in err
    state = relay.wait_for("lm-early", lambda s: s["status"] == "stopped")
    assert command(state, cid)["status"] == "done"
    assert command(state, cid)["message"] == "stopped"
    error = state["last_error"]
    assert error["message"].startswith("after the stop: FileNotFoundError:"), error
    assert error["fatal"] is False
    assert "FileNotFoundError" in error["traceback"]
    (event,) = events(relay, "lm-early", "error_occurred")
    assert event["after_stop"] is True and event["fatal"] is False
    assert [e["status"] for e in events(relay, "lm-early", "training_end")] == ["stopped"]


def test_a_control_point_in_validation_cuts_it_short_and_the_test_pass_runs_in_full(
    relay, tmp_path
):
    # stepwatch.control_point() in evaluate(): a Stop during validation interrupts it
    # there; the final test pass (the same evaluate()) runs to its end, because explicit
    # control points raise only the first time. The script ends the run itself.
    need_torch()
    save = tmp_path / "model.pt"
    proc = start(
        tmp_path,
        LM_SCRIPT,
        STEPWATCH_URL=relay.url,
        STEPWATCH_RUN="lm-val",
        BATCHES="20",
        VAL_BATCHES="50",
        VAL_SLEEP="0.025",
        EVAL_CONTROL="1",
        SAVE=str(save),
        END="1",
    )
    try:
        relay.wait_for("lm-val", lambda s: s["step"] >= 40, timeout=60)  # epoch 2 validates
        cid = stop(relay, "lm-val")
        code, out, err = finish(proc)
    finally:
        proc.kill()
    assert code == 0, err
    assert out.count("VAL START val") == 2 and out.count("VAL END val") == 1, out
    assert "Exiting from training early" in out
    assert "VAL END test 50" in out and "TEST LOSS" in out
    state = relay.wait_for("lm-val", lambda s: s["status"] == "stopped")
    answers = acks(relay, "lm-val", cid)
    assert answers == [
        ("accepted", INTERRUPT_ACCEPTED),
        ("accepted", "interrupting the loop at step 40 (KeyboardInterrupt)"),
        ("done", "stopped"),
    ]
    assert state["batch_count"] == 40
    assert [e["status"] for e in events(relay, "lm-val", "training_end")] == ["stopped"]
    assert events(relay, "lm-val", "error_occurred") == []


# -- loops that check should_stop(), and the modes -----------------------------------------
EPOCH_CHECK = """
import os, time, stepwatch
from stepwatch import emit_training_start, emit_epoch_start, emit_batch_end, emit_epoch_end
from stepwatch import emit_training_end

def train(epoch):
    for batch in range(30):
        emit_batch_end(batch_idx=batch, loss=1.0 / (batch + 1), epoch=epoch)
        time.sleep(0.02)

emit_training_start(total_epochs=20, total_batches=30)
try:
    for epoch in range(1, 21):
        emit_epoch_start(epoch=epoch, total_epochs=20)
        train(epoch)
        print("VALIDATED", epoch, flush=True)
        emit_epoch_end(epoch=epoch)
        if os.environ.get("CHECK") == "1" and stepwatch.should_stop():  # finish the epoch
            print("STOPPING AFTER EPOCH", epoch, flush=True)
            break
except KeyboardInterrupt:
    print("INTERRUPTED", flush=True)
emit_training_end()
"""


def test_a_loop_that_checks_should_stop_in_its_epoch_loop_finishes_the_epoch(relay, tmp_path):
    # The Stop arrives in epoch 1, before the loop ever called should_stop(): the check in
    # the epoch loop (on the call stack) is enough for Stepwatch to leave the loop alone.
    proc = start(
        tmp_path, EPOCH_CHECK, STEPWATCH_URL=relay.url, STEPWATCH_RUN="flag-epoch", CHECK="1"
    )
    try:
        relay.wait_for("flag-epoch", lambda s: s["step"] >= 3)
        cid = stop(relay, "flag-epoch")
        code, out, err = finish(proc)
    finally:
        proc.kill()
    assert code == 0, err
    assert "INTERRUPTED" not in out
    assert "STOPPING AFTER EPOCH 1" in out and "VALIDATED 1" in out
    state = relay.wait_for("flag-epoch", lambda s: s["status"] == "stopped")
    assert state["batch_count"] == 30  # the whole epoch, none of the next
    assert acks(relay, "flag-epoch", cid) == [("accepted", FLAG_ACCEPTED), ("done", "stopped")]


def test_a_check_that_never_runs_gets_the_interrupt_an_epoch_later(relay, tmp_path):
    # CHECK unset: the loop refers to should_stop() but never calls it. Trusted at first,
    # it is interrupted once more batches than an epoch has went by without a check.
    proc = start(tmp_path, EPOCH_CHECK, STEPWATCH_URL=relay.url, STEPWATCH_RUN="dead-check")
    try:
        relay.wait_for("dead-check", lambda s: s["step"] >= 3)
        cid = stop(relay, "dead-check")
        code, out, err = finish(proc)
    finally:
        proc.kill()
    assert code == 0, err
    assert "INTERRUPTED" in out and "VALIDATED 1" in out and "VALIDATED 2" not in out
    state = relay.wait_for("dead-check", lambda s: s["status"] == "stopped")
    answers = acks(relay, "dead-check", cid)
    assert answers[0] == ("accepted", FLAG_ACCEPTED)
    assert answers[1] == (
        "accepted",
        "the loop has not checked should_stop() for an epoch since the stop: "
        f"interrupting at step {state['batch_count']} (KeyboardInterrupt)",
    )
    assert answers[2] == ("done", "stopped")
    assert 30 < state["batch_count"] < 60 and state["current_epoch"] == 2


def test_stop_mode_interrupt_interrupts_even_a_loop_that_checks(relay, tmp_path):
    proc = start(
        tmp_path,
        EPOCH_CHECK,
        STEPWATCH_URL=relay.url,
        STEPWATCH_RUN="mode-int",
        STEPWATCH_STOP="interrupt",
        CHECK="1",
    )
    try:
        relay.wait_for("mode-int", lambda s: s["step"] >= 3)
        cid = stop(relay, "mode-int")
        code, out, err = finish(proc)
    finally:
        proc.kill()
    assert code == 0, err
    assert "INTERRUPTED" in out and "VALIDATED" not in out
    state = relay.wait_for("mode-int", lambda s: s["status"] == "stopped")
    assert state["batch_count"] < 30
    answers = acks(relay, "mode-int", cid)
    assert answers[0] == (
        "accepted",
        "stop accepted; interrupting the loop at the next step (stop mode 'interrupt')",
    )
    assert answers[1] == (
        "accepted",
        f"interrupting the loop at step {state['batch_count']} (KeyboardInterrupt)",
    )
    assert answers[2] == ("done", "stopped")


NO_CHECK = """
import time
from stepwatch import emit_training_start, emit_epoch_start, emit_batch_end, emit_training_end

emit_training_start(total_epochs=2, total_batches=60)
try:
    for epoch in range(1, 3):
        emit_epoch_start(epoch=epoch, total_epochs=2)
        for batch in range(60):
            emit_batch_end(batch_idx=batch, loss=1.0, epoch=epoch)
            time.sleep(0.01)
except KeyboardInterrupt:
    print("INTERRUPTED", flush=True)
emit_training_end()
"""


def test_an_uncaught_interrupt_ends_the_script_as_ctrl_c_does(relay, tmp_path):
    proc = start(
        tmp_path,
        NO_CHECK.replace("except KeyboardInterrupt:", "except ZeroDivisionError:"),
        STEPWATCH_URL=relay.url,
        STEPWATCH_RUN="uncaught",
    )
    try:
        relay.wait_for("uncaught", lambda s: s["step"] >= 3)
        cid = stop(relay, "uncaught")
        code, out, err = finish(proc)
    finally:
        proc.kill()
    # As with Ctrl-C: the traceback, printed as usual (it names the stop), a failing exit.
    assert code != 0, err
    assert "emit_batch_end(batch_idx=batch" in err  # where the loop was
    assert "stepwatch._control.StopInterrupt: Stop from the Stepwatch dashboard" in err
    state = relay.wait_for("uncaught", lambda s: s["status"] == "stopped")
    assert command(state, cid)["status"] == "done"
    assert state["last_error"] is None
    assert [e["status"] for e in events(relay, "uncaught", "training_end")] == ["stopped"]


def test_stop_mode_flag_never_interrupts(relay, tmp_path):
    proc = start(
        tmp_path,
        NO_CHECK,
        STEPWATCH_URL=relay.url,
        STEPWATCH_RUN="mode-flag",
        STEPWATCH_STOP="flag",
    )
    try:
        relay.wait_for("mode-flag", lambda s: s["step"] >= 3)
        cid = stop(relay, "mode-flag")
        code, out, err = finish(proc)
    finally:
        proc.kill()
    assert code == 0, err
    assert "INTERRUPTED" not in out
    state = relay.wait_for("mode-flag", lambda s: s["status"] == "stopped")
    assert state["batch_count"] == 120  # the loop ran to its own end
    assert acks(relay, "mode-flag", cid) == [("accepted", FLAG_ACCEPTED), ("done", "stopped")]


def test_stop_mode_raise_raises_stop_training(relay, tmp_path):
    proc = start(
        tmp_path,
        NO_CHECK.replace("except KeyboardInterrupt", "except __import__('stepwatch').StopTraining"),
        STEPWATCH_URL=relay.url,
        STEPWATCH_RUN="mode-raise",
        STEPWATCH_STOP="raise",
    )
    try:
        relay.wait_for("mode-raise", lambda s: s["step"] >= 3)
        cid = stop(relay, "mode-raise")
        code, out, err = finish(proc)
    finally:
        proc.kill()
    assert code == 0, err
    assert "INTERRUPTED" in out  # the StopTraining branch
    state = relay.wait_for("mode-raise", lambda s: s["status"] == "stopped")
    answers = acks(relay, "mode-raise", cid)
    assert answers == [
        ("accepted", "stop accepted; raising StopTraining at the next step"),
        ("accepted", f"raising StopTraining at step {state['batch_count']}"),
        ("done", "stopped"),
    ]


SWALLOWS = """
import time
from stepwatch import emit_training_start, emit_batch_end

emit_training_start(total_epochs=1)
swallowed = []
for step in range(1, 100000):
    try:
        emit_batch_end(batch_idx=step, loss=1.0)
    except KeyboardInterrupt:
        swallowed.append(step)  # a loop that ignores Ctrl-C
        if len(swallowed) == 3:
            break
    time.sleep(0.005)
print("SWALLOWED", swallowed, flush=True)
"""


def test_a_loop_that_swallows_the_interrupt_gets_it_again_at_its_next_step(relay, tmp_path):
    proc = start(tmp_path, SWALLOWS, STEPWATCH_URL=relay.url, STEPWATCH_RUN="swallow")
    try:
        relay.wait_for("swallow", lambda s: s["step"] >= 3)
        cid = stop(relay, "swallow")
        code, out, err = finish(proc)
    finally:
        proc.kill()
    assert code == 0, err
    first = json.loads(out.split("SWALLOWED ")[1])
    assert first == [first[0], first[0] + 1, first[0] + 2]  # each next step, like Ctrl-C
    state = relay.wait_for("swallow", lambda s: s["status"] == "stopped")  # at exit
    assert acks(relay, "swallow", cid) == [
        ("accepted", INTERRUPT_ACCEPTED),
        ("accepted", f"interrupting the loop at step {first[0]} (KeyboardInterrupt)"),
        (
            "accepted",
            "the loop went on after the interrupt: interrupting again at step "
            f"{first[0] + 1} (KeyboardInterrupt)",
        ),
        ("done", "stopped"),
    ]
    assert state["batch_count"] == first[2]


WHERE = """
import time, stepwatch
from stepwatch import (emit_training_start, emit_batch_start, emit_batch_end, emit_epoch_start,
                       emit_epoch_end, emit_checkpoint_saved, emit_metric_update, emit_log,
                       emit_error_occurred, emit_training_end, training_emitter, _relay,
                       _session)

emit_training_start(total_epochs=1)
emit_batch_end(batch_idx=0, loss=1.0)
controller = _session.controller
while not controller.stop_asked:
    _relay.stop_requested()  # as the integrations ask: not the user's should_stop() check
    time.sleep(0.01)

def raises(fn):
    try:
        fn()
    except stepwatch.StopInterrupt as e:
        assert isinstance(e, KeyboardInterrupt)
        return True
    return False

# Never at these: a save or a report in progress finishes.
quiet = [
    raises(lambda: emit_epoch_end(epoch=1)),
    raises(lambda: emit_checkpoint_saved(checkpoint_path="/tmp/x.pt", epoch=1)),
    raises(lambda: emit_metric_update(name="val_loss", value=1.0)),
    raises(lambda: emit_log("hello")),
    raises(lambda: emit_error_occurred("not fatal")),
    raises(lambda: training_emitter.emit("custom_thing", x=1)),
    raises(lambda: _relay.control_point(raise_on_stop=False)),  # an integration's own
]
print("QUIET", quiet)
print("FIRST", raises(stepwatch.control_point))
print("AGAIN", raises(stepwatch.control_point))  # explicit control points: once
training = [
    raises(lambda: emit_batch_start(batch_idx=1)),
    raises(lambda: emit_epoch_start(epoch=2)),
    raises(lambda: emit_batch_end(batch_idx=1, loss=1.0)),
    raises(lambda: training_emitter.emit("batch_end", batch_idx=2, loss=1.0)),
]
print("TRAINING", training)
emit_training_end()
print("AFTER END", raises(lambda: emit_batch_end(batch_idx=3, loss=1.0)))
"""


def test_where_the_interrupt_is_raised_and_where_never(relay, tmp_path):
    proc = start(tmp_path, WHERE, STEPWATCH_URL=relay.url, STEPWATCH_RUN="where")
    try:
        relay.wait_for("where", lambda s: s["step"] >= 1)
        cid = stop(relay, "where")
        code, out, err = finish(proc)
    finally:
        proc.kill()
    assert code == 0, err
    assert "QUIET [False, False, False, False, False, False, False]" in out
    assert "FIRST True" in out and "AGAIN False" in out
    assert "TRAINING [True, True, True, True]" in out
    assert "AFTER END False" in out
    state = relay.wait_for("where", lambda s: s["status"] == "stopped")
    assert command(state, cid)["status"] == "done"


def test_the_tensorboard_shim_is_stopped_by_the_interrupt(relay, tmp_path):
    code = """
import time
from stepwatch.tensorboard import SummaryWriter

step = 0
try:
    with SummaryWriter("runs/tb-stop") as writer:
        for step in range(100000):
            writer.add_scalar("train/lr", 0.1, step)
            writer.add_scalar("train/loss", 1.0 / (step + 1), step)
            time.sleep(0.005)
except KeyboardInterrupt:
    print("INTERRUPTED AT", step, flush=True)
"""
    proc = start(tmp_path, code, STEPWATCH_URL=relay.url)
    try:
        relay.wait_for("tb-stop", lambda s: s["step"] >= 3)
        cid = stop(relay, "tb-stop")
        code_, out, err = finish(proc)
    finally:
        proc.kill()
    assert code_ == 0, err
    assert "INTERRUPTED AT" in out
    state = relay.wait_for("tb-stop", lambda s: s["status"] == "stopped")
    assert command(state, cid)["status"] == "done"
    assert state["learning_rate"] == 0.1


# -- README's load handler, for both kinds of checkpoint -------------------------------------
def readme_load_handler() -> str:
    """The ``def load_checkpoint`` block of README's "Control from the dashboard"."""
    text = (REPO / "README.md").read_text()
    section = text.split("### Control from the dashboard", 1)[1]
    block = next(b for b in section.split("```python")[1:] if "def load_checkpoint" in b)
    code = block.split("```", 1)[0]
    return code.split('stepwatch.on_command("ask"', 1)[0]


LOADS = """
import os, time, torch
from torch import nn
import stepwatch
from stepwatch import emit_training_start, emit_batch_end, emit_checkpoint_saved

torch.manual_seed(0)
model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
out = os.environ["OUT"]
first = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
second = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
torch.save(first.state_dict(), os.path.join(out, "weights.pt"))   # a state_dict
torch.save(second, os.path.join(out, "whole.pt"))                  # the whole module
print("SUMS", float(sum(p.sum() for p in first.parameters())),
      float(sum(p.sum() for p in second.parameters())), flush=True)

README_HANDLER

stepwatch.on_command("ask", lambda text: float(sum(p.sum() for p in model.parameters())))
emit_training_start(total_epochs=1)
for name in ("weights.pt", "whole.pt"):
    emit_checkpoint_saved(checkpoint_path=os.path.join(out, name), epoch=1)
step = 0
while not stepwatch.should_stop():
    step += 1
    emit_batch_end(batch_idx=step, loss=1.0)
    time.sleep(0.01)
stepwatch.emit_training_end()
"""


def test_readme_load_handler_loads_a_state_dict_and_a_whole_module(relay, tmp_path):
    need_torch()
    handler = readme_load_handler()
    assert "weights_only=False" in handler  # the point of it on torch >= 2.6
    proc = start(
        tmp_path,
        LOADS.replace("README_HANDLER", handler),
        STEPWATCH_URL=relay.url,
        STEPWATCH_RUN="loads",
        OUT=str(tmp_path),
    )
    loaded = []
    try:
        relay.wait_for("loads", lambda s: s["step"] >= 3, timeout=60)
        for name in ("weights.pt", "whole.pt"):
            path = str(tmp_path / name)
            status, body = post(
                relay, "loads", {"command": "load_checkpoint", "args": {"path": path}}
            )
            assert status == 202, body
            cid = body["command_id"]
            state = relay.wait_for(
                "loads", lambda s, c=cid: command(s, c)["status"] not in ("pending", "accepted")
            )
            assert command(state, cid)["status"] == "done", command(state, cid)
            assert state["loaded_checkpoint"] == path
            status, body = post(relay, "loads", {"command": "ask", "args": {"input": ""}})
            ask = body["command_id"]
            state = relay.wait_for("loads", lambda s, c=ask: command(s, c)["status"] == "done")
            loaded.append(command(state, ask)["output"])  # the model's weights, summed
        stop(relay, "loads")
        code, out, err = finish(proc)
    finally:
        proc.kill()
    assert code == 0, err
    expected = [float(x) for x in out.split("SUMS ")[1].split()[:2]]
    assert loaded == [pytest.approx(expected[0]), pytest.approx(expected[1])]
    assert expected[0] != pytest.approx(expected[1])


# README's first example ends the run right after the loop; the script's own code after it
# can still fail. No torch needed.
END_THEN_FAIL = r"""
import os, time
from stepwatch import emit_training_start, emit_epoch_start, emit_batch_end, emit_training_end

emit_training_start(total_epochs=3, total_batches=50)
try:
    for epoch in range(3):
        emit_epoch_start(epoch=epoch, total_epochs=3)
        for i in range(50):
            emit_batch_end(batch_idx=i, loss=1.0 / (1 + i))
            time.sleep(float(os.environ.get("STEP_S", "0")))
except KeyboardInterrupt:
    print("Exiting from training early", flush=True)
emit_training_end()
open(os.environ["BEST"], "rb")   # "load the best model": never saved
"""


@pytest.mark.parametrize("stopped", [False, True])
def test_an_error_after_emit_training_end_is_still_recorded(relay, tmp_path, stopped):
    run = f"end-then-fail-{int(stopped)}"
    best = tmp_path / "best.pt"
    proc = start(
        tmp_path,
        END_THEN_FAIL,
        STEPWATCH_URL=relay.url,
        STEPWATCH_RUN=run,
        BEST=str(best),
        STEP_S="0.05" if stopped else "0",
    )
    try:
        if stopped:
            relay.wait_for(run, lambda s: s["step"] > 3, timeout=60)
            stop(relay, run)
        code, out, err = finish(proc)
    finally:
        proc.kill()
    assert code == 1 and "FileNotFoundError" in err, err  # printed as without Stepwatch
    want = "stopped" if stopped else "completed"
    prefix = "after the stop: " if stopped else "after the run ended: "
    state = relay.wait_for(run, lambda s: (s.get("last_error") or {}).get("message"))
    assert state["status"] == want, state["status"]
    error = state["last_error"]
    assert error["message"].startswith(prefix + "FileNotFoundError"), error
    assert error["fatal"] is False and str(best) in error["message"]
    (event,) = events(relay, run, "error_occurred")
    assert event["after_end"] is True and event["after_stop"] is stopped
