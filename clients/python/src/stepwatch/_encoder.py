"""Encoding off the training thread's GIL: a helper process that turns batches into
NDJSON lines, so the sender thread only ``marshal``-s them (a tenth of the work of
JSON, floats above all) and waits on a pipe with the GIL let go.

The helper runs this interpreter on ``_wire.py`` alone (loaded by its path, in isolated
mode: it imports no ``stepwatch``, connects nowhere, ignores Ctrl-C), reads frames on
its stdin and ends when the stdin closes, so it never outlives its trainer. It is
started on the first batch worth it and used once it said it is ready; its answer is
byte for byte what :func:`stepwatch._wire.stamped_lines` makes in this process. A batch
``marshal`` cannot carry (numpy scalars, custom objects), a small batch, a helper that
cannot start, dies or stalls: the batch is encoded here instead, as before.
``STEPWATCH_ENCODER=thread`` keeps all encoding in this process.
"""

from __future__ import annotations

import logging
import marshal
import os
import select
import subprocess
import sys
import threading
import time
from typing import Any

from . import _wire

_log = logging.getLogger("stepwatch")

#: Batches smaller than this are encoded in this process (a pipe round trip costs more).
MIN_BATCH = 64
#: Seconds the helper may take to start, or to answer one batch, before it is given up.
START_TIMEOUT = 10.0
ANSWER_TIMEOUT = 30.0
_CODE = (
    "import importlib.util as u, sys; s = u.spec_from_file_location('_stepwatch_wire', "
    "sys.argv[1]); m = u.module_from_spec(s); s.loader.exec_module(m); "
    "m.serve(sys.stdin.buffer, sys.stdout.buffer)"
)


def wanted() -> bool:
    return os.environ.get("STEPWATCH_ENCODER", "process").strip().lower() != "thread"


class Encoder:
    """The helper process of one sender. Thread-safe; :meth:`blob` never raises."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._ready = False
        self._started = 0.0
        self._failed = not wanted()

    def blob(self, records: list[dict[str, Any]], src: str, first: int) -> _wire.Blob | None:
        """``records`` stamped as NDJSON lines by the helper, or None: encode them here."""
        if self._failed or len(records) < MIN_BATCH:
            return None
        try:
            frame = marshal.dumps((src, first, records))
        except (ValueError, TypeError):  # not plain data: here, as JSON would clean it
            return None
        with self._lock:
            if not self._usable():
                return None
            try:
                blob = self._ask(frame)
            except Exception as e:
                _log.debug("stepwatch: the encoder process failed (%s); encoding here", e)
                self._give_up()
                return None
        return None if blob is None else _wire.Blob(blob, len(records))

    def close(self) -> None:
        with self._lock:
            self._failed = True
            self._stop()

    # -- under the lock -----------------------------------------------------------------
    def _usable(self) -> bool:
        if self._ready:
            return True
        if self._proc is None:
            if not sys.executable:
                self._failed = True
                return False
            try:
                self._proc = subprocess.Popen(
                    [sys.executable, "-I", "-c", _CODE, os.path.abspath(_wire.__file__)],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL,
                    close_fds=True,
                )
            except Exception as e:
                _log.debug("stepwatch: no encoder process (%s); encoding here", e)
                self._failed = True
                return False
            self._started = time.monotonic()
            for f in (self._proc.stdin, self._proc.stdout):
                if f is not None:
                    os.set_blocking(f.fileno(), False)
            return False  # this batch here, while it starts
        out = self._proc.stdout
        assert out is not None
        if select.select([out], [], [], 0)[0]:
            if os.read(out.fileno(), 4) == b"SW1\n":
                self._ready = True
                return True
            self._give_up()
        elif time.monotonic() - self._started > START_TIMEOUT:
            self._give_up()
        return False

    def _ask(self, frame: bytes) -> bytes | None:
        proc = self._proc
        assert proc is not None and proc.stdin is not None and proc.stdout is not None
        deadline = time.monotonic() + ANSWER_TIMEOUT
        _write_all(proc.stdin.fileno(), len(frame).to_bytes(4, "big") + frame, deadline)
        fd = proc.stdout.fileno()
        n = int.from_bytes(_read_exact(fd, 4, deadline), "big")
        if n == 0xFFFFFFFF:
            return None  # it could not: here, then (its cleaning of odd values is ours)
        return _read_exact(fd, n, deadline)

    def _give_up(self) -> None:
        self._failed = True
        self._stop()

    def _stop(self) -> None:
        proc, self._proc = self._proc, None
        self._ready = False
        if proc is None:
            return
        for f in (proc.stdin, proc.stdout):
            try:
                if f is not None:
                    f.close()
            except OSError:
                pass
        try:
            proc.wait(1.0)
        except Exception:
            proc.kill()


def _write_all(fd: int, data: bytes, deadline: float) -> None:
    view = memoryview(data)
    while view:
        if not select.select([], [fd], [], max(0.0, deadline - time.monotonic()))[1]:
            raise TimeoutError("the encoder process does not read")
        try:
            view = view[os.write(fd, view[: 1 << 20]) :]
        except BlockingIOError:
            pass


def _read_exact(fd: int, n: int, deadline: float) -> bytes:
    parts: list[bytes] = []
    left = n
    while left:
        if not select.select([fd], [], [], max(0.0, deadline - time.monotonic()))[0]:
            raise TimeoutError("the encoder process does not answer")
        try:
            chunk = os.read(fd, min(left, 1 << 20))
        except BlockingIOError:
            continue
        if not chunk:
            raise EOFError("the encoder process ended")
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)
