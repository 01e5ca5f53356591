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

import hashlib
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
#: Bytes of images (pixels copied, or encoded and not yet uploaded) held in memory at
#: most (``STEPWATCH_MEDIA_MAX_BYTES``); an image past it is dropped and counted.
DEFAULT_MEDIA_MAX_BYTES = 64 * 1024 * 1024
#: An image whose upload the relay answers with 5xx is retried this many times (its
#: batch's other events go on without it), first after this many seconds, doubling.
MEDIA_RETRIES = 5
MEDIA_RETRY_BACKOFF = 0.5


def media_max_from_env() -> int:
    """``STEPWATCH_MEDIA_MAX_BYTES`` (an integer, optionally with K/M/G) or the default."""
    raw = os.environ.get("STEPWATCH_MEDIA_MAX_BYTES", "").strip().upper()
    if not raw:
        return DEFAULT_MEDIA_MAX_BYTES
    scale = {"K": 1024, "M": 1024**2, "G": 1024**3}.get(raw[-1], 1)
    try:
        return max(0, int(float(raw.rstrip("KMG")) * scale))
    except ValueError:
        return DEFAULT_MEDIA_MAX_BYTES


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
    the spool cap (never run start/end, checkpoints or errors from the spool), and
    images given up to stay within ``media_max_bytes`` in memory (default
    ``STEPWATCH_MEDIA_MAX_BYTES`` or 64 MiB) or the spool cap on disk.

    Images (``image`` events carrying a :class:`stepwatch._media.PendingImage` in
    ``_media``): the sender thread encodes each when it takes it from the queue, keeps
    the bytes in memory by their SHA-256, and before POSTing a batch uploads the bytes
    of each image in it (``PUT …/media/{sha256}``); an image event is never POSTed
    before the relay took its bytes. A refusal (4xx: not an image, over a limit)
    drops that image and its event with a warning and sends the rest. A relay away
    fails the batch as for events, so it is retried, and spooled with the bytes
    written beside the spool file (``<spool>/<run>/media/<sha256>``). A relay that
    answers an upload with 5xx gets the batch without that image, which is retried
    on its own (:data:`MEDIA_RETRIES` times, with a new ``seq``) before it is dropped.
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
        # Media: bytes held in memory are what the training thread handed in
        # (_media_in, its counter) less what the sender thread encoded or dropped
        # (_media_out, its own), plus encoded bytes waiting for their upload.
        self.media_max_bytes = (
            media_max_from_env() if media_max_bytes is None else max(0, media_max_bytes)
        )
        self._media_in = 0
        self._media_out = 0
        self._blob_bytes = 0
        self._blobs: dict[str, bytes] = {}
        self._uploaded: set[str] = set()  # held by the relay for this run
        #: Images dropped over the memory bound (training thread) / the disk cap, lost
        #: or unencodable (sender thread).
        self.media_dropped = 0
        self.media_lost = 0
        self._media_reported = 0
        self.media_dir = self.spool_dir / run / "media"
        self._media_disk = _dir_size(self.media_dir)
        self._media_endpoint = f"{self.url}/api/runs/{run}/media/"
        # Image events held back while the relay answers their upload with 5xx.
        self._media_retry: list[dict[str, Any]] = []
        self._media_retry_at = 0.0
        self._media_attempts: dict[str, int] = {}
        self._refused_names: set[Any] = set()
        self._wake = threading.Event()
        self._stop = False
        self._stop_evt = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="stepwatch-sender", daemon=True)
        self._thread.start()

    @property
    def dropped(self) -> int:
        """Events given up: memory queue overflow plus spool-cap drops, plus images
        dropped over the bounds of pending media."""
        return self._queue_dropped + self.spool.dropped + self.media_dropped + self.media_lost

    @property
    def media_pending_bytes(self) -> int:
        """Bytes of images held in memory now (pixels to encode, bytes to upload)."""
        return self._media_in - self._media_out + self._blob_bytes

    def hold_media(self, nbytes: int) -> bool:
        """Training thread: room for ``nbytes`` more of pending images? False (the
        image is dropped and counted) past :attr:`media_max_bytes`."""
        if self.media_pending_bytes + nbytes > self.media_max_bytes:
            self.media_dropped += 1
            if self.media_dropped == 1:
                _log.warning(
                    "stepwatch: an image was dropped: %d bytes of images already wait "
                    "for the relay (STEPWATCH_MEDIA_MAX_BYTES=%d)",
                    self.media_pending_bytes,
                    self.media_max_bytes,
                )
            return False
        self._media_in += nbytes
        return True

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
                item = self._queue[oldest].get("_media")
                if item is not None:
                    self._media_in -= item.nbytes  # its pixels are let go with it
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
            and self.media_dropped + self.media_lost <= self._media_reported
            and not self._media_retry
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
        return self._resolve(batch)

    def _resolve(self, batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Encodes the images of a batch just taken (sender thread): each image event
        gets its ``media`` reference and loses its pixels; the bytes wait in memory
        for their upload. An image that cannot be encoded is dropped, with a warning."""
        if not any("_media" in e for e in batch):
            return batch
        out: list[dict[str, Any]] = []
        for e in batch:
            item = e.pop("_media", None)
            if item is None:
                out.append(e)
                continue
            try:
                blob = item.encode()
            except Exception as ex:
                blob = None
                why = f"stepwatch: image {e.get('name')!r} not sent: could not be encoded: {ex}"
                _log.warning("%s", why)
                if e.get("name") not in self._refused_names:  # the run's log: once a name
                    self._refused_names.add(e.get("name"))
                    self._tell(why)
            self._media_out += item.nbytes
            if blob is None:
                self.media_lost += 1
                self._done += 1
                continue
            sha = hashlib.sha256(blob).hexdigest()
            e["media"] = sha
            if sha not in self._uploaded and sha not in self._blobs:
                self._blobs[sha] = blob
                self._blob_bytes += len(blob)
            out.append(e)
        return out

    def _put_back(self, batch: list[dict[str, Any]]) -> None:
        """Returns a batch to the front of the queue, in order (the disk refuses)."""
        with self._queue_lock:
            for event in reversed(batch):
                self._queue.appendleft(event)

    def _spool_append(self, batch: list[dict[str, Any]]) -> bool:
        before = self.spool.dropped
        try:
            batch = self._spool_media(batch)
            self.spool.append(batch)
        except OSError as e:
            self.last_error = f"spool unwritable: {e}"
            return False
        self._done += self.spool.dropped - before
        return True

    def _spool_media(self, batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Writes the bytes of the batch's images still in memory beside the spool
        (``media/<sha256>``), before their events are spooled; an image over the
        spool's cap on disk is dropped with its event. Raises OSError."""
        out: list[dict[str, Any]] = []
        for e in batch:
            sha = e.get("media") if e.get("event") == "image" else None
            blob = self._blobs.get(sha) if isinstance(sha, str) else None
            if blob is None or sha is None:
                out.append(e)
                continue
            if self._media_disk + len(blob) > self.spool.max_bytes:
                self.media_lost += 1
                self._done += e.get("src") == self.src
                self._forget_blob(sha)
                continue
            self.media_dir.mkdir(parents=True, exist_ok=True)
            tmp = self.media_dir / f".{sha}.{self.src}.tmp"
            with open(tmp, "wb") as f:
                f.write(blob)
            os.replace(tmp, self.media_dir / sha)
            self._media_disk += len(blob)
            self._forget_blob(sha)
            out.append(e)
        return out

    def _forget_blob(self, sha: str) -> None:
        blob = self._blobs.pop(sha, None)
        if blob is not None:
            self._blob_bytes -= len(blob)

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
                lost = self.media_dropped + self.media_lost
                if lost > self._media_reported:
                    self._media_reported = lost
                    self._injected += 1
                    self._queue.append(media_drop_report(lost))
                retry = bool(self._media_retry) and time.monotonic() >= self._media_retry_at
                if not self._queue and not retry:
                    if self._stop:
                        return
                    self._wake.wait(DEFAULT_LINGER)
                    self._wake.clear()
                    continue
                batch = self._take_retry() if retry else self._take(DEFAULT_MAX_BATCH)
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
        False when it is unreachable or failing. ``own`` of them count as this process's.
        The bytes of the batch's images go first; an image refused goes no further."""
        if any(e.get("event") == "image" for e in batch):
            taken = self._upload_media(batch)
            if taken is None:
                return False
            keep, deferred = taken
            own -= sum(e.get("src") == self.src for e in batch) - sum(
                e.get("src") == self.src for e in keep
            )
            if deferred:
                self._defer(deferred)  # counted again when retried with our src
            batch = keep
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

    # -- media (sender thread) ---------------------------------------------------------
    def _upload_media(
        self, batch: list[dict[str, Any]]
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]] | None:
        """Uploads the bytes of every image of ``batch`` the relay does not hold yet.
        The batch without the images refused (each dropped with a warning) or failing
        (5xx: the second list, to retry on their own), or None when the relay is away
        (the whole batch is to be retried)."""
        keep: list[dict[str, Any]] = []
        deferred: list[dict[str, Any]] = []
        refused: dict[str, str | None] = {}
        for e in batch:
            sha = e.get("media") if e.get("event") == "image" else None
            if not isinstance(sha, str) or sha in self._uploaded:
                keep.append(e)
                continue
            if sha in refused:
                why = refused[sha]
            else:
                answer = self._put_media(sha)
                if answer is False:
                    return None
                if answer is True:
                    keep.append(e)
                    continue
                why = refused[sha] = answer
            if why is None:
                deferred.append(e)
                continue
            self.rejected += 1
            self._done += e.get("src") == self.src
            self.last_rejection = f"relay refused image {e.get('name')!r}: {why}"
            _log.warning("stepwatch: %s; the image is dropped", self.last_rejection)
            if e.get("name") not in self._refused_names:  # the run's log: once a name
                self._refused_names.add(e.get("name"))
                self._tell(f"stepwatch: {self.last_rejection}; the image is dropped")
        return keep, deferred

    def _tell(self, message: str) -> None:
        """A warning for the run's log, from the sender thread."""
        self._injected += 1
        self._queue.append(
            {"event": "log", "level": "warning", "logger": "stepwatch", "message": message}
        )

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
                    self._injected += 1  # another process's: ours to deliver now
                    e["src"] = self.src
                self._seq += 1
                e["seq"] = self._seq
        return batch

    def _drop_bytes(self, sha: str) -> None:
        self._forget_blob(sha)
        path = self.media_dir / sha
        try:
            size = path.stat().st_size
            path.unlink()
            self._media_disk -= size
        except OSError:
            pass

    def _put_media(self, sha: str) -> bool | str | None:
        """One image's bytes to the relay: True once it holds them, False when it is
        away, None when it failed (5xx), else why it refused them (or why they are
        gone)."""
        blob = self._blobs.get(sha)
        on_disk = False
        if blob is None:
            try:
                blob = (self.media_dir / sha).read_bytes()
                on_disk = True
            except OSError:
                held = self._media_request("GET", sha, None)
                if held is True:
                    self._uploaded.add(sha)
                    return True
                if isinstance(held, str):
                    return "its bytes were lost before they were sent"
                return held
        answer = self._media_request("PUT", sha, blob)
        if answer is False or answer is None:
            return answer
        # Taken or refused: either way these bytes are done with.
        if answer is True:
            self._uploaded.add(sha)
            self._media_attempts.pop(sha, None)
        self._forget_blob(sha)
        if on_disk:
            try:
                (self.media_dir / sha).unlink()
                self._media_disk -= len(blob)
            except OSError:
                pass
        return answer

    def _media_request(self, method: str, sha: str, body: bytes | None) -> bool | str | None:
        """``method`` on ``…/media/{sha}``: True on 200, False when the relay is away or
        refusing our credentials, None when it answered 5xx (or 408 / 429), else the
        relay's error."""
        req = urllib.request.Request(self._media_endpoint + sha, data=body, method=method)
        if body is not None:
            req.add_header("Content-Type", "application/octet-stream")
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=max(self.timeout, 30.0)) as resp:
                resp.read()
            return True
        except urllib.error.HTTPError as e:
            detail = e.read().decode(errors="replace")[:500]
            if e.code in (401, 403):
                if self.last_error is None or "credentials" not in self.last_error:
                    _log.warning("stepwatch: relay refused our credentials: %s", detail)
                self.last_error = f"relay refused our credentials ({e.code}): {detail}"
                return False
            if 400 <= e.code < 500 and e.code not in (408, 429):
                return f"{e.code} {_error_of(detail) or e.reason}"
            self.last_error = f"relay answered {e.code} to an image: {detail}"
            return None
        except Exception as e:
            self.last_error = f"relay unreachable: {e}"
        return False

    def clear_media_dir(self) -> None:
        """Removes image bytes left beside the spool once no spool file of the run
        refers to them any more (everything sent)."""
        try:
            if spool_files(self.spool_dir, self.run):
                return
            for p in self.media_dir.iterdir():
                p.unlink()
            self.media_dir.rmdir()
        except OSError:
            pass
        self._media_disk = 0


def _bad_index(detail: str, n: int) -> int | None:
    """The index of the bad event in a 400 answer, if the relay named one."""
    try:
        index = json.loads(detail).get("index")
    except (ValueError, AttributeError):
        return None
    return index if isinstance(index, int) and 0 <= index < n else None


def _error_of(detail: str) -> str | None:
    """The ``error`` of a JSON answer."""
    try:
        err = json.loads(detail).get("error")
    except (ValueError, AttributeError):
        return detail.strip() or None
    return str(err) if err else (detail.strip() or None)


def _dir_size(path: Path) -> int:
    try:
        return sum(p.stat().st_size for p in path.iterdir() if p.is_file())
    except OSError:
        return 0


def media_drop_report(dropped: int) -> dict[str, Any]:
    """The ``log`` event that tells the dashboard images were dropped."""
    return {
        "event": "log",
        "level": "warning",
        "logger": "stepwatch",
        "message": (
            f"stepwatch: {dropped} images dropped (over the bound of images waiting "
            "for the relay, refused unencodable, or the spool full)"
        ),
        "dropped_media": dropped,
    }
