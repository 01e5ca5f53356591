"""``WebUIHooks``: subscribes to an emitter and keeps the seed's current-state dict."""

from __future__ import annotations

import math
import threading
from typing import Any

from ._emitter import TrainingEventEmitter


class WebUIHooks:
    """Keeps the current training state for a UI, as in the seed::

        hooks = WebUIHooks()
        hooks.attach(training_emitter)
        hooks.get_current_state()
        # {'current_epoch': 3, 'total_epochs': 10, 'current_batch': 250,
        #  'current_loss': 2.5432, 'learning_rate': 9e-05, 'is_training': True, ...}

    The relay and dashboard compute the full state with the shared Rust reducer; this
    mirror covers the seed's fields plus status, step and best loss.
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

    def _on_event(self, e: dict) -> None:
        name = e.get("event")
        s = self._state
        with self._lock:
            if name == "training_start":
                s["is_training"] = True
                s["status"] = "running"
                for k in ("total_epochs", "total_batches"):
                    if e.get(k) is not None:
                        s[k] = e[k]
            elif name == "training_end":
                s["is_training"] = False
                s["status"] = e.get("status") or "completed"
            elif name == "epoch_start":
                s["current_epoch"] = e.get("epoch", s["current_epoch"])
                if e.get("total_epochs") is not None:
                    s["total_epochs"] = e["total_epochs"]
                s["current_batch"] = 0
            elif name == "epoch_end":
                s["current_epoch"] = e.get("epoch", s["current_epoch"])
            elif name == "batch_end":
                self._batches += 1
                s["step"] = e.get("step") or self._batches
                s["current_batch"] = e.get("batch_idx", s["current_batch"])
                if e.get("epoch") is not None:
                    s["current_epoch"] = e["epoch"]
                if e.get("lr") is not None:
                    s["learning_rate"] = e["lr"]
                loss = e.get("loss")
                if loss is not None:
                    try:
                        loss = float(loss)
                    except (TypeError, ValueError):
                        loss = None
                if loss is not None:
                    s["current_loss"] = loss
                    if math.isfinite(loss) and (s["best_loss"] is None or loss < s["best_loss"]):
                        s["best_loss"] = loss
                if s["status"] == "pending":
                    s["status"] = "running"
                    s["is_training"] = True
            elif name == "checkpoint_saved":
                s["checkpoints"] = [*s["checkpoints"][-99:], e.get("checkpoint_path")]
            elif name == "error_occurred":
                s["last_error"] = e.get("message")
                if e.get("fatal"):
                    s["status"] = "failed"
                    s["is_training"] = False
