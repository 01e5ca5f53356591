"""The encoder process writes byte for byte what this process would, and when it cannot
(values ``marshal`` does not carry, a helper that dies or never starts) the batch is
encoded here, with nothing lost or changed."""

from __future__ import annotations

import math
import time

import pytest

from stepwatch import _encoder
from stepwatch._encoder import MIN_BATCH, Encoder
from stepwatch._wire import stamped_blob


def records(n: int, **extra: object) -> list[dict]:
    return [
        {"event": "batch_end", "time": 1.7e9 + i / 7, "batch_idx": i, "loss": 1 / (i + 1), **extra}
        for i in range(n)
    ]


def ready(enc: Encoder, batch: list[dict]) -> None:
    """Asks until the helper answers (the first batches are encoded here while it starts)."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if enc.blob(batch, "py-test", 1) is not None:
            return
        time.sleep(0.05)
    pytest.fail("the encoder process never answered")


@pytest.fixture
def enc(monkeypatch):
    monkeypatch.setenv("STEPWATCH_ENCODER", "process")
    e = Encoder()
    yield e
    e.close()


def test_the_helper_writes_what_this_process_would(enc):
    odd = {
        "metrics": {"acc": 0.5, "nested": [1, 2.5, None, True, 'é\n"x"']},
        "nan": math.nan,
        "inf": -math.inf,
        "text": "snowman ☃",
        "src": "someone else's",  # replaced by ours, as a copy would
    }
    batch = records(MIN_BATCH + 10, **odd)
    ready(enc, batch)
    got = enc.blob(batch, "py-abc", 41)
    assert got is not None and got.count == len(batch)
    assert got.data == stamped_blob(batch, "py-abc", 41).data
    assert got.lines()[0].startswith(b'{"event":"batch_end"')  # (the src was in the record)


def test_what_marshal_cannot_carry_and_small_batches_are_encoded_here(enc):
    class Tensor:  # stands in for a framework's scalar
        def item(self) -> float:
            return 0.25

    batch = records(MIN_BATCH)
    ready(enc, batch)
    assert enc.blob(records(MIN_BATCH, loss=Tensor()), "py-t", 1) is None
    assert enc.blob(records(MIN_BATCH - 1), "py-t", 1) is None
    line = stamped_blob(records(1, loss=Tensor()), "py-t", 1).lines()[0]
    assert b'"loss":0.25' in line


def test_a_helper_that_dies_leaves_the_encoding_here(enc):
    batch = records(MIN_BATCH)
    ready(enc, batch)
    proc = enc._proc
    assert proc is not None
    proc.kill()
    proc.wait(10)
    assert enc.blob(batch, "py-t", 1) is None  # noticed: given up for good
    assert enc.blob(batch, "py-t", 1) is None and enc._proc is None


def test_a_helper_that_cannot_start_leaves_the_encoding_here(enc, monkeypatch):
    monkeypatch.setattr(_encoder.sys, "executable", "/nonexistent/python")
    batch = records(MIN_BATCH)
    assert enc.blob(batch, "py-t", 1) is None
    assert enc._failed and enc.blob(batch, "py-t", 1) is None


def test_stepwatch_encoder_thread_keeps_it_in_this_process(monkeypatch):
    monkeypatch.setenv("STEPWATCH_ENCODER", "thread")
    e = Encoder()
    assert e.blob(records(MIN_BATCH * 2), "py-t", 1) is None and e._proc is None
