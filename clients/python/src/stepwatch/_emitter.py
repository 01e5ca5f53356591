"""The event emitter: ``emit``, ``on``, ``off``, ``get_history`` (the seed's API)."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Any, Callable

_log = logging.getLogger("stepwatch")

#: Events of each name kept for ``get_history``.
DEFAULT_HISTORY = 1000
#: Events after which the emitting thread reaches a control point (pause, commands, stop);
#: ``training_start`` only for a retried job's resume (``STEPWATCH_RESUME_FROM``).
CONTROL_EVENTS = frozenset(("batch_end", "batch_start", "epoch_start", "training_start"))

Listener = Callable[[dict[str, Any]], Any]


class TrainingEventEmitter:
    """Dispatches training events to listeners, keeps a bounded history per event name.

    A listener that raises is logged and skipped: the training loop never sees it.
    """

    def __init__(self, history: int = DEFAULT_HISTORY) -> None:
        self._listeners: dict[str, list[Listener]] = {}
        self._any: list[Listener] = []
        self._history: dict[str, deque[dict[str, Any]]] = {}
        self._history_len = history
        self._lock = threading.Lock()
        #: Called with the record on the emitting thread after every event in
        #: :data:`CONTROL_EVENTS` (the control points).
        self.control_hook: Callable[[dict[str, Any]], None] | None = None

    def on(self, event: str, callback: Listener) -> Listener:
        """Calls ``callback(event_data)`` for every ``event``; ``"*"`` means every event."""
        with self._lock:
            if event == "*":
                self._any = [*self._any, callback]
            else:
                self._listeners[event] = [*self._listeners.get(event, []), callback]
        return callback

    def off(self, event: str, callback: Listener) -> None:
        """Removes a listener added with ``on``."""
        with self._lock:
            if event == "*":
                self._any = [c for c in self._any if c is not callback]
            else:
                self._listeners[event] = [
                    c for c in self._listeners.get(event, []) if c is not callback
                ]

    def emit(self, event: str, **data: Any) -> dict[str, Any]:
        """Records and dispatches one event; returns the event's data dict."""
        return self.dispatch({"event": event, "time": time.time(), **data})

    def dispatch(self, record: dict[str, Any]) -> dict[str, Any]:
        """Records and dispatches an event already made (``record["event"]`` its name,
        ``record["time"]`` its time), as :meth:`emit` does; returns it."""
        event = record["event"]
        hist = self._history.get(event)
        if hist is None:
            hist = self._history.setdefault(event, deque(maxlen=self._history_len))
        hist.append(record)
        named = self._listeners.get(event)
        if named:
            for cb in named:
                try:
                    cb(record)
                except Exception:  # a listener must never break training
                    self._failed(cb, record)
        for cb in self._any:
            try:
                cb(record)
            except Exception:
                self._failed(cb, record)
        hook = self.control_hook
        if hook is not None and event in CONTROL_EVENTS:
            # May block while paused; after a Stop may raise KeyboardInterrupt (or
            # StopTraining when asked to), deliberately: see stepwatch._control.
            hook(record)
        return record

    @staticmethod
    def _failed(cb: Listener, record: dict[str, Any]) -> None:
        _log.exception("stepwatch listener %r failed on %s", cb, record.get("event"))

    @staticmethod
    def _call(cb: Listener, record: dict[str, Any]) -> None:
        try:
            cb(record)
        except Exception:  # a listener must never break training
            _log.exception("stepwatch listener %r failed on %s", cb, record.get("event"))

    def get_history(
        self, event: str | None = None, limit: int | None = None
    ) -> list[dict[str, Any]]:
        """The most recent events named ``event`` (all names if None), oldest first."""
        if event is None:
            items = sorted(
                (r for h in list(self._history.values()) for r in list(h)),
                key=lambda r: r["time"],
            )
        else:
            items = list(self._history.get(event, ()))
        if limit is not None:
            items = items[-limit:] if limit > 0 else []
        return items

    def clear_history(self) -> None:
        """Forgets the history (listeners stay)."""
        self._history.clear()


#: The process-wide emitter the seed's code imports.
training_emitter = TrainingEventEmitter()
