"""A run's tags, group and notes: checked as the relay checks them
(``stepwatch_events::meta``) and sent as one ``run_meta`` event."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from ._emitter import TrainingEventEmitter

MAX_TAGS = 32
MAX_TAG_CHARS = 64
MAX_GROUP_CHARS = 128
MAX_NOTES_BYTES = 16 * 1024


def _control(s: str, allowed: str = "") -> bool:
    return any((ord(c) < 32 or 127 <= ord(c) < 160) and c not in allowed for c in s)


def check_meta(
    tags: Sequence[str] | str | None = None,
    group: str | None = None,
    notes: str | None = None,
) -> dict[str, Any]:
    """The ``run_meta`` fields for what is given (``tags`` a list, or one string of
    comma-separated tags), normalised; a bad one raises ``ValueError`` naming it."""
    out: dict[str, Any] = {}
    if tags is not None:
        items = tags.split(",") if isinstance(tags, str) else list(tags)
        clean: list[str] = []
        for i, t in enumerate(items):
            if not isinstance(t, str):
                raise ValueError(f"tags[{i}]: expected a string, got {type(t).__name__}")
            t = t.strip()
            if len(t) > MAX_TAG_CHARS:
                raise ValueError(f"tags[{i}]: a tag is at most {MAX_TAG_CHARS} characters")
            if "," in t or _control(t):
                raise ValueError(f"tags[{i}]: a tag holds no commas and no control characters")
            if t and t not in clean:
                clean.append(t)
        if len(clean) > MAX_TAGS:
            raise ValueError(f"tags: a run carries at most {MAX_TAGS} tags")
        out["tags"] = clean
    if group is not None:
        if not isinstance(group, str):
            raise ValueError("group: expected a string")
        g = group.strip()
        if len(g) > MAX_GROUP_CHARS or _control(g):
            raise ValueError(f"group: one line of at most {MAX_GROUP_CHARS} characters")
        out["group"] = g
    if notes is not None:
        if not isinstance(notes, str):
            raise ValueError("notes: expected a string")
        if len(notes.encode()) > MAX_NOTES_BYTES:
            raise ValueError(f"notes: at most {MAX_NOTES_BYTES // 1024} KB")
        if _control(notes, "\n\t\r"):
            raise ValueError("notes: no control characters")
        out["notes"] = notes
    return out


def from_env(
    tags: Sequence[str] | str | None, group: str | None
) -> tuple[Sequence[str] | str | None, str | None]:
    """``STEPWATCH_TAGS`` (comma-separated) and ``STEPWATCH_GROUP`` when not given."""
    if tags is None:
        tags = os.environ.get("STEPWATCH_TAGS") or None
    if group is None:
        group = os.environ.get("STEPWATCH_GROUP") or None
    return tags, group


def emit_meta(fields: dict[str, Any], emitter: TrainingEventEmitter) -> None:
    if fields:
        emitter.emit("run_meta", **fields)


def set_meta(
    tags: Sequence[str] | str | None = None,
    group: str | None = None,
    notes: str | None = None,
    emitter: TrainingEventEmitter | None = None,
) -> None:
    """Changes this run's tags, group or notes while it trains (what is not given
    stays; ``""`` clears a group or the notes): one ``run_meta`` event, checked first
    (``ValueError`` naming the field). Never blocks the loop."""
    from ._emitter import training_emitter

    fields = check_meta(tags, group, notes)
    if not fields:
        raise ValueError("set_meta: give tags, group or notes")
    emit_meta(fields, emitter or training_emitter)
