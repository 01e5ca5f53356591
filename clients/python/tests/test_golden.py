"""The golden fixtures shared with the Rust reducer (``crates/events/tests/golden``): the
same events through ``WebUIHooks`` give the same state, field by field."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO

from stepwatch import TrainingEventEmitter, WebUIHooks

GOLDEN = REPO / "crates" / "events" / "tests" / "golden"
FIXTURES = sorted(GOLDEN.glob("*.json"))
#: Checked on the Rust side only: WebUIHooks keeps no command list.
RUST_ONLY = {"commands"}


def same(got: Any, want: Any) -> bool:
    if isinstance(want, float) or isinstance(got, float):
        return isinstance(got, (int, float)) and math.isclose(got, want)
    return type(got) is type(want) and got == want


def test_the_fixtures_are_there():
    assert len(FIXTURES) >= 5, GOLDEN


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: Path(p).stem)
def test_webuihooks_folds_each_fixture_as_the_reducer_does(path: Path):
    fixture = json.loads(path.read_text())
    emitter = TrainingEventEmitter()
    hooks = WebUIHooks().attach(emitter)
    for i, step in enumerate(fixture["steps"]):
        for raw in step["events"]:
            fields = {k: v for k, v in raw.items() if k != "event"}
            emitter.emit(raw["event"], **fields)
        state = hooks.get_current_state()
        for key, want in step["expect"].items():
            if key in RUST_ONLY:
                continue
            assert key in state, f"WebUIHooks has no field {key!r}: fix the fixture"
            got = state[key]
            assert same(got, want), f"{path.name} step {i}: {key} = {got!r}, want {want!r}"


def test_a_step_of_zero_is_not_missing_and_paused_comes_from_the_ack():
    emitter = TrainingEventEmitter()
    hooks = WebUIHooks().attach(emitter)
    emitter.emit("batch_end", batch_idx=0, step=0, loss=1.0)
    emitter.emit("batch_end", batch_idx=1, step=0, loss=1.0)
    assert hooks.get_current_state()["step"] == 0
    emitter.emit("command_ack", command_id="c1", command="pause", status="accepted")
    assert hooks.get_current_state()["status"] == "paused"
    emitter.emit("command_ack", command_id="c1", command="pause", status="done")
    assert hooks.get_current_state()["status"] == "running"
