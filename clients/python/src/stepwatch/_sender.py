"""Delivery: forwarding one run's events to a Stepwatch relay from a background thread.

The training thread only appends to a bounded deque (no lock, no IO while there is
room). A full queue makes room by dropping its oldest event that is not part of the
run's lifecycle (``PROTECTED``: start, end, checkpoints, errors, command answers), the
rule the spool follows too; a lifecycle event is never dropped. A daemon
thread drains it into NDJSON batches, tags each event with ``src`` and an increasing
``seq`` (so a retried batch is stored once), and POSTs them. While the relay is down
or answering 5xx it retries with capped, jittered exponential backoff, and meanwhile
moves what the trainer emits into a bounded spool file on disk (see ``_spool``), sent
in order once the relay is back. Nothing here ever raises into training.
"""

from __future__ import annotations

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

from . import _wire
from ._spool import PROTECTED, Spool, drop_report, max_bytes_from_env, spool_files

_log = logging.getLogger("stepwatch")

#: Events held in memory before the oldest droppable one is dropped (the spool takes
#: them first).
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
        self._queue: deque[dict[str, Any]] = deque()
        self._queue_size = max(1, queue_size)
        # Held by the sender thread while it takes from the queue, and by the training
        # thread only when the queue is full (making room).
        self._queue_lock = threading.Lock()
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
        self._inflight: list[dict[str, Any]] | None = None
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
    def __call__(self, record: dict[str, Any]) -> None:
        """Listener: queue one event. O(1) while there is room, never raises."""
        if len(self._queue) >= self._queue_size and not self._make_room(record):
            return
        self._queue.append(record)
        self._appended += 1

    def _make_room(self, record: dict[str, Any]) -> bool:
        """The queue is full: drops its oldest droppable event; False when ``record``
        itself is dropped instead (nothing queued may go, and it may). A lifecycle event
        is kept beyond the cap."""
        with self._queue_lock:
            try:
                oldest = next(
                    (i for i, e in enumerate(self._queue) if e.get("event") not in PROTECTED),
                    None,
                )
            except RuntimeError:  # another thread emitted meanwhile: drop this one
                oldest = None
            if oldest is not None:
                del self._queue[oldest]  # counted in _appended when it was queued
            elif record.get("event") not in PROTECTED:
                self._appended += 1  # handed in, and dropped
            else:
                return True
        self._queue_dropped += 1
        return oldest is not None

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

    def _stamp(self, record: dict[str, Any], seq: int) -> dict[str, Any]:
        event = dict(record)  # the emitter's dict may be shared with other listeners
        event["src"] = self.src
        event["seq"] = seq
        return event

    def _take(self, limit: int) -> list[dict[str, Any]]:
        batch: list[dict[str, Any]] = []
        with self._queue_lock:
            while self._queue and len(batch) < limit:
                try:
                    record = self._queue.popleft()
                except IndexError:
                    break
                self._seq += 1
                batch.append(self._stamp(record, self._seq))
        return batch

    def _put_back(self, batch: list[dict[str, Any]]) -> None:
        """Returns a batch to the front of the queue, in order (the disk refuses)."""
        with self._queue_lock:
            for event in reversed(batch):
                self._queue.appendleft(event)

    def _spool_append(self, batch: list[dict[str, Any]]) -> bool:
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
                self._put_back(batch)
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
                    self._put_back(batch)  # disk refuses: back to memory
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

    def _post(self, batch: list[Any], own: int) -> bool:
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
