"""The current connection: the run's sender and command controller while connected, and
the questions the rest of the package asks about it (should the loop stop, was the stop
delivered, answer it, flush). :mod:`stepwatch._relay` sets them in ``connect()``; the
helpers, the lifecycle hooks and the integrations only read them, so none of them needs
``_relay`` (no import circle)."""

from __future__ import annotations

from typing import Any, Callable

from . import _control, _dist
from ._sender import RelaySender

#: The active connection's sender and controller (None when not connected / commands off).
sender: RelaySender | None = None
controller: _control.Controller | None = None
#: What listens to the emitter: the sender, or in a distributed run its rank's filter.
listener: Any = None
#: In a distributed run: this rank's filter (None for a single process).
rank_filter: _dist.RankFilter | None = None
#: Called with the timeout before a flush: work that still emits events (watch()'s
#: background thread) finishes first.
before_flush: list[Callable[[float], Any]] = []
#: How this process is ending, once known: ``failed`` (an uncaught error) or
#: ``stopped`` (a signal); None: it ends normally.
exit_status: str | None = None


def end_rank(status: str | None = None) -> None:
    """In a distributed run, tells the relay this rank's process is ending (once)."""
    f = rank_filter
    if f is not None and not f.ended:
        c = controller
        stopped = c is not None and c.stop_asked
        if stopped and c is not None:
            c.finish_stop()  # this rank's answer: it stopped with the others
        f.send_end(status or exit_status or ("stopped" if stopped else "completed"))


def current() -> RelaySender | None:
    """The active connection, or None when not connected."""
    return sender


def current_run() -> str | None:
    """The run id events go to now, or None when not connected."""
    s = sender
    return None if s is None else s.run


def flush(timeout: float = 5.0) -> bool:
    """Waits up to ``timeout`` s for queued events to reach the relay."""
    for f in before_flush:
        f(timeout)
    s = sender
    return True if s is None else s.flush(timeout)


def control_point(raise_on_stop: bool | None = None) -> None:
    """Where the trainer may pause, run dashboard commands, or stop. ``emit_batch_end``,
    ``emit_batch_start`` and ``emit_epoch_start`` call it for you; call it yourself in
    loops that emit nothing (e.g. validation), so a Stop interrupts them too.
    ``raise_on_stop=True`` raises :class:`StopTraining` here after a stop,
    ``False`` never raises here."""
    c = controller
    if c is not None:
        c.control_point(raise_on_stop)


def step_point(step: int | None = None) -> None:
    """An integration's per-step control point, reached by every rank of a distributed
    run at each optimizer step (``step``: the global step): the ranks agree there on the
    commands to carry out, then it is :func:`control_point` that never raises."""
    c = controller
    if c is not None:
        if step is not None:
            c.note_step(step)
        c.control_point(False, agree=True)


def distributed() -> bool:
    """This process is one rank of a distributed run (connected)."""
    return rank_filter is not None


def should_stop() -> bool:
    """True once the dashboard asked this run to stop. Calling it tells Stepwatch that
    the loop ends itself on a stop (``stop="auto"``): no ``KeyboardInterrupt`` then."""
    _control.note_user_check()
    c = controller
    return c is not None and c.should_stop(user=True)


# User code calling this function (under any name) is a loop that ends itself on a stop.
_control.STOP_CHECKS.append(should_stop)


def stop_requested() -> bool:
    """``should_stop()`` for the integrations: not counted as the user's check."""
    c = controller
    return c is not None and c.should_stop()


def stop_asked() -> bool:
    """A stop arrived (whether or not the loop has seen it yet)."""
    c = controller
    return c is not None and c.stop_asked


def stop_delivered() -> bool:
    """The loop has been told to stop (it saw ``should_stop()`` true, or a stop was
    raised into it): errors from here on happened on the way out."""
    c = controller
    return c is not None and c.stop_delivered


def finish_stop() -> bool:
    """Answers a pending stop command; True when training ends because of one."""
    c = controller
    return c is not None and c.finish_stop()


def current_step() -> int | None:
    """The loop's global step as the SDK knows it (the last ``batch_end``'s ``step``,
    else how many there were; an integration's step), or None: the relay's reducer
    then derives it."""
    for source in (controller, rank_filter):
        step = getattr(source, "_step", None)
        if isinstance(step, int) and not isinstance(step, bool):
            return step
    return None


def media_sender() -> RelaySender | None:
    """The sender images go to: None when not connected, or on a rank of a distributed
    run other than 0 (only rank 0 reports training events)."""
    s = sender
    if s is None:
        return None
    f = rank_filter
    if f is not None and f.world.rank != 0:
        return None
    return s
