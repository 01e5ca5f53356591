"""Logs as ``log`` events: a ``logging.Handler``, and optional capture of stdout/stderr
(the trainer's own output still reaches its terminal)."""

from __future__ import annotations

import logging
import sys
import threading
from typing import Any, TextIO

from ._emitter import TrainingEventEmitter, training_emitter


class LogHandler(logging.Handler):
    """Forwards log records to the emitter as ``log`` events (level, message, logger)."""

    def __init__(
        self, emitter: TrainingEventEmitter = training_emitter, level: int = logging.INFO
    ) -> None:
        super().__init__(level)
        self._emitter = emitter
        self.setFormatter(logging.Formatter("%(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        if record.name == "stepwatch" or record.name.startswith("stepwatch."):
            return  # never forward our own warnings about delivery
        try:
            message = self.format(record)
            self._emitter.emit(
                "log", level=record.levelname.lower(), message=message, logger=record.name
            )
        except Exception:
            self.handleError(record)


class _Tee:
    """Writes through to the real stream and emits each complete line as a log event."""

    def __init__(self, stream: TextIO, emitter: TrainingEventEmitter, level: str, name: str):
        self._stream = stream
        self._emitter = emitter
        self._level = level
        self._name = name
        self._buf = ""
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        n = self._stream.write(text)
        with self._lock:
            self._buf += text
            *lines, self._buf = self._buf.split("\n")
        for line in lines:
            if line.strip():
                try:
                    self._emitter.emit("log", level=self._level, message=line, logger=self._name)
                except Exception:
                    pass
        return n

    def flush(self) -> None:
        self._stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def capture_output(emitter: TrainingEventEmitter = training_emitter) -> None:
    """Also sends every line printed to stdout (info) and stderr (warning) as log events."""
    if not isinstance(sys.stdout, _Tee):
        sys.stdout = _Tee(sys.stdout, emitter, "info", "stdout")
    if not isinstance(sys.stderr, _Tee):
        sys.stderr = _Tee(sys.stderr, emitter, "warning", "stderr")


def release_output() -> None:
    """Undoes :func:`capture_output`."""
    if isinstance(sys.stdout, _Tee):
        sys.stdout = sys.stdout._stream
    if isinstance(sys.stderr, _Tee):
        sys.stderr = sys.stderr._stream
