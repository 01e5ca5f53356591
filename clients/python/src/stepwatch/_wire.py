"""Events as JSON on the wire: non-finite floats as the strings "NaN", "Infinity",
"-Infinity" (see docs/DESIGN.md), tensors and numpy scalars as plain numbers.

The common case (plain floats, ints and strings) goes straight to the C encoder; only
an event it refuses is walked and cleaned in Python.
"""

from __future__ import annotations

import json
import math
from typing import Any

_SEPARATORS = (",", ":")


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
