"""Delivery: forwarding one run's events to a Stepwatch relay from a background thread.

The training thread only appends the event's dict to a deque (no lock, no encoding, no
IO while there is room) and wakes the sender only when it was idle or a full batch is
waiting. The sender thread takes batches, writes each event as one NDJSON line stamped
with ``src`` and an increasing ``seq`` (so a retried batch is stored once), and POSTs
them over one keep-alive connection (:mod:`stepwatch._conn`). An event emitted after
the sender was idle for at least half the linger goes at once; one that has company
waits up to ``linger`` for more, so a busy loop costs a few requests a second.

A full queue moves its oldest events to the spool on disk (see ``_spool``), which is
sent before the queue, in order; only when the disk refuses does it drop its oldest
event that is not part of the run's lifecycle (``PROTECTED``: start, end, checkpoints,
errors, command answers), the rule the spool follows when full. While the relay is down
or answering 5xx the sender retries with capped, jittered exponential backoff, and
meanwhile moves what the trainer emits to the spool, sent in order once the relay is
back. Nothing here ever raises into training.
"""

from __future__ import annotations

import itertools
import json
import logging
import operator
import os
import random
import threading
import time
import uuid
from collections import deque
from pathlib import Path
from typing import Any, Union

from ._conn import Connection
from ._encoder import Encoder
from ._post import MAX_BODY, Posting
from ._spool import PROTECTED, Spool, drop_report, max_bytes_from_env, spool_files
from ._upload import (
    DEFAULT_MEDIA_MAX_BYTES,
    MediaSending,
    media_drop_report,
    media_max_from_env,
)
from ._wire import Blob, dumps, stamped_blob

__all__ = [
    "DEFAULT_MEDIA_MAX_BYTES",
    "MAX_BODY",
    "RelaySender",
    "media_drop_report",
    "media_max_from_env",
]

_log = logging.getLogger("stepwatch")
_event_of = operator.methodcaller("get", "event")

#: Events held in memory; past it the oldest go to the spool on disk.
DEFAULT_QUEUE_SIZE = 100_000
#: Most events per request.
DEFAULT_MAX_BATCH = 10_000
#: Seconds an event waits for company before it is sent (one emitted after the sender
#: was idle for half of it goes at once).
DEFAULT_LINGER = 0.02
#: Backoff bounds (seconds) while the relay is unreachable.
MIN_BACKOFF, MAX_BACKOFF = 0.1, 5.0
#: While waiting out a backoff, memory is moved to the spool this often (seconds).
SPILL_EVERY = 0.2
#: Default bounded wait (seconds) for the final flush at exit.
DEFAULT_EXIT_FLUSH = 3.0
#: An image whose upload the relay answers with 5xx is retried this many times (its
#: batch's other events go on without it), first after this many seconds, doubling.
MEDIA_RETRIES = 5
MEDIA_RETRY_BACKOFF = 0.5
#: The sender, idle, looks around this often even when nothing wakes it (seconds).
IDLE_WAIT = 0.5

#: A batch taken from the queue: NDJSON lines, or (when it holds images) stamped dicts.
Batch = Union[Blob, list[dict[str, Any]]]


def default_spool_dir() -> Path:
    """Where unsent events wait for the relay: ``STEPWATCH_SPOOL_DIR`` or ~/.cache."""
    env = os.environ.get("STEPWATCH_SPOOL_DIR")
    return Path(env) if env else Path.home() / ".cache" / "stepwatch" / "spool"


def default_run_id() -> str:
    return time.strftime("run-%Y%m%d-%H%M%S-") + str(os.getpid())


