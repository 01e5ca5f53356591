"""``WebUIHooks``: subscribes to an emitter and keeps the seed's current-state dict."""

from __future__ import annotations

import math
import threading
from typing import Any, Callable

from ._emitter import TrainingEventEmitter

#: As the reducer: checkpoints kept (newest last), commands remembered.
MAX_CHECKPOINTS = 100
MAX_COMMANDS = 100
#: Statuses a run is still going in (a pause applies only then).
LIVE = ("pending", "running", "paused")
#: A command's final answers: later acks for it change nothing.
FINAL = ("done", "rejected", "failed", "cancelled")


class WebUIHooks:
    """Keeps the current training state for a UI, as in the seed::

        hooks = WebUIHooks()
        hooks.attach(training_emitter)
        hooks.get_current_state()
        # {'current_epoch': 3, 'total_epochs': 10, 'current_batch': 250,
        #  'current_loss': 2.5432, 'learning_rate': 9e-05, 'is_training': True, ...}

    The relay and dashboard compute the full state with the shared Rust reducer; this
    mirror covers the seed's fields plus status (``paused`` too, from the trainer's
    answers to pause / resume), step and best loss, by the reducer's rules: the golden
    fixtures in ``crates/events/tests/golden`` hold both to the same answers.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._state: dict[str, Any] = {
            "current_epoch": 0,
            "total_epochs": None,
            "current_batch": 0,
            "total_batches": None,
            "current_loss": None,
            "learning_rate": None,
            "is_training": False,
            "status": "pending",
            "step": 0,
            "best_loss": None,
            "checkpoints": [],
            "last_error": None,
        }
        self._batches = 0
        self._commands: dict[str, str] = {}  # command id -> its latest status
        self._emitter: TrainingEventEmitter | None = None

    def attach(self, emitter: TrainingEventEmitter) -> WebUIHooks:
        """Subscribes to every event of ``emitter``; returns self."""
        self._emitter = emitter
        emitter.on("*", self._on_event)
        return self

    def detach(self) -> None:
        if self._emitter is not None:
            self._emitter.off("*", self._on_event)
            self._emitter = None

    def get_current_state(self) -> dict[str, Any]:
        """A copy of the current state."""
        with self._lock:
            state = dict(self._state)
            state["checkpoints"] = list(self._state["checkpoints"])
            return state

    def _on_event(self, e: dict[str, Any]) -> None:
        name = e.get("event")
        with self._lock:
            fold = _FOLDS.get(name) if isinstance(name, str) else None
            if fold is not None:
                fold(self, e)

    # -- the reducer's rules (crates/events/src/state.rs), field by field -------------
    def _mark_running(self) -> None:
        s = self._state
        if s["status"] == "pending":
            s["status"] = "running"
            s["is_training"] = True

    def _training_start(self, e: dict[str, Any]) -> None:
        s = self._state
        s["is_training"] = True
        s["status"] = "running"
        for k in ("total_epochs", "total_batches"):
            if e.get(k) is not None:
                s[k] = e[k]

    def _training_end(self, e: dict[str, Any]) -> None:
        s = self._state
        s["is_training"] = False
        status = e.get("status")
        s["status"] = status if status in ("failed", "stopped") else "completed"

    def _epoch_start(self, e: dict[str, Any]) -> None:
        s = self._state
        self._mark_running()
        if e.get("epoch") is not None:
            s["current_epoch"] = e["epoch"]
        if e.get("total_epochs") is not None:
            s["total_epochs"] = e["total_epochs"]
        s["current_batch"] = 0

    def _epoch_end(self, e: dict[str, Any]) -> None:
        if e.get("epoch") is not None:
            self._state["current_epoch"] = e["epoch"]

    def _batch_start(self, e: dict[str, Any]) -> None:
        s = self._state
        self._mark_running()
        if e.get("epoch") is not None:
            s["current_epoch"] = e["epoch"]
        if e.get("batch_idx") is not None:
            s["current_batch"] = e["batch_idx"]

    def _batch_end(self, e: dict[str, Any]) -> None:
        s = self._state
        self._mark_running()
        self._batches += 1
        step = e.get("step")
        s["step"] = step if step is not None else self._batches  # a step of 0 is a step
        if e.get("epoch") is not None:
            s["current_epoch"] = e["epoch"]
        if e.get("batch_idx") is not None:
            s["current_batch"] = e["batch_idx"]
        if e.get("lr") is not None:
            s["learning_rate"] = e["lr"]
        loss = _number(e.get("loss"))
        if loss is not None:
            s["current_loss"] = loss
            if math.isfinite(loss) and (s["best_loss"] is None or loss < s["best_loss"]):
                s["best_loss"] = loss

    def _checkpoint_saved(self, e: dict[str, Any]) -> None:
        path = e.get("checkpoint_path")
        if path is None:
            return
        # A save to a path already listed overwrote that file: one entry, moved last.
        kept = [p for p in self._state["checkpoints"] if p != path]
        self._state["checkpoints"] = [*kept, path][-MAX_CHECKPOINTS:]

    def _error_occurred(self, e: dict[str, Any]) -> None:
        s = self._state
        s["last_error"] = e.get("message")
        if e.get("fatal"):
            s["status"] = "failed"
            s["is_training"] = False

    def _command(self, e: dict[str, Any]) -> None:
        cid = e.get("command_id")
        if isinstance(cid, str):
            self._commands[cid] = "pending"

    def _command_ack(self, e: dict[str, Any]) -> None:
        """The run's status follows the trainer's answers: ``pause`` accepted is paused,
        ``pause`` / ``resume`` done is running again; a final answer is final."""
        cid = e.get("command_id")
        if not isinstance(cid, str) or self._commands.get(cid) in FINAL:
            return
        status = e.get("status") or "accepted"
        self._commands[cid] = status
        if len(self._commands) > MAX_COMMANDS:
            self._commands.pop(next(iter(self._commands)))
        s = self._state
        command = e.get("command")
        if command == "pause" and status == "accepted" and s["status"] in LIVE:
            s["status"] = "paused"
        elif command in ("pause", "resume") and status == "done" and s["status"] == "paused":
            s["status"] = "running"


def _number(value: Any) -> float | None:
    if value is None:
        return None
    try:
        return float(value)  # "NaN" / "Infinity" as the wire writes them too
    except (TypeError, ValueError):
        return None


_FOLDS: dict[str, Callable[[WebUIHooks, dict[str, Any]], None]] = {
    "training_start": WebUIHooks._training_start,
    "training_end": WebUIHooks._training_end,
    "epoch_start": WebUIHooks._epoch_start,
    "epoch_end": WebUIHooks._epoch_end,
    "batch_start": WebUIHooks._batch_start,
    "batch_end": WebUIHooks._batch_end,
    "checkpoint_saved": WebUIHooks._checkpoint_saved,
    "error_occurred": WebUIHooks._error_occurred,
    "command": WebUIHooks._command,
    "command_ack": WebUIHooks._command_ack,
}
