"""The seed's convenience functions: ``emit_training_start(total_epochs=10)`` and friends."""

from __future__ import annotations

import os
import traceback as _tb
from time import time as _now
from typing import Any

from . import _session
from ._emitter import training_emitter
from ._meta import run_meta


def _emit(event: str, **fields: Any) -> dict[str, Any]:
    return training_emitter.emit(event, **{k: v for k, v in fields.items() if v is not None})


def emit_training_start(
    total_epochs: int | None = None,
    total_batches: int | None = None,
    config: dict[str, Any] | None = None,
    name: str | None = None,
    meta: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Starts the run; ``meta`` (host, versions, command line, git commit) is filled in."""
    if meta is None:
        try:
            meta = run_meta()
        except Exception:
            meta = None
    return _emit(
        "training_start",
        total_epochs=total_epochs,
        total_batches=total_batches,
        config=config,
        name=name,
        meta=meta,
        **extra,
    )


def emit_training_end(status: str | None = None, **extra: Any) -> dict[str, Any]:
    """Ends the run: ``completed`` by default, ``stopped`` after a stop from the dashboard."""
    stopped = _session.finish_stop()
    if status is None:
        status = "stopped" if stopped else "completed"
    return _emit("training_end", status=status, **extra)


def emit_epoch_start(epoch: int, total_epochs: int | None = None, **extra: Any) -> dict[str, Any]:
    return _emit("epoch_start", epoch=epoch, total_epochs=total_epochs, **extra)


def emit_epoch_end(
    epoch: int, metrics: dict[str, Any] | None = None, **extra: Any
) -> dict[str, Any]:
    return _emit("epoch_end", epoch=epoch, metrics=metrics, **extra)


def emit_batch_start(batch_idx: int, epoch: int | None = None, **extra: Any) -> dict[str, Any]:
    return _emit("batch_start", batch_idx=batch_idx, epoch=epoch, **extra)


def emit_batch_end(
    batch_idx: int,
    loss: float | None = None,
    lr: float | None = None,
    step: int | None = None,
    epoch: int | None = None,
    metrics: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    # The per-step call: the record made here, in one dict (what _emit makes in three).
    record = {"event": "batch_end", "time": _now(), "batch_idx": batch_idx}
    if loss is not None:
        record["loss"] = loss
    if lr is not None:
        record["lr"] = lr
    if step is not None:
        record["step"] = step
    if epoch is not None:
        record["epoch"] = epoch
    if metrics is not None:
        record["metrics"] = metrics
    if extra:
        if "event" in extra:
            raise TypeError("emit_batch_end() got an event= field")
        record.update({k: v for k, v in extra.items() if v is not None})
    return training_emitter.dispatch(record)


def emit_checkpoint_saved(
    checkpoint_path: str,
    epoch: int | None = None,
    step: int | None = None,
    size_bytes: int | None = None,
    metrics: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    if size_bytes is None:
        try:
            size_bytes = os.path.getsize(checkpoint_path)
        except OSError:
            size_bytes = None
    return _emit(
        "checkpoint_saved",
        checkpoint_path=str(checkpoint_path),
        epoch=epoch,
        step=step,
        size_bytes=size_bytes,
        metrics=metrics,
        **extra,
    )


def emit_checkpoint_loaded(
    checkpoint_path: str, epoch: int | None = None, step: int | None = None, **extra: Any
) -> dict[str, Any]:
    return _emit(
        "checkpoint_loaded", checkpoint_path=str(checkpoint_path), epoch=epoch, step=step, **extra
    )


def emit_metric_update(
    name: str | None = None,
    value: float | None = None,
    step: int | None = None,
    metrics: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    return _emit("metric_update", name=name, value=value, step=step, metrics=metrics, **extra)


def emit_error_occurred(
    error: BaseException | str, traceback: str | None = None, fatal: bool = False, **extra: Any
) -> dict[str, Any]:
    if isinstance(error, BaseException):
        message = f"{type(error).__name__}: {error}"
        if traceback is None:
            traceback = "".join(_tb.format_exception(type(error), error, error.__traceback__))
    else:
        message = str(error)
    return _emit("error_occurred", message=message, traceback=traceback, fatal=fatal, **extra)


def emit_log(
    message: str, level: str = "info", logger: str | None = None, **extra: Any
) -> dict[str, Any]:
    return _emit("log", message=message, level=level, logger=logger, **extra)
