"""How a run ends when the process does: an uncaught exception is reported as
``error_occurred`` (fatal, with its traceback) and ``training_end`` status ``failed``;
Ctrl-C (also the ``KeyboardInterrupt`` a Stop from the dashboard raises), SIGTERM and an
uncaught ``StopTraining`` end it as ``stopped``. An exception raised after the loop was
told to stop (the script's own code on the way out, e.g. loading a best checkpoint that
was never saved) ends it as ``stopped`` too: the error is recorded, not fatal, with a
message that starts "after the stop: ". An error after the run already ended
(``emit_training_end()`` right after the loop, then the script's code raised) is recorded
the same way, "after the stop: " or "after the run ended: ", the status unchanged. Either
way the error is printed as usual. The
bounded exit flush (atexit) then sends what is queued. Installed by ``connect()``;
previous hooks and handlers are kept and called."""

from __future__ import annotations

import signal
import sys
import threading
import traceback
from typing import Any

from . import _control, _session
from ._emitter import training_emitter
from ._helpers import emit_error_occurred, emit_training_end

_prev_excepthook: Any = None
_prev_sigterm: Any = None


def run_open() -> bool:
    """A run was started in this process and has not ended."""
    return bool(
        training_emitter.get_history("training_start")
    ) and not training_emitter.get_history("training_end")


def _rank_without_run() -> bool:
    """A rank of a distributed run whose own process never emitted ``training_start``."""
    return _session.rank_filter is not None and not training_emitter.get_history("training_end")


#: How an error after a stop is introduced in its ``error_occurred`` message.
AFTER_STOP = "after the stop: "


def end_run_for(exc: BaseException, tb: Any = None) -> str:
    """Ends the open run because of ``exc``; returns the status it ended with:
    ``stopped`` for Ctrl-C / a stop's interrupt / ``StopTraining``, and for any error
    after the loop was told to stop (recorded as a non-fatal ``error_occurred``,
    ``after_stop: true``); else ``failed`` with the error (fatal)."""
    if isinstance(exc, (KeyboardInterrupt, _control.StopTraining)):
        emit_training_end(status="stopped")
        return "stopped"
    if tb is None:
        tb = exc.__traceback__
    text = "".join(traceback.format_exception(type(exc), exc, tb))
    if _session.stop_delivered():
        emit_error_occurred(
            f"{AFTER_STOP}{type(exc).__name__}: {exc}",
            traceback=text,
            fatal=False,
            after_stop=True,
        )
        emit_training_end(status="stopped")
        return "stopped"
    emit_error_occurred(exc, traceback=text, fatal=True)
    emit_training_end(status="failed")
    return "failed"


#: How an error after the run's ``training_end`` is introduced in its message.
AFTER_END = "after the run ended: "


def report_after_end(exc: BaseException, tb: Any = None) -> bool:
    """An uncaught error after this process ended its run (``emit_training_end()`` right
    after the loop, then the script's own code raised): recorded on the run, not fatal
    (its status stays), "after the stop: …" or "after the run ended: …". True if sent."""
    if isinstance(exc, (KeyboardInterrupt, _control.StopTraining)):
        return False
    ends = training_emitter.get_history("training_end")
    if not ends or ends[-1].get("status") == "failed":
        return False  # no run, or one that failed: the error that failed it is recorded
    said = f"{type(exc).__name__}: {exc}"
    if any(
        str(e.get("message", "")).endswith(said)
        for e in training_emitter.get_history("error_occurred", limit=5)
    ):
        return False  # already reported (by an integration's exception hook)
    if tb is None:
        tb = exc.__traceback__
    text = "".join(traceback.format_exception(type(exc), exc, tb))
    stopped = _session.stop_delivered()
    emit_error_occurred(
        f"{AFTER_STOP if stopped else AFTER_END}{type(exc).__name__}: {exc}",
        traceback=text,
        fatal=False,
        after_stop=stopped,
        after_end=True,
    )
    return True


#: Inside :func:`_excepthook` (a hook it chained to may call it again).
_in_hook = False


def _excepthook(tp: type[BaseException], value: BaseException, tb: Any) -> None:
    global _in_hook
    if _in_hook:
        # A hook installed after ours wrapped it, and ours (connected again) wrapped that
        # one: torch.distributed's rank-prefixing hook does so. Print, once, and return.
        sys.__excepthook__(tp, value, tb)
        return
    _in_hook = True
    try:
        _report_and_chain(tp, value, tb)
    finally:
        _in_hook = False


def _report_and_chain(tp: type[BaseException], value: BaseException, tb: Any) -> None:
    try:
        stopped = isinstance(value, (KeyboardInterrupt, _control.StopTraining))
        _session.exit_status = "stopped" if stopped else "failed"
        if run_open():
            end_run_for(value, tb)
        elif _rank_without_run() and not stopped:
            # A rank whose script began the run on rank 0 only: its error still fails it.
            text = "".join(traceback.format_exception(tp, value, tb))
            emit_error_occurred(value, traceback=text, fatal=True)
        else:
            report_after_end(value, tb)
    except Exception:
        pass  # reporting must never hide the real error
    hook = _prev_excepthook or sys.__excepthook__
    hook(tp, value, tb)


def _on_sigterm(signum: int, frame: Any) -> None:
    try:
        _session.exit_status = _session.exit_status or "stopped"
        if run_open():
            emit_training_end(status="stopped")
    except Exception:
        pass
    if callable(_prev_sigterm):
        _prev_sigterm(signum, frame)
        return
    sys.exit(128 + signum)  # SystemExit: atexit flushes what is queued


def install() -> None:
    """Installs the hooks once (the SIGTERM handler only from the main thread)."""
    global _prev_excepthook, _prev_sigterm
    if sys.excepthook is not _excepthook:
        _prev_excepthook = sys.excepthook
        sys.excepthook = _excepthook
    if threading.current_thread() is threading.main_thread():
        try:
            current = signal.getsignal(signal.SIGTERM)
            if current is not _on_sigterm:
                _prev_sigterm = current if current not in (signal.SIG_DFL, signal.SIG_IGN) else None
                if current is not signal.SIG_IGN:
                    signal.signal(signal.SIGTERM, _on_sigterm)
        except (ValueError, OSError):
            pass
