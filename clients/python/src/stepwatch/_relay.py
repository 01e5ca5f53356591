"""Connecting a process to a Stepwatch relay: ``connect()`` wires the sender
(:mod:`stepwatch._sender`), the command controller (:mod:`stepwatch._control`), system
metrics, log capture and the lifecycle hooks to the emitter; ``disconnect()`` and the
exit flush undo it. The current connection lives in :mod:`stepwatch._session`; its
functions are re-exported here, as before.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from . import (
    _alerts,
    _control,
    _dist,
    _helpers,
    _http,
    _lifecycle,
    _logs,
    _runmeta,
    _session,
    _system,
)
from ._emitter import TrainingEventEmitter, training_emitter
from ._sender import (
    DEFAULT_EXIT_FLUSH,
    DEFAULT_LINGER,
    DEFAULT_MAX_BATCH,
    DEFAULT_QUEUE_SIZE,
    MAX_BACKOFF,
    MIN_BACKOFF,
    SPILL_EVERY,
    RelaySender,
    default_run_id,
    default_spool_dir,
)
from ._session import (
    control_point,
    current,
    current_run,
    finish_stop,
    flush,
    should_stop,
    stop_delivered,
    stop_requested,
)

__all__ = [
    "DEFAULT_EXIT_FLUSH",
    "DEFAULT_LINGER",
    "DEFAULT_MAX_BATCH",
    "DEFAULT_QUEUE_SIZE",
    "MAX_BACKOFF",
    "MIN_BACKOFF",
    "SPILL_EVERY",
    "RelaySender",
    "connect",
    "connect_from_env",
    "control_point",
    "current",
    "current_run",
    "default_run_id",
    "default_spool_dir",
    "disconnect",
    "finish_stop",
    "flush",
    "should_stop",
    "stop_delivered",
    "stop_requested",
]

_log = logging.getLogger("stepwatch")

_sampler: _system.SystemSampler | None = None
_log_handler: _logs.LogHandler | None = None
_lock = threading.Lock()


def connect(
    url: str | None = None,
    run: str | None = None,
    token: str | None = None,
    emitter: TrainingEventEmitter = training_emitter,
    commands: bool = True,
    raise_on_stop: bool = False,
    stop: str | None = None,
    system_interval: float | None = None,
    heartbeat_interval: float | None = None,
    capture_logging: bool = True,
    capture_stdout: bool = False,
    alerts: Sequence[Mapping[str, Any]] | None = None,
    tags: Sequence[str] | str | None = None,
    group: str | None = None,
    notes: str | None = None,
    rank_metrics: bool | None = None,
    **options: Any,
) -> RelaySender:
    """Forwards every event of ``emitter`` to the relay at ``url`` as run ``run``.

    ``url``, ``run`` and ``token`` default to ``STEPWATCH_URL``, ``STEPWATCH_RUN`` and
    ``STEPWATCH_TOKEN``. With ``commands`` (the default) the trainer also obeys the
    dashboard's pause / resume / stop / load_checkpoint / ask at its control points.
    ``stop`` says how a Stop ends the loop (default ``STEPWATCH_STOP``, else ``"auto"``):
    ``"auto"`` leaves it to a loop that checks :func:`should_stop` and raises
    :class:`StopInterrupt` (a ``KeyboardInterrupt``) at the next control point of one
    that does not; ``"interrupt"`` always raises it; ``"flag"`` never does (only
    ``should_stop()`` turns true); ``"raise"``, like ``raise_on_stop=True``, raises
    :class:`StopTraining` there. It also records,
    each switchable: system metrics every ``system_interval`` seconds (default 5, or
    ``STEPWATCH_SYSTEM_INTERVAL``; 0 turns them off; they double as heartbeats), a bare
    ``heartbeat`` event every ``heartbeat_interval`` s when system metrics are off
    (default 5, or ``STEPWATCH_HEARTBEAT_INTERVAL``; 0 turns it off), records of the
    ``logging`` module
    (``capture_logging``), and every line printed (``capture_stdout``, off by default).
    ``alerts``: the run's own alert rules (docs/ALERTS.md), each sent as an
    ``alert_rule`` event right after connecting; all are checked first, and a bad one
    raises ``ValueError`` naming its field (``alerts[1].window: …``) with nothing sent
    and the previous connection left as it was.
    ``tags`` (a list, or one comma-separated string; default ``STEPWATCH_TAGS``),
    ``group`` (default ``STEPWATCH_GROUP``) and ``notes`` (Markdown) label the run in
    the dashboard; sent as one ``run_meta`` event, checked first like ``alerts``.
    Under a distributed launcher (``torchrun``, ``srun``, ``mpirun``: see
    :mod:`stepwatch._dist`) every rank joins one run, named alike on each rank when
    ``run`` is not given; rank 0 reports the training events, every rank its system
    samples, logs, errors and command answers, and its own metrics too with
    ``rank_metrics`` (default ``STEPWATCH_RANK_METRICS``). Commands take effect on every
    rank at the same step.
    Calling it again replaces the previous connection.
    """
    global _sampler, _log_handler
    rules = _alerts.check_rules(alerts) if alerts is not None else []
    meta = _runmeta.check_meta(*_runmeta.from_env(tags, group), notes)
    url = _http.relay_url(url)
    world = _dist.detect()
    run = (
        run
        or os.environ.get("STEPWATCH_RUN")
        or (_dist.run_id(world) if world else None)
        or default_run_id()
    )
    token = _http.relay_token(token)
    with _lock:
        if _session.sender is not None:
            emitter.off("*", _session.listener or _session.sender)
            _session.sender.close(timeout=1.0)
        sender = _session.sender = RelaySender(url, run, token=token, **options)
        flt = None
        if world is not None:
            flt = _dist.RankFilter(sender, world, _dist.rank_metrics_from_env(rank_metrics))
        _session.rank_filter = flt
        # (a bound method: the emitter calls it a little faster than the object)
        _session.listener = flt or sender.__call__
        emitter.on("*", _session.listener)
        _alerts.emit_rules(rules, emitter)
        _runmeta.emit_meta(meta, emitter)
        if _session.controller is not None:
            _session.controller.close()
            _session.controller = None
            emitter.control_hook = None
        if commands:
            controller = _session.controller = _control.Controller(
                url, run, emitter, token=token, raise_on_stop=raise_on_stop, stop=stop, world=world
            )
            emitter.control_hook = controller.at_event
        _stop_extras()
        if system_interval is None:
            system_interval = float(
                os.environ.get("STEPWATCH_SYSTEM_INTERVAL", _system.DEFAULT_INTERVAL)
            )
        if heartbeat_interval is None:
            heartbeat_interval = float(
                os.environ.get("STEPWATCH_HEARTBEAT_INTERVAL", _system.DEFAULT_INTERVAL)
            )
        if system_interval > 0:
            _sampler = _system.SystemSampler(emitter.emit, interval=system_interval)
        elif heartbeat_interval > 0:
            _sampler = _system.SystemSampler(
                emitter.emit, interval=heartbeat_interval, metrics=False
            )
        if flt is not None:
            beat = system_interval if system_interval > 0 else heartbeat_interval
            flt.send_start(beat if beat > 0 else None)
        if capture_logging:
            _log_handler = _logs.LogHandler(emitter)
            logging.getLogger().addHandler(_log_handler)
        if capture_stdout:
            _logs.capture_output(emitter)
        _lifecycle.install()
        return sender


def _stop_extras() -> None:
    global _sampler, _log_handler
    if _sampler is not None:
        _sampler.close()
        _sampler = None
    if _log_handler is not None:
        logging.getLogger().removeHandler(_log_handler)
        _log_handler = None
    _logs.release_output()


def disconnect(timeout: float = DEFAULT_EXIT_FLUSH) -> bool:
    """Flushes (bounded) and stops forwarding."""
    with _lock:
        s, _session.sender = _session.sender, None
        c, _session.controller = _session.controller, None
    if c is not None:
        c.close()
        training_emitter.control_hook = None
    _stop_extras()
    if s is None:
        return True
    _session.end_rank()
    training_emitter.off("*", _session.listener or s)
    _session.listener = _session.rank_filter = None
    return s.close(timeout)


def connect_from_env() -> None:
    if os.environ.get("STEPWATCH_URL"):
        try:
            connect()
        except Exception:  # never break an import
            _log.exception("stepwatch: could not connect from STEPWATCH_URL")


def _at_exit() -> None:
    if _session.stop_asked() and _lifecycle.run_open():
        # The stop ended the loop (an interrupt the script caught, StopTraining, a loop
        # that checked should_stop()) and the script exited without emit_training_end.
        _helpers.emit_training_end()
    _session.end_rank()
    s = _session.sender
    if s is not None:
        wait = float(os.environ.get("STEPWATCH_EXIT_FLUSH", DEFAULT_EXIT_FLUSH))
        for f in _session.before_flush:
            f(min(wait, 1.0))
        s.close(timeout=wait)


atexit.register(_at_exit)