class RelaySender(Posting, MediaSending):
    """Sends one run's events to a relay. Create it with :func:`connect`.

    ``spool_max_bytes`` caps the spool file (default ``STEPWATCH_SPOOL_MAX_BYTES`` or
    128 MiB); ``queue_size`` events are held in memory before the oldest go to the
    spool; ``linger`` (seconds) is how long an event waits for company. ``dropped``
    counts events given up to stay within the spool cap (never run start/end,
    checkpoints or errors), the memory queue when the disk refuses, and images given up
    to stay within ``media_max_bytes`` in memory (default ``STEPWATCH_MEDIA_MAX_BYTES``
    or 64 MiB) or the spool cap on disk.

    Images (``image`` events carrying a :class:`stepwatch._media.PendingImage` in
    ``_media``): see :mod:`stepwatch._upload`. A relay away fails the batch as for
    events, so it is retried, and spooled with the bytes written beside the spool file
    (``<spool>/<run>/media/<sha256>``). A relay that answers an upload with 5xx gets the
    batch without that image, which is retried on its own (:data:`MEDIA_RETRIES` times,
    with a new ``seq``) before it is dropped.
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
        media_max_bytes: int | None = None,
        linger: float = DEFAULT_LINGER,
    ) -> None:
        self.url = url.rstrip("/")
        self.spool_dir = Path(spool_dir) if spool_dir else default_spool_dir()
        self.run = run
        self.endpoint = f"{self.url}/api/runs/{run}/events"
        self._path = f"/api/runs/{run}/events"
        self.token = token
        self.timeout = timeout
        self.linger = max(0.0, float(linger))
        self.max_batch = max(1, DEFAULT_MAX_BATCH)
        self.src = f"py-{uuid.uuid4().hex[:12]}"
        self._conn = Connection(self.url, token, timeout)
        self._encoder = Encoder()
        self._queue: deque[dict[str, Any]] = deque()
        self._queue_size = max(1, queue_size)
        # Held by whoever takes from the queue: the sender thread, and the training
        # thread only when the queue is full (moving its oldest events to the spool).
        self._queue_lock = threading.Lock()
        self._seq = 0
        self._taken = 0  # events taken from the queue (under the lock), to send or spool
        self._injected = 0  # events the sender thread queued itself (drop reports)
        self._done = 0  # own events acknowledged, refused, or lost (sender thread)
        self.sent = 0
        self.rejected = 0
        #: Events moved from the full memory queue to the spool.
        self.spilled = 0
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
        self._inflight: Batch | None = None
        # Batches the relay did not take and the disk refused too: sent first.
        self._held: list[Batch] = []
        self._init_media(media_max_bytes)
        # Waking the sender: _idle while it waits with nothing queued (the next emit
        # wakes it), and an emit that fills a batch wakes it too.
        self._wake = threading.Event()
        self._idle = False
        self._quick = False  # the queued events came after an idle spell: send at once
        self._idle_since: float | None = None  # since when nothing was queued
        # Queued events that make a batch worth sending at once.
        self._worth = min(self.max_batch, max(1, self._queue_size // 2))
        # Since when the queued events wait: the last take, or the end of an idle spell.
        self._since: float | None = None
        self._flushing = 0  # flushes waiting: no lingering meanwhile
        self._flush_lock = threading.Lock()
        self._stop = False
        self._stop_evt = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="stepwatch-sender", daemon=True)
        self._thread.start()

    @property
    def dropped(self) -> int:
        """Events given up: spool-cap drops, memory queue overflow (the disk refusing),
        plus images dropped over the bounds of pending media."""
        return self._queue_dropped + self.spool.dropped + self.media_dropped + self.media_lost

    @property
    def _appended(self) -> int:
        """Events handed in by the trainer so far: queued, taken, or dropped."""
        return len(self._queue) + self._taken - self._injected + self._queue_dropped

    # -- training thread -------------------------------------------------------------
    def __call__(self, record: dict[str, Any]) -> None:
        """Listener: queue one event. O(1) while there is room, never raises."""
        q = self._queue
        n = len(q)
        if n >= self._queue_size and not self._overflow(record):
            return
        q.append(record)
        if self._idle or n == self._worth:
            self._idle = False
            self._wake.set()

    def _overflow(self, record: dict[str, Any]) -> bool:
        """The queue is full: moves its oldest quarter to the spool; True when
        ``record`` is to be queued. When the disk refuses, the old rule: drops the
        oldest droppable event, or ``record`` itself when nothing queued may go (and it
        may). A lifecycle event is kept beyond the cap."""
        if self._spill_chunk(max(1, self._queue_size // 4), images=False):
            self._wake.set()
            return True
        return self._make_room(record)

    def _make_room(self, record: dict[str, Any]) -> bool:
        with self._queue_lock:
            if len(self._queue) < self._queue_size:
                return True
            try:
                oldest = next(
                    (i for i, e in enumerate(self._queue) if e.get("event") not in PROTECTED),
                    None,
                )
            except RuntimeError:  # another thread emitted meanwhile: drop this one
                oldest = None
            if oldest is not None:
                item = self._queue[oldest].get("_media")
                if item is not None:
                    self._media_in -= item.nbytes  # its pixels are let go with it
                del self._queue[oldest]
            elif record.get("event") in PROTECTED:
                return True
        self._queue_dropped += 1
        return oldest is not None

    # -- any thread ------------------------------------------------------------------
    def _spill_chunk(self, limit: int, images: bool = True) -> bool:
        """Moves up to ``limit`` of the oldest queued events to the end of the spool
        (they are newer than everything in it); False when nothing moved (the disk
        refuses, or, without ``images``, the oldest event is an image)."""
        with self._queue_lock:
            q = self._queue
            n = min(limit, len(q))
            if not images:  # (an image's pixels are encoded on the sender thread only)
                n = next((i for i, r in enumerate(itertools.islice(q, n)) if "_media" in r), n)
            if n <= 0:
                return False
            # Taken off the queue once on disk (only appends happen meanwhile): what is
            # queued or spooled is all there is, at every moment.
            records = list(itertools.islice(q, n))
            try:
                batch = self._encode(records, self._seq + 1)
                if isinstance(batch, Blob):
                    self.spool.append_lines(batch)
                else:
                    self._spool_dicts(batch)
            except Exception as e:
                if isinstance(e, OSError):
                    self.last_error = f"spool unwritable: {e}"
                else:
                    _log.debug("stepwatch: spooling failed", exc_info=True)
                return False  # still queued: their seq will be given again
            self._seq += n
            self._taken += n
            for _ in range(n):
                q.popleft()
            self.spilled += n
            return True

    def _delivered(self) -> bool:
        if self._queue or self._held or self._inflight is not None:
            return False
        taken = self._taken  # read after the queue was seen empty
        return (
            self._done + self.spool.dropped >= taken
            and not self.spool.pending()
            and not self._older  # earlier processes' spools count too
            and self.spool.dropped <= self._reported  # the drop report is still to go
            and self.media_dropped + self.media_lost <= self._media_reported
            and not self._media_retry
        )

    def flush(self, timeout: float = 5.0) -> bool:
        """Waits up to ``timeout`` s until everything queued so far is acknowledged."""
        deadline = time.monotonic() + timeout
        with self._flush_lock:
            self._flushing += 1
        try:
            self._wake.set()
            while time.monotonic() < deadline:
                if self._delivered():
                    return True
                time.sleep(0.005)
            return self._delivered()
        finally:
            with self._flush_lock:
                self._flushing -= 1

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
                self._keep(inflight)  # may arrive twice; the relay keeps one
            if self._media_retry:
                self._spool_append(self._take_retry())
            self._spill()
            self.spool.settle()
            if self.spool.pending():
                _log.warning(
                    "stepwatch: relay unreachable; unsent events left in %s", self.spool.path
                )
        elif ok and self.media_dir.exists():
            self.clear_media_dir()
        self._encoder.close()
        return ok

    def _encode(self, records: list[dict[str, Any]], first: int) -> Batch:
        """Records just taken, stamped from ``first`` on: NDJSON lines, or the dicts
        when images are among them (their bytes go first: see :mod:`stepwatch._upload`)."""
        if "image" in map(_event_of, records):
            src = self.src
            stamped = [{**r, "src": src, "seq": s} for r, s in zip(records, itertools.count(first))]
            return self._resolve(stamped)
        blob = self._encoder.blob(records, self.src, first)
        return blob if blob is not None else stamped_blob(records, self.src, first)

    def _take(self, limit: int) -> Batch | None:
        """The next batch from the queue; None when spooled events must go first."""
        with self._queue_lock:
            if self._held or self._older or self.spool.pending():
                return None
            q = self._queue
            n = min(limit, len(q))
            self._taken += n
            first = self._seq + 1
            self._seq += n
            records = [q.popleft() for _ in range(n)]
        return self._encode(records, first)

    def _spool_dicts(self, batch: list[dict[str, Any]], first: bool = False) -> None:
        self.spool.append_lines([dumps(e) + "\n" for e in self._spool_media(batch)], first)

    def _spool_append(self, batch: Batch, first: bool = False) -> bool:
        try:
            if isinstance(batch, Blob):
                self.spool.append_lines(batch, first)
            else:
                self._spool_dicts(batch, first)
        except OSError as e:
            self.last_error = f"spool unwritable: {e}"
            return False
        return True

    def _keep(self, batch: Batch) -> None:
        """A batch the relay did not take: to the spool ahead of what was spooled since
        it was taken, else (the disk refuses) held in memory, to go first."""
        if not self._spool_append(batch, first=True):
            self._held.append(batch)

    def _spill(self) -> None:
        """Moves everything in memory to the spool (relay unreachable)."""
        while self._held:
            if not self._spool_append(self._held[-1], first=True):
                return  # the disk refuses too: keep them in memory, in order
            self._held.pop()
        while self._queue:
            if not self._spill_chunk(self.max_batch):
                return

    def _tell(self, message: str) -> None:
        """A warning for the run's log, from the sender thread."""
        self._injected += 1
        self._queue.append(
            {"event": "log", "level": "warning", "logger": "stepwatch", "message": message}
        )

    # -- sender thread ---------------------------------------------------------------
    def _loop(self) -> None:
        backoff = MIN_BACKOFF
        try:
            while True:
                try:
                    ok = self._once()
                except Exception:  # a bug here must not stop delivery for good
                    _log.exception("stepwatch: the sender failed; going on")
                    ok = False
                if ok is None:
                    if self._stop and not self._queue and not self._held:
                        return
                    continue
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
                    self._wake.clear()  # (an emit that fills a batch: spill it now)
                    if len(self._queue) < self._worth and not self._stop:
                        self._wake.wait(min(SPILL_EVERY, left))
                if self._stop:
                    return
        finally:
            self._conn.close()

    def _once(self) -> bool | None:
        """One step: True when a batch went (or was refused), False when the relay is
        away, None when there was nothing to send yet (after waiting)."""
        if self._held:
            ok = self._post(self._held[0])
            if ok:
                self._held.pop(0)
            return ok
        if self._older or self.spool.pending():
            return self._send_spooled()
        self._report_drops()
        retry = bool(self._media_retry) and time.monotonic() >= self._media_retry_at
        if not retry and not self._ready():
            return None
        batch = self._take_retry() if retry else self._take(self.max_batch)
        if batch is None:
            return None
        self._since = time.monotonic()  # what is queued from now on waits from now
        if not batch:
            return True
        self._inflight = batch
        ok = self._post(batch)
        if not ok:
            self._keep(batch)
        self._inflight = None
        return ok

    def _ready(self) -> bool:
        """Whether to take a batch now; otherwise waits (for the first event, for
        company, or until the linger is over) and answers False."""
        if not self._queue:
            if self._stop:
                return False
            now = time.monotonic()
            if self._idle_since is None:
                self._idle_since = now
            self._wake.clear()
            self._idle = True
            if not self._queue:
                wait = IDLE_WAIT
                if self._media_retry:
                    wait = min(wait, max(0.0, self._media_retry_at - now))
                self._wake.wait(wait)
            self._idle = False
            if self._queue:
                now = time.monotonic()
                self._since = now
                self._quick = now - self._idle_since >= self.linger / 2
                self._idle_since = None
            return False
        now = time.monotonic()
        if self._since is None:
            self._since = now
        if (
            self._quick
            or self._stop
            or self._flushing
            or len(self._queue) >= self._worth
            or now >= self._since + self.linger
        ):
            self._quick = False
            return True
        self._wake.clear()
        if len(self._queue) < self._worth and not self._flushing:
            self._wake.wait(self._since + self.linger - now)
        return False

    def _report_drops(self) -> None:
        if self.spool.dropped > self._reported:
            self._reported = self.spool.dropped
            self._injected += 1
            self._queue.append(drop_report(self._reported, self.spool.dropped_batch_end))
        lost = self.media_dropped + self.media_lost
        if lost > self._media_reported:
            self._media_reported = lost
            self._injected += 1
            self._queue.append(media_drop_report(lost))

    def _send_spooled(self) -> bool:
        """The next lines of the oldest spool file, sent as they are."""
        source = self._older[0] if self._older else self.spool
        blob, pos, gen = source.read_raw(self.max_batch, MAX_BODY)
        if not blob:  # only torn or unreadable lines left: skip past them
            source.advance(pos if pos > source.read_pos else source.size, gen)
            if source is not self.spool and not source.pending():
                self._older.pop(0)
            return True
        own = source is self.spool
        if b'"image"' in blob.data:  # their bytes go first: as events
            events = []
            for ln in blob.lines():
                try:
                    e = json.loads(ln)
                except ValueError:
                    continue
                if isinstance(e, dict):
                    events.append(e)
            finished = self._post_events(events, own=False)
        else:
            finished = self._post_lines(blob)
        if finished is None:
            return False
        if source.advance(pos, gen) and own:  # (a rewritten file sends them again)
            self._done += finished
        return True

    def _post(self, batch: Batch) -> bool:
        """A batch of our own events (lines or dicts): True when the relay took or
        refused every one, False when it is unreachable or failing."""
        if isinstance(batch, Blob):
            finished = self._post_lines(batch)
            if finished is not None:
                self._done += finished
        else:
            finished = self._post_events(batch, own=True)
        return finished is not None

    def _post_events(self, batch: list[dict[str, Any]], own: bool) -> int | None:
        """Events as dicts: the bytes of their images first (an image refused goes no
        further), then the events. Counts its own as done itself (``own``: they are
        this sender's); how many events finished, or None when the relay is away."""
        if any(e.get("event") == "image" for e in batch):
            taken = self._upload_media(batch)
            if taken is None:
                return None
            keep, deferred = taken
            if deferred:
                self._defer(deferred)  # counted when retried with our src
            batch = keep
        finished = self._post_lines([dumps(e) + "\n" for e in batch]) if batch else 0
        if finished is not None and own:
            self._done += sum(e.get("src") == self.src for e in batch)
        return finished

    # -- media retries (sender thread) ---------------------------------------------------
    def _defer(self, events: list[dict[str, Any]]) -> None:
        """Holds back image events whose upload failed with 5xx, or drops them (with a
        warning) after :data:`MEDIA_RETRIES` tries."""
        tries = 0
        for e in events:
            sha = str(e.get("media"))
            tries = self._media_attempts.get(sha, 0) + 1
            if tries > MEDIA_RETRIES:
                self.media_lost += 1
                self._done += e.get("src") == self.src
                self._media_attempts.pop(sha, None)
                self._drop_bytes(sha)
                _log.warning(
                    "stepwatch: image %r dropped: the relay failed its upload %d times (%s)",
                    e.get("name"),
                    MEDIA_RETRIES,
                    self.last_error,
                )
                continue
            self._media_attempts[sha] = tries
            self._media_retry.append(e)
        delay = MEDIA_RETRY_BACKOFF * 2 ** max(0, tries - 1)
        self._media_retry_at = time.monotonic() + min(delay, MAX_BACKOFF)

    def _take_retry(self) -> list[dict[str, Any]]:
        """The held-back image events, each with a new ``seq`` of this sender (the
        relay stores a sender's events only in increasing ``seq``)."""
        batch, self._media_retry = self._media_retry, []
        with self._queue_lock:
            for e in batch:
                if e.get("src") != self.src:
                    self._taken += 1  # another process's: ours to deliver now
                    e["src"] = self.src
                self._seq += 1
                e["seq"] = self._seq
        return batch
