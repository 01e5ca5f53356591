"""The seed's example code, unchanged but for its import line, against a real relay."""

from __future__ import annotations

import math

SEED_TRAINER = """
from stepwatch import training_emitter
from stepwatch import WebUIHooks
from stepwatch import (
    emit_training_start, emit_training_end, emit_epoch_start, emit_epoch_end,
    emit_batch_end, emit_checkpoint_saved)

# the web UI subscribes to events
seen = []
def update_loss_chart(loss):
    seen.append(loss)

def on_batch_update(event_data):
    update_loss_chart(event_data['loss'])

training_emitter.on('batch_end', on_batch_update)

webui_hooks = WebUIHooks()
webui_hooks.attach(training_emitter)

# the trainer emits events
training_emitter.emit('batch_end', batch_idx=100, loss=2.5, lr=0.0001)

emit_training_start(total_epochs=10)
for epoch in range(1, 4):
    emit_epoch_start(epoch=epoch, total_epochs=10)
    losses = []
    for batch_idx in range(50):
        loss = 3.0 / (1 + epoch + batch_idx / 50)
        losses.append(loss)
        emit_batch_end(batch_idx=batch_idx, loss=loss, lr=0.0001)
    avg_loss = sum(losses) / len(losses)
    emit_epoch_end(epoch=epoch, metrics={'avg_loss': avg_loss})
    emit_checkpoint_saved(checkpoint_path="./model.pt", epoch=epoch, step=epoch * 50)

state = webui_hooks.get_current_state()
history = training_emitter.get_history('batch_end', limit=100)
assert len(history) == 100, len(history)
assert history[-1]['batch_idx'] == 49
assert 'loss' in history[0] and 'lr' in history[0]
assert state['current_epoch'] == 3 and state['total_epochs'] == 10, state
assert state['current_batch'] == 49 and state['is_training'] is True, state
assert state['learning_rate'] == 0.0001
assert len(seen) == 151
emit_training_end()
print("SEED OK")
"""


def test_seed_code_runs_unchanged_and_its_events_arrive(relay, run_script):
    proc = run_script(SEED_TRAINER, env={"STEPWATCH_URL": relay.url, "STEPWATCH_RUN": "seed-run"})
    assert proc.returncode == 0, proc.stderr
    assert "SEED OK" in proc.stdout
    # The atexit flush delivered everything before the process ended.
    state = relay.get("/api/runs/seed-run")
    assert state["status"] == "completed"
    assert state["total_epochs"] == 10
    assert state["current_epoch"] == 3
    assert state["current_batch"] == 49
    assert state["batch_count"] == 151
    assert state["learning_rate"] == 0.0001
    assert math.isclose(state["current_loss"], 3.0 / (1 + 3 + 49 / 50))
    # Three saves to one path are one checkpoint: the latest (the reducer keeps one row
    # per path), while the events keep all three.
    assert [(c["path"], c["epoch"]) for c in state["checkpoints"]] == [("./model.pt", 3)]
    events = relay.get("/api/runs/seed-run/events?limit=1000")
    assert [e["id"] for e in events] == list(range(1, len(events) + 1))
    names = [e["event"] for e in events]
    assert names.count("batch_end") == 151
    assert names.count("epoch_end") == 3
    assert names.count("checkpoint_saved") == 3
    assert names[-1] == "training_end"
    assert all(e["src"].startswith("py-") for e in events)
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))


def test_nan_loss_arrives_as_nan(relay, run_script):
    code = """
import stepwatch
stepwatch.connect(run="nan-run")
stepwatch.emit_batch_end(batch_idx=0, loss=float('nan'), lr=float('inf'))
stepwatch.emit_batch_end(batch_idx=1, loss=1.0, metrics={'g': float('-inf')})
assert stepwatch.flush(10)
"""
    proc = run_script(code, env={"STEPWATCH_URL": relay.url})
    assert proc.returncode == 0, proc.stderr
    events = relay.get("/api/runs/nan-run/events?event=batch_end")
    assert events[0]["loss"] == "NaN"
    assert events[0]["lr"] == "Infinity"
    assert events[1]["metrics"]["g"] == "-Infinity"
    assert relay.get("/api/runs/nan-run")["loss_non_finite"] is True
