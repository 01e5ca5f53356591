"""The on-disk spool: events the relay has not taken yet, in order, bounded in size.

One file per sender (``<spool dir>/<run>/<time>-<src>.ndjson``), one JSON event per
line, each already stamped with ``src``/``seq`` so sending a line twice stores it once.
Lines are appended whole and read from an offset; nothing is fsynced per write, so a
``kill -9`` of the trainer keeps everything written (the OS holds it), while a power cut
may lose the last seconds.

When the file would grow past its cap, it is rewritten without the oldest
``batch_end`` events first, then the oldest other routine events (system samples,
logs, metrics); run start and end, checkpoints, errors and command answers are never
dropped. What was dropped is counted.
"""

from __future__ import annotations

import json
import os
import re
import threading
from pathlib import Path
from typing import Any

from ._wire import Blob, dumps, split_lines

#: Default cap of one sender's spool file.
DEFAULT_MAX_BYTES = 128 * 1024 * 1024
#: After a compaction the file holds at most this share of the cap.
COMPACT_TO = 0.75
#: Events never dropped to keep the spool under its cap.
PROTECTED = frozenset(
    {
        "training_start",
        "training_end",
        "checkpoint_saved",
        "checkpoint_loaded",
        "error_occurred",
        "command_ack",
        "alert",
        "alert_rule",
        "run_meta",
    }
)


def max_bytes_from_env() -> int:
    """``STEPWATCH_SPOOL_MAX_BYTES`` (an integer, optionally with K/M/G) or the default."""
    raw = os.environ.get("STEPWATCH_SPOOL_MAX_BYTES", "").strip().upper()
    if not raw:
        return DEFAULT_MAX_BYTES
    scale = {"K": 1024, "M": 1024**2, "G": 1024**3}.get(raw[-1], 1)
    try:
        return max(1024, int(float(raw.rstrip("KMG")) * scale))
    except ValueError:
        return DEFAULT_MAX_BYTES


def spool_files(spool: Path, run: str) -> list[Path]:
    """A run's spool files, oldest first."""
    d = spool / run
    return sorted(d.glob("*.ndjson")) if d.is_dir() else []


def read_lines(path: Path, pos: int, max_events: int) -> tuple[list[dict[str, Any]], int]:
    """Up to ``max_events`` events from byte ``pos``, and the offset after them. A line
    cut short by a crash or not valid JSON is skipped."""
    events: list[dict[str, Any]] = []
    try:
        with open(path, "rb") as f:
            f.seek(pos)
            while len(events) < max_events:
                line = f.readline()
                if not line:
                    break
                if not line.endswith(b"\n"):  # torn by a crash mid-write: skip it
                    pos += len(line)
                    break
                pos += len(line)
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                if isinstance(event, dict):
                    events.append(event)
    except OSError:
        pass
    return events, pos


_NAMED = re.compile(rb'\{"src":"[^"\\]*","seq":\d+,"event":"([a-z0-9_.-]{1,64})"[,}]')


def _event_name(line: bytes) -> str | None:
    # The sender writes src, seq, then the event's own first field, its name: read it
    # there without parsing the line; any other line is parsed.
    m = _NAMED.match(line)
    if m is not None:
        return m.group(1).decode()
    try:
        name = json.loads(line).get("event")
    except (ValueError, AttributeError):
        return None
    return name if isinstance(name, str) else None


