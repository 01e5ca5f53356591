"""The in-memory queue's rule when full, shared with the Rust SDK: the oldest event that is
not part of the run's lifecycle goes; start, end, checkpoints, errors and command answers
stay (beyond the cap if need be)."""

from __future__ import annotations

import pytest

from stepwatch._sender import RelaySender


@pytest.fixture
def sender(monkeypatch, tmp_path):
    # No sender thread: the queue holds what it is given, so the rule can be watched.
    monkeypatch.setattr(RelaySender, "_loop", lambda self: None)
    return RelaySender("http://127.0.0.1:9", "queue", queue_size=3, spool_dir=tmp_path)


def queued(s: RelaySender) -> list[str]:
    return [f"b{e['batch_idx']}" if e["event"] == "batch_end" else e["event"] for e in s._queue]


def test_a_full_queue_drops_the_oldest_droppable_event_and_keeps_the_lifecycle(sender):
    sender({"event": "training_start"})
    sender({"event": "batch_end", "batch_idx": 1})
    sender({"event": "batch_end", "batch_idx": 2})
    sender({"event": "batch_end", "batch_idx": 3})
    assert queued(sender) == ["training_start", "b2", "b3"]
    sender({"event": "training_end"})
    assert queued(sender) == ["training_start", "b3", "training_end"]
    sender({"event": "batch_end", "batch_idx": 4})
    assert queued(sender) == ["training_start", "training_end", "b4"]
    assert sender.dropped == 3


def test_a_queue_of_lifecycle_events_drops_a_new_droppable_one_and_keeps_a_lifecycle_one(
    sender,
):
    for name in ("training_start", "checkpoint_saved", "command_ack"):
        sender({"event": name})
    sender({"event": "log", "message": "routine"})
    assert queued(sender) == ["training_start", "checkpoint_saved", "command_ack"]
    sender({"event": "error_occurred", "message": "kept"})
    assert queued(sender)[-1] == "error_occurred"
    assert sender.dropped == 1
    # Every event handed in is accounted for: queued or dropped.
    assert sender._appended == len(sender._queue) + sender._queue_dropped
