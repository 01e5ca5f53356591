"""Images on the sender thread: encoded when taken from the queue, their bytes uploaded
(``PUT /api/runs/{run}/media/{sha256}``) before the batch that refers to them, written
beside the spool file while the relay is away. A part of :class:`stepwatch._sender.
RelaySender` (its base class), kept apart so that the event path reads on its own.

An image event is never POSTed before the relay took its bytes. A refusal (4xx: not an
image, over a limit) drops that image and its event with a warning and sends the rest;
an upload answered 5xx holds the image back to be retried on its own (the sender's
``_defer``), the rest of its batch going on.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from ._conn import Connection
from ._spool import Spool, spool_files

_log = logging.getLogger("stepwatch")

#: Bytes of images (pixels copied, or encoded and not yet uploaded) held in memory at
#: most (``STEPWATCH_MEDIA_MAX_BYTES``); an image past it is dropped and counted.
DEFAULT_MEDIA_MAX_BYTES = 64 * 1024 * 1024


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


class MediaSending:
    """The media half of a sender: state and the sender thread's image work."""

    src: str
    run: str
    spool: Spool
    spool_dir: Path
    timeout: float
    rejected: int
    last_error: str | None
    last_rejection: str | None
    _done: int
    _conn: Connection
    _media_base: str

    def _init_media(self, media_max_bytes: int | None) -> None:
        # Bytes held in memory are what the training thread handed in (_media_in, its
        # counter) less what the sender thread encoded or dropped (_media_out, its own),
        # plus encoded bytes waiting for their upload.
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
        self.media_dir = self.spool_dir / self.run / "media"
        self._media_disk = _dir_size(self.media_dir)
        self._media_base = f"/api/runs/{self.run}/media/"
        # Image events held back while the relay answers their upload with 5xx.
        self._media_retry: list[dict[str, Any]] = []
        self._media_retry_at = 0.0
        self._media_attempts: dict[str, int] = {}
        self._refused_names: set[Any] = set()

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

    def _tell(self, message: str) -> None:  # the sender's: a warning for the run's log
        raise NotImplementedError

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
        try:
            answer = self._conn.request(
                method,
                self._media_base + sha,
                body,
                "application/octet-stream" if body is not None else None,
                timeout=max(self.timeout, 30.0),
            )
        except Exception as e:
            self.last_error = f"relay unreachable: {e}"
            return False
        if 200 <= answer.status < 300:
            return True
        detail = answer.body.decode(errors="replace")[:500]
        if answer.status in (401, 403):
            if self.last_error is None or "credentials" not in self.last_error:
                _log.warning("stepwatch: relay refused our credentials: %s", detail)
            self.last_error = f"relay refused our credentials ({answer.status}): {detail}"
            return False
        if 400 <= answer.status < 500 and answer.status not in (408, 429):
            return f"{answer.status} {_error_of(detail) or answer.reason}"
        self.last_error = f"relay answered {answer.status} to an image: {detail}"
        return None

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
