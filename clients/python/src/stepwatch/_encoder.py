"""Encoding off the training thread's GIL: a helper process that turns batches into
NDJSON lines, so the sender thread only ``marshal``-s them (a tenth of the work of
JSON, floats above all) and waits on a pipe with the GIL let go.

The helper runs this interpreter on ``_wire.py`` alone (loaded by its path, in isolated
mode: it imports no ``stepwatch``, connects nowhere, ignores Ctrl-C), reads frames on
its stdin (one end of a socket pair, whose timeouts the kernel keeps, so a round trip
is two system calls) and ends when the stdin closes, so it never outlives its trainer. It is
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
import socket
import subprocess
import sys
import threading
import time
from typing import Any

from . import _conn, _wire

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
    if not hasattr(socket, "MSG_DONTWAIT"):  # (where there is none: Windows)
        return False
    return os.environ.get("STEPWATCH_ENCODER", "process").strip().lower() != "thread"


class Encoder:
    """The helper process of one sender. Thread-safe; :meth:`blob` never raises."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None  # our end of the helper's stdin/stdout
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
            return self._start()
        assert self._sock is not None
        try:
            hello = self._sock.recv(4, socket.MSG_DONTWAIT)
        except BlockingIOError:
            if time.monotonic() - self._started > START_TIMEOUT:
                self._give_up()
            return False
        except OSError:
            hello = b""
        if hello == b"SW1\n":
            self._ready = True
            _conn.kernel_timeout(self._sock, ANSWER_TIMEOUT)
            return True
        self._give_up()
        return False

    def _start(self) -> bool:
        """Starts the helper; False (this batch is encoded here while it starts)."""
        if not sys.executable or not hasattr(socket, "socketpair"):
            self._failed = True
            return False
        try:
            ours, theirs = socket.socketpair()
        except OSError:
            self._failed = True
            return False
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-I", "-c", _CODE, os.path.abspath(_wire.__file__)],
                stdin=theirs.fileno(),
                stdout=theirs.fileno(),
                stderr=subprocess.DEVNULL,
                close_fds=True,
            )
        except Exception as e:
            _log.debug("stepwatch: no encoder process (%s); encoding here", e)
            ours.close()
            self._failed = True
            return False
        finally:
            theirs.close()
        self._sock = ours
        self._started = time.monotonic()
        return False

    def _ask(self, frame: bytes) -> bytes | None:
        sock = self._sock
        assert sock is not None
        sock.sendall(len(frame).to_bytes(4, "big") + frame)
        data = b""
        want = 4
        while len(data) < want:  # usually one receive: the answer comes in one write
            chunk = sock.recv(max(1 << 20, want - len(data)))
            if not chunk:
                raise EOFError("the encoder process ended")
            data += chunk
            if want == 4 and len(data) >= 4:
                n = int.from_bytes(data[:4], "big")
                if n == 0xFFFFFFFF:
                    return None  # it could not: here, then (its cleaning of odd values)
                want = 4 + n
        return data[4:]

    def _give_up(self) -> None:
        self._failed = True
        self._stop()

    def _stop(self) -> None:
        proc, self._proc = self._proc, None
        sock, self._sock = self._sock, None
        self._ready = False
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass
        if proc is None:
            return
        try:
            proc.wait(1.0)
        except Exception:
            proc.kill()