class Spool:
    """One spool file, appended by the sender and read from an offset as it is sent.

    Thread-safe; ``generation`` changes whenever the file is rewritten, so a reader
    holding an older offset does not move past events it never sent.
    """

    def __init__(self, path: Path, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.read_pos = 0
        self.generation = 0
        #: Events dropped to stay under the cap, and how many of them were batch_end.
        self.dropped = 0
        self.dropped_batch_end = 0
        self._lock = threading.Lock()
        try:
            self.size = path.stat().st_size
        except OSError:
            self.size = 0

    @classmethod
    def existing(cls, path: Path) -> Spool:
        return cls(path, max_bytes=1 << 62)

    def pending(self) -> bool:
        return self.size > self.read_pos

    def append(self, events: list[dict[str, Any]]) -> None:
        """Appends events (already stamped). Raises OSError when the disk refuses."""
        self.append_lines([dumps(e) + "\n" for e in events])

    def append_lines(self, lines: Blob | list[str] | list[bytes], first: bool = False) -> None:
        """Appends NDJSON lines (each stamped, each ending in a newline); ``first``: puts
        them before every line not sent yet instead (a batch the relay did not take,
        older than what was spooled meanwhile). Raises OSError when the disk refuses."""
        if not lines:
            return
        if isinstance(lines, Blob):
            blob = lines.data
        else:
            data = lines[0][:0].join(lines)  # type: ignore[arg-type]
            blob = data.encode() if isinstance(data, str) else data
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if first and self.size > self.read_pos:
                rest = self._remaining_bytes()
                self._rewrite_blob(blob + rest)
            elif self.size - self.read_pos + len(blob) > self.max_bytes:
                self._compact(split_lines(blob))
                return
            else:
                with open(self.path, "ab") as f:
                    f.write(blob)
                self.size += len(blob)
            if self.size - self.read_pos > self.max_bytes:
                self._compact([])

    def read_raw(self, max_events: int, max_bytes: int) -> tuple[Blob, int, int]:
        """Up to ``max_events`` whole lines (about ``max_bytes`` at most, one at least)
        from the read offset, unparsed; the offset after them and the generation. A line
        cut short by a crash is skipped."""
        with self._lock:
            pos = self.read_pos
            try:
                with open(self.path, "rb") as f:
                    f.seek(pos)
                    data = f.read(max_bytes)
                    cut = data.rfind(b"\n")
                    if cut < 0 and data:  # one line longer than max_bytes
                        data += f.readline()
                        cut = data.rfind(b"\n")
            except OSError:
                return Blob(b"", 0), pos, self.generation
            if cut < 0:
                # nothing whole: at the end of the file, a torn last line is skipped
                return Blob(b"", 0), pos + len(data), self.generation
            data = data[: cut + 1]
            count = data.count(b"\n")
            if count > max_events:
                cut = -1
                for _ in range(max_events):
                    cut = data.find(b"\n", cut + 1)
                data, count = data[: cut + 1], max_events
            return Blob(data, count), pos + len(data), self.generation

    def read(self, max_events: int) -> tuple[list[dict[str, Any]], int, int]:
        """The next events to send, the offset after them, and the generation."""
        with self._lock:
            events, pos = read_lines(self.path, self.read_pos, max_events)
            return events, pos, self.generation

    def advance(self, pos: int, generation: int) -> bool:
        """Marks everything before ``pos`` as taken by the relay; False when the file was
        rewritten since it was read (what was read is still there, to send again)."""
        with self._lock:
            if generation != self.generation:
                return False
            self.read_pos = max(self.read_pos, pos)
            if self.read_pos >= self.size:
                self._remove()
            return True

    def settle(self) -> None:
        """At exit: drops the part already sent, or the file when all of it was."""
        with self._lock:
            if self.read_pos >= self.size:
                self._remove()
            elif self.read_pos > 0:
                self._rewrite(self._remaining())

    # -- under the lock ---------------------------------------------------------------
    def _remove(self) -> None:
        try:
            self.path.unlink()
        except OSError:
            pass
        self.size = self.read_pos = 0
        self.generation += 1

    def _remaining_bytes(self) -> bytes:
        """The unsent part of the file, whole lines only."""
        try:
            with open(self.path, "rb") as f:
                f.seek(self.read_pos)
                data = f.read()
        except OSError:
            return b""
        return data[: data.rfind(b"\n") + 1]

    def _remaining(self) -> list[bytes]:
        return split_lines(self._remaining_bytes())

    def _rewrite(self, lines: list[bytes]) -> None:
        self._rewrite_blob(b"".join(lines))

    def _rewrite_blob(self, blob: bytes) -> None:
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            f.write(blob)
        os.replace(tmp, self.path)
        self.size = len(blob)
        self.read_pos = 0
        self.generation += 1

    def _compact(self, incoming: list[bytes]) -> None:
        """Rewrites the unsent part plus ``incoming`` without the oldest routine events,
        down to :data:`COMPACT_TO` of the cap."""
        lines = self._remaining() + incoming
        need = sum(len(ln) for ln in lines) - int(self.max_bytes * COMPACT_TO)
        drop: set[int] = set()
        # First the oldest batch_end events, then other routine events, oldest first.
        for batch_end_pass in (True, False):
            for i, ln in enumerate(lines):
                if need <= 0:
                    break
                if i in drop:
                    continue
                name = _event_name(ln)
                if name in PROTECTED:
                    continue
                if (name == "batch_end") != batch_end_pass:
                    continue
                drop.add(i)
                need -= len(ln)
                self.dropped += 1
                self.dropped_batch_end += name == "batch_end"
        self._rewrite([ln for i, ln in enumerate(lines) if i not in drop])


def drop_report(dropped: int, dropped_batch_end: int) -> dict[str, Any]:
    """The ``log`` event that tells the dashboard events were dropped."""
    return {
        "event": "log",
        "level": "warning",
        "logger": "stepwatch",
        "message": (
            f"stepwatch: the relay was unreachable and the spool was full: {dropped} events "
            f"dropped ({dropped_batch_end} of them batch_end)"
        ),
        "dropped_events": dropped,
        "dropped_batch_end": dropped_batch_end,
    }
