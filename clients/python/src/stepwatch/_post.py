"""The relay's answers to a batch of events (the sender thread): one request as it is
while it fits (:data:`MAX_BODY`), else line by line in requests that fit; a refused event
(400 naming its index) is dropped alone and the rest sent again, a batch over the
relay's ``--max-body`` (413) halved; credentials refused, 5xx, 408 and 429 leave the
events to be sent again. A part of :class:`stepwatch._sender.RelaySender`."""

from __future__ import annotations

import json
import logging
from typing import Any

from ._conn import Answer, Connection
from ._wire import Blob

_log = logging.getLogger("stepwatch")

#: Most bytes per request (the relay's default limit is 16 MiB).
MAX_BODY = 4 * 1024 * 1024


class Posting:
    """The POST half of a sender."""

    sent: int
    rejected: int
    last_error: str | None
    last_rejection: str | None
    _conn: Connection
    _path: str

    def _post_lines(self, batch: Blob | list[str] | list[bytes]) -> int | None:
        """NDJSON lines in requests of at most :data:`MAX_BODY` bytes: how many of them
        the relay took or refused (every one), or None when it is unreachable or failing
        (the caller keeps them all, to send again: a repeat is stored once)."""
        if isinstance(batch, Blob):
            if len(batch.data) <= MAX_BODY:  # the usual case: one request as it is
                answer = self._request(batch.data)
                if answer is None or self._unavailable(answer):
                    return None
                if 200 <= answer.status < 300:
                    self.sent += batch.count
                    self.last_error = None
                    return batch.count
            lines: list[Any] = batch.lines()  # refused, or too big: line by line
        else:
            lines = list(batch)
        work: list[list[Any]] = [lines]
        finished = acked = 0
        while work:
            chunk = work.pop()
            body, chunk, rest = _body(chunk)
            if rest:
                work.append(rest)
            answer = self._request(body)
            if answer is None or self._unavailable(answer):
                return None
            status = answer.status
            if 200 <= status < 300:
                finished += len(chunk)
                acked += len(chunk)
                continue
            detail = answer.body.decode(errors="replace")[:500]
            if status == 413 and len(chunk) > 1:  # over the relay's --max-body: halve
                half = len(chunk) // 2
                work += [chunk[half:], chunk[:half]]
                continue
            bad = _bad_index(detail, len(chunk)) if status == 400 else None
            if bad is not None:
                # Drop only the event the relay named; send the rest again.
                self.rejected += 1
                finished += 1
                name = _name_of(chunk[bad])
                self.last_rejection = f"relay refused event {name!r}: {detail}"
                _log.warning("stepwatch: %s", self.last_rejection)
                rest_of = chunk[:bad] + chunk[bad + 1 :]
                if rest_of:
                    work.append(rest_of)
                continue
            self.rejected += len(chunk)
            finished += len(chunk)
            self.last_rejection = f"relay refused a batch ({status}): {detail}"
            _log.warning("stepwatch: %s", self.last_rejection)
        self.sent += acked
        self.last_error = None
        return finished

    def _request(self, body: bytes) -> Answer | None:
        """One POST of NDJSON; None when the relay cannot be reached."""
        try:
            return self._conn.request("POST", self._path, body, "application/x-ndjson")
        except Exception as e:  # relay down, DNS, timeout: keep trying
            self.last_error = f"relay unreachable: {e}"
            return None

    def _unavailable(self, answer: Answer) -> bool:
        """The relay answered but did not decide on the events (credentials refused,
        5xx, 408, 429): keep them and try again later."""
        status = answer.status
        if 200 <= status < 300 or (400 <= status < 500 and status not in (401, 403, 408, 429)):
            return False
        detail = answer.body.decode(errors="replace")[:500]
        if status in (401, 403):
            # Credentials missing or not allowed: keep the events (spooled) and
            # retry, so fixing STEPWATCH_TOKEN loses nothing; say it loudly.
            if self.last_error is None or "credentials" not in self.last_error:
                _log.warning("stepwatch: relay refused our credentials: %s", detail)
            self.last_error = f"relay refused our credentials ({status}): {detail}"
        else:
            self.last_error = f"relay answered {status}: {detail}"
        return True


def _body(chunk: list[Any]) -> tuple[bytes, list[Any], list[Any]]:
    """The request body of the first lines of ``chunk`` that fit in :data:`MAX_BODY`
    (one at least), those lines, and the rest."""
    rest: list[Any] = []
    if sum(map(len, chunk)) > MAX_BODY:
        size = 0
        for i, ln in enumerate(chunk):
            size += len(ln)
            if size > MAX_BODY and i > 0:
                chunk, rest = chunk[:i], chunk[i:]
                break
    data = chunk[0][:0].join(chunk)
    return (data.encode() if isinstance(data, str) else data), chunk, rest


def _name_of(line: str | bytes) -> Any:
    try:
        return json.loads(line).get("event")
    except (ValueError, AttributeError):
        return None


def _bad_index(detail: str, n: int) -> int | None:
    """The index of the bad event in a 400 answer, if the relay named one."""
    try:
        index = json.loads(detail).get("index")
    except (ValueError, AttributeError):
        return None
    return index if isinstance(index, int) and 0 <= index < n else None
