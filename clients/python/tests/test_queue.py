"""A full in-memory queue moves its oldest events to the spool on disk, in order, and
drops nothing while the spool has room. Only when the disk refuses does it drop, by the
rule shared with the Rust SDK: the oldest event that is not part of the run's lifecycle
goes; start, end, checkpoints, errors and command answers stay (beyond the cap if need
be). And the sender thread is woken by an emit after an idle spell, not left to its
linger."""

from __future__ import annotations

import json
import threading
import time

import pytest
from conftest import Relay

from stepwatch._sender import RelaySender


@pytest.fixture
def sender(monkeypatch, tmp_path):
    # No sender thread: the queue holds what it is given, so the rule can be watched; and
    # a spool the disk refuses (its folder is a file), so the queue has to drop.
    monkeypatch.setattr(RelaySender, "_loop", lambda self: None)
    (tmp_path / "refused").write_text("")
    return RelaySender("http://127.0.0.1:9", "queue", queue_size=3, spool_dir=tmp_path / "refused")


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


def events_of(relay: Relay, run: str) -> list[dict]:
    return relay.get(f"/api/runs/{run}/events?limit=10000")


def test_a_full_queue_spills_to_the_spool_in_order_and_drops_nothing(monkeypatch, tmp_path):
    monkeypatch.setattr(RelaySender, "_loop", lambda self: None)  # nothing sent
    s = RelaySender("http://127.0.0.1:9", "spill", queue_size=8, spool_dir=tmp_path)
    s({"event": "training_start"})
    for i in range(100):
        s({"event": "batch_end", "batch_idx": i, "loss": 1.0 / (i + 1)})
    assert s.dropped == 0 and s.spilled > 80 and len(s._queue) <= 8
    spooled = [json.loads(line) for line in s.spool.path.read_text().splitlines()]
    assert len(spooled) == s.spilled
    held = [*spooled, *s._queue]
    assert held[0]["event"] == "training_start"
    assert [e["batch_idx"] for e in held[1:]] == list(range(100))
    # stamped in order: the spool's seq increase, the queue's come later
    assert [e["seq"] for e in spooled] == list(range(1, len(spooled) + 1))
    assert s._appended == 101


def test_spilled_events_all_arrive_in_order_once_the_sender_runs(relay, monkeypatch, tmp_path):
    gate = threading.Event()
    loop = RelaySender._loop

    def late_loop(self: RelaySender) -> None:
        gate.wait(30)
        loop(self)

    monkeypatch.setattr(RelaySender, "_loop", late_loop)
    s = RelaySender(relay.url, "spilled", queue_size=50, spool_dir=tmp_path / "spool")
    try:
        s({"event": "training_start"})
        for i in range(2000):
            s({"event": "batch_end", "batch_idx": i, "loss": 0.5})
        s({"event": "training_end"})
        assert s.dropped == 0 and s.spilled >= 1900
        gate.set()
        assert s.flush(30), s.last_error
        events = events_of(relay, "spilled")
        assert [e["event"] for e in (events[0], events[-1])] == ["training_start", "training_end"]
        assert [e["batch_idx"] for e in events[1:-1]] == list(range(2000))
        assert not s.spool.pending() and s.dropped == 0
    finally:
        s.close(timeout=1)


def test_a_batch_the_relay_did_not_take_goes_ahead_of_what_was_spilled_meanwhile(
    monkeypatch, tmp_path
):
    monkeypatch.setattr(RelaySender, "_loop", lambda self: None)
    s = RelaySender("http://127.0.0.1:9", "order", queue_size=4, spool_dir=tmp_path)
    for i in range(3):
        s({"event": "batch_end", "batch_idx": i})
    taken = s._take(10)  # the sender thread's batch, in flight
    assert taken is not None and len(taken) == 3
    for i in range(3, 20):  # the queue fills meanwhile: the trainer spills
        s({"event": "batch_end", "batch_idx": i})
    assert s.spool.pending()
    s._keep(taken)  # the relay did not take it
    lines = s.spool.path.read_text().splitlines()
    spooled = [json.loads(line) for line in lines]
    held = [*spooled, *s._queue]
    assert [e["batch_idx"] for e in held] == list(range(20))
    assert [e["seq"] for e in spooled] == sorted(e["seq"] for e in spooled)


def test_an_emit_after_an_idle_spell_is_sent_long_before_the_linger(relay, tmp_path):
    linger = 3.0
    s = RelaySender(relay.url, "woken", spool_dir=tmp_path / "spool", linger=linger)
    try:
        s({"event": "training_start"})
        relay.wait_for("woken", lambda st: st["last_id"] >= 1, timeout=linger * 2)
        time.sleep(linger / 2 + 0.3)  # idle for half the linger: the next emit goes at once
        t0 = time.monotonic()
        s({"event": "batch_end", "batch_idx": 1, "loss": 0.5})
        relay.wait_for("woken", lambda st: st["last_id"] >= 2, timeout=linger * 2)
        took = time.monotonic() - t0
        assert took < linger / 3, f"the emit waited {took:.2f} s (linger {linger} s)"
    finally:
        s.close(timeout=1)


def test_events_with_company_wait_for_the_linger_but_a_full_batch_goes_at_once(relay, tmp_path):
    s = RelaySender(relay.url, "batched", spool_dir=tmp_path / "spool", linger=30.0)
    try:
        for i in range(s._worth + 10):  # busy: more than a batch worth sending
            s({"event": "batch_end", "batch_idx": i})
        relay.wait_for("batched", lambda st: st["last_id"] >= s._worth, timeout=10)
    finally:
        s.close(timeout=5)
