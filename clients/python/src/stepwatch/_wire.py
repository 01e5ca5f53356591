"""Events as JSON on the wire: non-finite floats as the strings "NaN", "Infinity",
"-Infinity" (see docs/DESIGN.md), tensors and numpy scalars as plain numbers.

The common case (plain floats, ints and strings) goes straight to the C encoder; only
an event it refuses is walked and cleaned in Python. :func:`stamped_lines` is the
sender's encoder: one NDJSON line per event, ``src`` and ``seq`` written in front of the
event's own fields (no copy of the event), the same text for a request body and for the
spool file.
"""

from __future__ import annotations

import json
import json.encoder
import math
from typing import Any, Callable

_SEPARATORS = (",", ":")


def _refuse(value: Any) -> Any:
    raise TypeError(f"not JSON: {type(value).__name__}")


def _make_encoder() -> Callable[[Any], str]:
    """The C encoder made once (``json.dumps`` makes one per call), as ``dumps`` would
    with ``allow_nan=False`` and compact separators; plain ``dumps`` where it is missing."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return lambda v: json.dumps(v, allow_nan=False, separators=_SEPARATORS)
    enc = make(
        None, _refuse, json.encoder.encode_basestring_ascii, None, ":", ",", False, False, False
    )

    def encode(value: Any) -> str:
        return "".join(enc(value, 0))

    return encode


_encode = _make_encoder()


def clean(value: Any) -> Any:
    """Makes a value JSON-safe: non-finite floats as strings, tensors as numbers."""
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    item = getattr(value, "item", None)
    if callable(item):
        try:
            return clean(item())
        except Exception:
            pass
    try:
        return clean(float(value))
    except Exception:
        return str(value)


def dumps(event: Any) -> str:
    """One event as compact JSON."""
    try:
        return json.dumps(event, allow_nan=False, separators=_SEPARATORS)
    except (ValueError, TypeError):
        return json.dumps(clean(event), allow_nan=False, separators=_SEPARATORS)


def dumps_array(events: list[Any]) -> bytes:
    """A batch as one JSON array, encoded in one call when every event allows it."""
    try:
        text = json.dumps(events, allow_nan=False, separators=_SEPARATORS)
    except (ValueError, TypeError):
        text = "[" + ",".join(dumps(e) for e in events) + "]"
    return text.encode()


class Blob:
    """A batch of events as NDJSON: ``data``, ``count`` lines each ending in a newline
    (one bytes object all the way from the encoder to the request or the spool file)."""

    __slots__ = ("data", "count")

    def __init__(self, data: bytes, count: int) -> None:
        self.data = data
        self.count = count

    def __len__(self) -> int:
        return self.count

    def lines(self) -> list[bytes]:
        return split_lines(self.data)


def split_lines(data: bytes, limit: int = -1) -> list[bytes]:
    """Whole lines of ``data`` (which ends in a newline), each with its newline; at most
    ``limit`` of them when given."""
    parts = data.split(b"\n", limit) if limit >= 0 else data.split(b"\n")
    if limit >= 0 and len(parts) > limit:
        parts = parts[:limit]
    elif parts and not parts[-1]:
        parts.pop()
    return [p + b"\n" for p in parts]


def stamped_blob(records: list[dict[str, Any]], src: str, first_seq: int) -> Blob:
    """:func:`stamped_lines` as one :class:`Blob`."""
    return Blob("".join(stamped_lines(records, src, first_seq)).encode(), len(records))


def stamped_lines(records: list[dict[str, Any]], src: str, first_seq: int) -> list[str]:
    """``records`` as NDJSON lines (each ending in a newline), the n-th stamped with
    ``src`` and ``seq`` ``first_seq + n``. A record that already names a ``src`` or
    ``seq`` has them replaced, as a copy would."""
    encode = _encode
    head = f'{{"src":{json.dumps(src)},"seq":'
    out: list[str] = []
    append = out.append
    seq = first_seq
    for r in records:
        try:
            if "src" in r or "seq" in r:
                raise ValueError
            body = encode(r)
            if len(body) < 3:  # "{}": nothing to follow the stamp
                raise ValueError
            append(f"{head}{seq},{body[1:]}\n")
        except (ValueError, TypeError, RecursionError):
            append(dumps({**r, "src": src, "seq": seq}) + "\n")
        seq += 1
    return out


def serve(inp: Any, out: Any) -> None:
    """The encoder process (:mod:`stepwatch._encoder`): reads frames of a 4-byte length
    and ``marshal`` of ``(src, first_seq, records)``, answers each with a 4-byte length
    and :func:`stamped_lines` as bytes (length ``0xFFFFFFFF``: it could not). Ends at
    the end of its input: when the trainer closes it, or dies."""
    import marshal
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the trainer's to handle
    out.write(b"SW1\n")
    out.flush()
    while True:
        head = inp.read(4)
        if len(head) < 4:
            return
        n = int.from_bytes(head, "big")
        data = inp.read(n)
        if len(data) < n:
            return
        try:
            src, first, records = marshal.loads(data)
            blob = "".join(stamped_lines(records, src, first)).encode()
            out.write(len(blob).to_bytes(4, "big") + blob)
        except Exception:
            out.write(b"\xff\xff\xff\xff")
        out.flush()
