"""Forwarding events to a Stepwatch relay from a background thread.

The training thread only appends to a bounded deque (no lock, no IO). A daemon
thread drains it into NDJSON batches, tags each event with ``src`` and an increasing
``seq`` (so a retried batch is stored once), and POSTs them. While the relay is down
or answering 5xx it retries with capped, jittered exponential backoff, and meanwhile
moves what the trainer emits into a bounded spool file on disk (see ``_spool``), sent
in order once the relay is back. Nothing here ever raises into training.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import random
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import deque
from pathlib import Path
from typing import Any

from . import _control, _lifecycle, _logs, _system, _wire
from ._emitter import TrainingEventEmitter, training_emitter
from ._spool import Spool, drop_report, max_bytes_from_env, spool_files

_log = logging.getLogger("stepwatch")

#: Events held in memory before the oldest are dropped (the spool takes them first).
DEFAULT_QUEUE_SIZE = 100_000
#: Most events per request.
DEFAULT_MAX_BATCH = 1000
#: Seconds the sender waits to fill a batch.
DEFAULT_LINGER = 0.02
#: Backoff bounds (seconds) while the relay is unreachable.
MIN_BACKOFF, MAX_BACKOFF = 0.1, 5.0
#: While waiting out a backoff, memory is moved to the spool this often (seconds).
SPILL_EVERY = 0.2
#: Default bounded wait (seconds) for the final flush at exit.
DEFAULT_EXIT_FLUSH = 3.0


def default_spool_dir() -> Path:
    """Where unsent events wait for the relay: ``STEPWATCH_SPOOL_DIR`` or ~/.cache."""
    env = os.environ.get("STEPWATCH_SPOOL_DIR")
    return Path(env) if env else Path.home() / ".cache" / "stepwatch" / "spool"


def default_run_id() -> str:
    return time.strftime("run-%Y%m%d-%H%M%S-") + str(os.getpid())


class RelaySender:
    """Sends one run's events to a relay. Create it with :func:`connect`.

    ``spool_max_bytes`` caps the spool file (default ``STEPWATCH_SPOOL_MAX_BYTES`` or
    128 MiB); ``dropped`` counts events given up to stay within the memory queue and
    the spool cap (never run start/end, checkpoints or errors from the spool).
    """

    def __init__(
        self,
        url: str,
        run: str,
        token: str | None = None,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        timeout: float = 10.0,
        spool_dir: Path | str | None = None,
        spool_max_bytes: int | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.spool_dir = Path(spool_dir) if spool_dir else default_spool_dir()
        self.run = run
        self.endpoint = f"{self.url}/api/runs/{run}/events"
        self.token = token
        self.timeout = timeout
        self.src = f"py-{uuid.uuid4().hex[:12]}"
        self._queue: deque = deque(maxlen=queue_size)
        self._queue_size = queue_size
        self._seq = 0
        self._appended = 0  # events handed to the queue (training thread only)
        self._injected = 0  # events the sender thread added itself (drop reports)
        self._done = 0  # own events acknowledged, rejected or dropped from the spool
        self.sent = 0
        self.rejected = 0
        self._queue_dropped = 0
        self._reported = 0  # spool drops already told to the relay
        #: Why the relay is unreachable now (None while delivery works).
        self.last_error: str | None = None
        #: The relay's answer to the last event it refused as invalid.
        self.last_rejection: str | None = None
        # Files left by earlier processes for this run, sent before anything new.
        self._older = [Spool.existing(p) for p in spool_files(self.spool_dir, run)]
        self.spool = Spool(
            self.spool_dir / run / f"{time.time():.6f}-{self.src}.ndjson",
            max_bytes=spool_max_bytes or max_bytes_from_env(),
        )
        self._inflight: list[dict] | None = None
        self._wake = threading.Event()
        self._stop = False
        self._stop_evt = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="stepwatch-sender", daemon=True)
        self._thread.start()

    @property
    def dropped(self) -> int:
        """Events given up: memory queue overflow plus spool-cap drops."""
        return self._queue_dropped + self.spool.dropped

    # -- training thread -------------------------------------------------------------
    def __call__(self, record: dict) -> None:
        """Listener: queue one event. O(1), never blocks, never raises."""
        if len(self._queue) >= self._queue_size:
            self._queue_dropped += 1
        self._queue.append(record)
        self._appended += 1

    # -- any thread ------------------------------------------------------------------
    def _delivered(self) -> bool:
        target = self._appended + self._injected
        return (
            self._done + self._queue_dropped >= target
            and not self._queue
            and not self.spool.pending()
            and not self._older  # earlier processes' spools count too
            and self.spool.dropped <= self._reported  # the drop report is still to go
        )

    def flush(self, timeout: float = 5.0) -> bool:
        """Waits up to ``timeout`` s until everything queued so far is acknowledged."""
        deadline = time.monotonic() + timeout
        self._wake.set()
        while time.monotonic() < deadline:
            if self._delivered():
                return True
            time.sleep(0.005)
        return self._delivered()

    def close(self, timeout: float = DEFAULT_EXIT_FLUSH, spool: bool = True) -> bool:
        """Flushes (bounded by ``timeout``) and stops the thread. What the relay did not
        take in time stays in the spool, for the next process or ``stepwatch sync``."""
        ok = self.flush(timeout)
        self._stop = True
        self._stop_evt.set()
        self._wake.set()
        if not ok and spool:
            self._thread.join(2.0)
            inflight = self._inflight
            if self._thread.is_alive() and inflight:
                self._spool_append(inflight)  # may arrive twice; the relay keeps one
            self._spill()
            self.spool.settle()
            if self.spool.pending():
                _log.warning(
                    "stepwatch: relay unreachable; unsent events left in %s", self.spool.path
                )
        return ok

    def _stamp(self, record: dict, seq: int) -> dict:
        event = dict(record)  # the emitter's dict may be shared with other listeners
        event["src"] = self.src
        event["seq"] = seq
        return event

    def _take(self, limit: int) -> list[dict]:
        batch = []
        while self._queue and len(batch) < limit:
            try:
                record = self._queue.popleft()
            except IndexError:
                break
            self._seq += 1
            batch.append(self._stamp(record, self._seq))
        return batch

    def _spool_append(self, batch: list[dict]) -> bool:
        before = self.spool.dropped
        try:
            self.spool.append(batch)
        except OSError as e:
            self.last_error = f"spool unwritable: {e}"
            return False
        self._done += self.spool.dropped - before
        return True

    def _spill(self) -> None:
        """Moves everything in memory to the spool (relay unreachable)."""
        while self._queue:
            batch = self._take(DEFAULT_MAX_BATCH)
            if not self._spool_append(batch):
                # The disk refuses too: keep them in memory, in order, and retry later.
                for event in reversed(batch):
                    self._queue.appendleft(event)
                return

    # -- sender thread ---------------------------------------------------------------
    def _loop(self) -> None:
        backoff = MIN_BACKOFF
        while True:
            if self._older or self.spool.pending():
                source = self._older[0] if self._older else self.spool
                batch, pos, gen = source.read(DEFAULT_MAX_BATCH)
                if not batch:  # only torn or unreadable lines left: skip past them
                    source.advance(pos if pos > source.read_pos else source.size, gen)
                    if source is not self.spool and not source.pending():
                        self._older.pop(0)
                    continue
                ok = self._post(batch, own=sum(e.get("src") == self.src for e in batch))
                if ok:
                    source.advance(pos, gen)
            else:
                if self.spool.dropped > self._reported:
                    self._reported = self.spool.dropped
                    self._injected += 1
                    self._queue.append(drop_report(self._reported, self.spool.dropped_batch_end))
                if not self._queue:
                    if self._stop:
                        return
                    self._wake.wait(DEFAULT_LINGER)
                    self._wake.clear()
                    continue
                batch = self._take(DEFAULT_MAX_BATCH)
                self._inflight = batch
                ok = self._post(batch, own=len(batch))
                self._inflight = None
                if not ok and not self._spool_append(batch):
                    for event in reversed(batch):  # disk refuses: back to memory
                        self._queue.appendleft(event)
            if ok:
                backoff = MIN_BACKOFF
                continue
            # Relay unreachable: wait out the backoff, moving memory to disk meanwhile.
            deadline = time.monotonic() + backoff * (0.5 + random.random())
            backoff = min(backoff * 2, MAX_BACKOFF)
            while True:
                self._spill()
                left = deadline - time.monotonic()
                if self._stop or left <= 0:
                    break
                self._stop_evt.wait(min(SPILL_EVERY, left))
            if self._stop:
                return

    def _post(self, batch: list, own: int) -> bool:
        """One delivery attempt: True when the relay took (or refused) every event,
        False when it is unreachable or failing. ``own`` of them count as this process's."""
        while batch:
            n = len(batch)
            body = _wire.dumps_array(batch)
            req = urllib.request.Request(self.endpoint, data=body, method="POST")
            req.add_header("Content-Type", "application/json")
            if self.token:
                req.add_header("Authorization", f"Bearer {self.token}")
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    resp.read()
                self.sent += own
                self._done += own
                self.last_error = None
                return True
            except urllib.error.HTTPError as e:
                detail = e.read().decode(errors="replace")[:500]
                if e.code in (401, 403):
                    # Credentials missing or not allowed: keep the events (spooled) and
                    # retry, so fixing STEPWATCH_TOKEN loses nothing; say it loudly.
                    if self.last_error is None or "credentials" not in self.last_error:
                        _log.warning("stepwatch: relay refused our credentials: %s", detail)
                    self.last_error = f"relay refused our credentials ({e.code}): {detail}"
                    return False
                if 400 <= e.code < 500 and e.code not in (408, 429):
                    bad = _bad_index(detail, n) if e.code == 400 else None
                    if bad is not None:
                        # Drop only the event the relay named; send the rest again.
                        self.rejected += 1
                        if batch[bad].get("src") == self.src:
                            self._done += 1
                            own -= 1
                        self.last_rejection = (
                            f"relay refused event {batch[bad].get('event')!r}: {detail}"
                        )
                        _log.warning("stepwatch: %s", self.last_rejection)
                        batch = batch[:bad] + batch[bad + 1 :]
                        continue
                    self.rejected += n
                    self._done += own
                    self.last_rejection = f"relay refused a batch ({e.code}): {detail}"
                    _log.warning("stepwatch: %s", self.last_rejection)
                    return True
                self.last_error = f"relay answered {e.code}: {detail}"
            except Exception as e:  # relay down, DNS, timeout: keep trying
                self.last_error = f"relay unreachable: {e}"
            return False
        return True


