"""Resuming a retried job: on a retry the agent sets ``STEPWATCH_RESUME_FROM`` to the
run's last reported checkpoint, and the job reports to the same run (``STEPWATCH_RUN``),
so the charts go on at the checkpoint's step.

Who loads it, once per process, whichever comes first:

- the script itself: :func:`resume_from` returns the path (and tells the SDK the script
  loads it, so nothing else does);
- a framework integration that resumes its trainer (Hugging Face
  ``resume_from_checkpoint``, Lightning ``ckpt_path``) calls :func:`claim`;
- else, at the run's first control point (``training_start``, or the first
  ``batch_end`` / ``batch_start`` / ``epoch_start`` / ``control_point()``), the
  connection's controller calls the ``load_checkpoint`` handler registered with
  :func:`stepwatch.on_command`, as if the dashboard had sent that command, and reports
  ``checkpoint_loaded``. With no handler it logs a warning saying how to resume.

Unset (a first attempt, or no launcher at all), nothing happens.
"""

from __future__ import annotations

import os
import sys
import threading
import traceback
from typing import Any, Callable

from ._emitter import training_emitter

#: The variable the agent sets on a retry.
ENV = "STEPWATCH_RESUME_FROM"

_lock = threading.Lock()
#: The path was handed to someone (the script, an integration, the handler).
_claimed = False
#: Its ``checkpoint_loaded`` was reported.
_announced = False


def path() -> str | None:
    """``STEPWATCH_RESUME_FROM``, or None when unset or empty (never claims)."""
    value = os.environ.get(ENV, "").strip()
    return value or None


def resume_from(claim: bool = True) -> str | None:
    """The checkpoint this attempt of a launched job resumes from
    (``STEPWATCH_RESUME_FROM``), or None on a first attempt. A script that loads the
    checkpoint itself calls this::

        ckpt = stepwatch.resume_from()
        if ckpt:
            start_step = load(ckpt)

    It also tells the SDK the script loads it, so the ``load_checkpoint`` handler is not
    called for it at the first control point; ``claim=False`` only looks."""
    global _claimed
    found = path()
    if found is not None and claim:
        _claimed = True
    return found


def claim() -> str | None:
    """Takes the pending resume: the path the first time, None once someone took it (or
    when there is none)."""
    global _claimed
    found = path()
    with _lock:
        if found is None or _claimed:
            return None
        _claimed = True
        return found


def announce() -> str | None:
    """For an integration whose trainer resumed (from this path, or from one the script
    gave it): claims the resume and returns the path the first time, so that
    ``checkpoint_loaded`` is reported once; None after, or when there is none."""
    global _claimed, _announced
    found = path()
    with _lock:
        if found is None or _announced:
            return None
        _claimed = _announced = True
        return found


def pending() -> str | None:
    """The path, while nobody has taken it."""
    found = path()
    return None if _claimed else found


def warn(message: str, emit: Callable[..., Any] | None = None) -> None:
    """Says ``message`` on stderr and in the run's log (the ``stepwatch`` logger's
    records are not forwarded to the run, and a resume that does not happen must show)."""
    sys.stderr.write(f"stepwatch: {message}\n")
    try:
        (emit or training_emitter.emit)("log", level="warning", message=message, logger="stepwatch")
    except Exception:
        pass


def load_pending(
    handlers: dict[str, Callable[..., Any]], emit: Callable[..., Any], where: str
) -> None:
    """At a run's first control point (``where``): hands a pending resume to the
    ``load_checkpoint`` handler, the way a ``load_checkpoint`` command is carried out
    (``checkpoint_loaded`` when it returns; a handler that raises is reported as a
    non-fatal ``error_occurred`` and training goes on). No handler: a warning, and the
    path stays for :func:`resume_from`."""
    if pending() is None:
        return
    fn = handlers.get("load_checkpoint")
    if fn is None:
        warn(
            f"this job resumes from {path()} ({ENV}) but the trainer registers no "
            "load_checkpoint handler: load it with stepwatch.resume_from(), or register "
            "one with stepwatch.on_command('load_checkpoint', fn)",
            emit,
        )
        return
    found = claim()
    if found is None:
        return
    try:
        fn(found)
    except Exception as e:  # as a failing command: reported, training goes on
        text = "".join(traceback.format_exception(type(e), e, e.__traceback__))
        sys.stderr.write(f"stepwatch: resuming from {found} failed: {type(e).__name__}: {e}\n")
        emit(
            "error_occurred",
            message=f"resuming from {found} failed: {type(e).__name__}: {e}",
            traceback=text,
            fatal=False,
        )
        return
    global _announced
    _announced = True
    emit("checkpoint_loaded", checkpoint_path=found, resumed=True, at=where)