def _bad_index(detail: str, n: int) -> int | None:
    """The index of the bad event in a 400 answer, if the relay named one."""
    try:
        index = json.loads(detail).get("index")
    except (ValueError, AttributeError):
        return None
    return index if isinstance(index, int) and 0 <= index < n else None


_sender: RelaySender | None = None
_controller: _control.Controller | None = None
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
    Calling it again replaces the previous connection.
    """
    global _sender, _controller, _sampler, _log_handler
    url = url or os.environ.get("STEPWATCH_URL") or "http://127.0.0.1:8080"
    run = run or os.environ.get("STEPWATCH_RUN") or default_run_id()
    token = token or os.environ.get("STEPWATCH_TOKEN")
    with _lock:
        if _sender is not None:
            emitter.off("*", _sender)
            _sender.close(timeout=1.0)
        _sender = RelaySender(url, run, token=token, **options)
        emitter.on("*", _sender)
        if _controller is not None:
            _controller.close()
            _controller = None
            emitter.control_hook = None
        if commands:
            _controller = _control.Controller(
                url, run, emitter, token=token, raise_on_stop=raise_on_stop, stop=stop
            )
            emitter.control_hook = _controller.at_event
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
        if capture_logging:
            _log_handler = _logs.LogHandler(emitter)
            logging.getLogger().addHandler(_log_handler)
        if capture_stdout:
            _logs.capture_output(emitter)
        _lifecycle.install()
        return _sender


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
    global _sender, _controller
    with _lock:
        s, _sender = _sender, None
        c, _controller = _controller, None
    if c is not None:
        c.close()
        training_emitter.control_hook = None
    _stop_extras()
    if s is None:
        return True
    training_emitter.off("*", s)
    return s.close(timeout)


def current() -> RelaySender | None:
    """The active connection, or None when not connected."""
    return _sender


def current_run() -> str | None:
    """The run id events go to now, or None when not connected."""
    s = _sender
    return None if s is None else s.run


def flush(timeout: float = 5.0) -> bool:
    """Waits up to ``timeout`` s for queued events to reach the relay."""
    s = _sender
    return True if s is None else s.flush(timeout)


def connect_from_env() -> None:
    if os.environ.get("STEPWATCH_URL"):
        try:
            connect()
        except Exception:  # never break an import
            _log.exception("stepwatch: could not connect from STEPWATCH_URL")


def _at_exit() -> None:
    c = _controller
    if c is not None and c.stop_asked and _lifecycle.run_open():
        # The stop ended the loop (an interrupt the script caught, StopTraining, a loop
        # that checked should_stop()) and the script exited without emit_training_end.
        from ._helpers import emit_training_end

        emit_training_end()
    s = _sender
    if s is not None:
        wait = float(os.environ.get("STEPWATCH_EXIT_FLUSH", DEFAULT_EXIT_FLUSH))
        s.close(timeout=wait)


atexit.register(_at_exit)


def control_point(raise_on_stop: bool | None = None) -> None:
    """Where the trainer may pause, run dashboard commands, or stop. ``emit_batch_end``,
    ``emit_batch_start`` and ``emit_epoch_start`` call it for you; call it yourself in
    loops that emit nothing (e.g. validation), so a Stop interrupts them too.
    ``raise_on_stop=True`` raises :class:`StopTraining` here after a stop,
    ``False`` never raises here."""
    c = _controller
    if c is not None:
        c.control_point(raise_on_stop)


def should_stop() -> bool:
    """True once the dashboard asked this run to stop. Calling it tells Stepwatch that
    the loop ends itself on a stop (``stop="auto"``): no ``KeyboardInterrupt`` then."""
    _control.note_user_check()
    c = _controller
    return c is not None and c.should_stop(user=True)


def stop_requested() -> bool:
    """``should_stop()`` for the integrations: not counted as the user's check."""
    c = _controller
    return c is not None and c.should_stop()


def stop_delivered() -> bool:
    """The loop has been told to stop (it saw ``should_stop()`` true, or a stop was
    raised into it): errors from here on happened on the way out."""
    c = _controller
    return c is not None and c.stop_delivered


def finish_stop() -> bool:
    """Answers a pending stop command; True when training ends because of one."""
    c = _controller
    return c is not None and c.finish_stop()
