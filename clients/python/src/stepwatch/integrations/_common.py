"""What the integrations share: connecting on first use, turning framework values into
the numbers and JSON the events carry, naming metrics, and reporting each checkpoint once.

Stdlib only: no framework is imported here.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

from .. import _dist, _lifecycle, _relay
from .._control import StopTraining
from .._emitter import training_emitter

#: Name parts that mark a value as evaluation rather than training.
EVAL_PARTS = ("val", "valid", "validation", "eval", "evaluation", "test", "dev")
#: Name parts that mark a value as the training loss.
LOSS_PARTS = ("loss", "train_loss", "training_loss")
#: How deep a config is followed before the rest is shown as text.
MAX_DEPTH = 8
#: Default bounded wait (seconds) for delivery when a run ends.
END_FLUSH = 5.0


# -- connection ---------------------------------------------------------------------------
def current_sender() -> _relay.RelaySender | None:
    """The SDK's live connection, if any."""
    return _relay.current()


def _is_sdk_default_run(run: str) -> bool:
    """The run id ``connect()`` made up because none was given (``run-<time>-<pid>``,
    or a distributed job's ``ddp-<hash>``)."""
    if re.fullmatch(rf"run-\d{{8}}-\d{{6}}-{os.getpid()}", run) is not None:
        return True
    world = _dist.detect()
    return world is not None and run == _dist.run_id(world)


def safe_run_id(name: str | None) -> str | None:
    """``name`` made a valid run id (``[A-Za-z0-9._-]{1,128}``), or None if nothing is left."""
    if not name:
        return None
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", str(name)).strip("-.")[:128]
    return cleaned or None


def ensure_connected(
    url: str | None = None,
    run: str | None = None,
    default_run: str | None = None,
    **connect_kwargs: Any,
) -> None:
    """Connects to the relay unless already connected as asked.

    Not connected: ``connect(url, run or STEPWATCH_RUN or default_run)``. Connected: the
    connection is kept, unless ``url`` or ``run`` name another one, or the connection
    runs under the id ``connect()`` made up (``STEPWATCH_URL`` set without
    ``STEPWATCH_RUN``) and nothing has started a run yet; then ``default_run`` (the
    framework's run name) replaces it.
    """
    sender = current_sender()
    if sender is None:
        _relay.connect(url, run or os.environ.get("STEPWATCH_RUN") or default_run, **connect_kwargs)
        return
    want_url = url.rstrip("/") if url else sender.url
    want_run = run
    if (
        want_run is None
        and default_run
        and not os.environ.get("STEPWATCH_RUN")
        and _is_sdk_default_run(sender.run)
        and not training_emitter.get_history("training_start")
    ):
        want_run = default_run
    want_run = want_run or sender.run
    if want_url != sender.url or want_run != sender.run:
        connect_kwargs.setdefault("token", sender.token)
        _relay.connect(want_url, want_run, **connect_kwargs)


def end_flush(seconds: float | None) -> float:
    """The bounded wait for delivery when a run ends: ``seconds``, else
    ``STEPWATCH_EXIT_FLUSH``, else :data:`END_FLUSH`."""
    if seconds is not None:
        return seconds
    try:
        return float(os.environ.get("STEPWATCH_EXIT_FLUSH", END_FLUSH))
    except ValueError:
        return END_FLUSH


def run_open() -> bool:
    """A run was started in this process (``training_start``) and has not ended."""
    starts = training_emitter.get_history("training_start", limit=1)
    if not starts:
        return False
    ends = training_emitter.get_history("training_end", limit=1)
    return not ends or ends[-1]["time"] < starts[-1]["time"]


def started_config() -> dict[str, Any]:
    """The ``config`` of the latest ``training_start`` in this process."""
    starts = training_emitter.get_history("training_start", limit=1)
    config = starts[-1].get("config") if starts else None
    return dict(config) if isinstance(config, dict) else {}


# -- values -------------------------------------------------------------------------------
def to_float(value: Any) -> float | None:
    """A plain float from a number, a one-element tensor or a numpy scalar; else None.

    Non-finite values stay floats (the SDK sends them as ``"NaN"``/``"Infinity"``).
    Tensors are read here, on the training thread, so a tensor changed in place later
    cannot change what was reported.
    """
    if isinstance(value, (bool, int, float)):
        return float(value)
    if isinstance(value, (str, bytes)) or value is None:
        return None
    item = getattr(value, "item", None)
    if callable(item):
        try:
            got = item()
        except Exception:  # more than one element, or not a number
            return None
        return float(got) if isinstance(got, (bool, int, float)) else None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def numeric(metrics: Mapping[str, Any] | None, skip: Iterable[str] = ()) -> dict[str, float]:
    """The entries of ``metrics`` that are numbers, as floats; keys in ``skip`` left out."""
    out: dict[str, float] = {}
    if not metrics:
        return out
    skipped = set(skip)
    for key, value in metrics.items():
        if key in skipped:
            continue
        number = to_float(value)
        if number is not None:
            out[str(key)] = number
    return out


def json_safe(value: Any, depth: int = 0) -> Any:
    """``value`` as JSON-able scalars, lists and dicts (for a run's config table)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, enum.Enum):
        return json_safe(value.value, depth)
    if depth >= MAX_DEPTH:
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): json_safe(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [json_safe(v, depth + 1) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: json_safe(getattr(value, f.name, None), depth + 1)
            for f in dataclasses.fields(value)
        }
    to_dict = getattr(value, "to_dict", None)
    if callable(to_dict):
        try:
            return json_safe(to_dict(), depth + 1)
        except Exception:
            pass
    item = getattr(value, "item", None)
    if callable(item):
        try:
            got = item()
            if isinstance(got, (bool, int, float, str)):
                return got
        except Exception:
            pass
    if hasattr(value, "__dict__") and type(value).__module__ == "argparse":
        return json_safe(vars(value), depth + 1)  # argparse.Namespace
    return str(value)


# -- names --------------------------------------------------------------------------------
def _parts(name: str) -> list[str]:
    return [p for p in re.split(r"[/.]", name.lower()) if p]


def is_eval_name(name: str) -> bool:
    """``val_loss``, ``eval/accuracy``, ``Loss/test``: a value from evaluation."""
    for part in _parts(name):
        if part in EVAL_PARTS or any(part.startswith(e + "_") for e in EVAL_PARTS):
            return True
    return False


def is_train_loss_name(name: str) -> bool:
    """``loss``, ``train/loss``, ``Loss/train``, ``train_loss``: the training loss."""
    return not is_eval_name(name) and any(p in LOSS_PARTS for p in _parts(name))


#: Last name parts that name a learning rate (``lr-Adam``: Lightning's LearningRateMonitor).
LR_NAMES = ("lr", "learning_rate", "learning-rate", "learningrate")
#: Trailing parts that name a parameter group (``lr/group0``, ``lr-Adam/pg1``).
_GROUP = re.compile(r"(?:param_?)?(?:group|pg)[_-]?\d+|\d+")


def is_lr_name(name: str) -> bool:
    """``lr``, ``learning_rate``, ``train/lr``, ``LR``, ``lr-Adam``, ``lr/group0``,
    ``lr-AdamW/pg1``: a learning rate. The last part of the name counts (after any
    parameter-group part), case-insensitive; evaluation names never do."""
    parts = [p for p in str(name).lower().split("/") if p]
    while len(parts) > 1 and _GROUP.fullmatch(parts[-1]):
        parts.pop()
    if not parts or is_eval_name(name):
        return False
    last = parts[-1]
    return last in LR_NAMES or last.startswith("lr-")


def changed(current: Mapping[str, float], before: Mapping[str, float]) -> dict[str, float]:
    """Entries of ``current`` that are new or differ from ``before`` (NaN stays NaN)."""
    out = {}
    for key, value in current.items():
        old = before.get(key)
        same = old is not None and (
            old == value or (isinstance(old, float) and math.isnan(old) and math.isnan(value))
        )
        if not same:
            out[key] = value
    return out


# -- checkpoints --------------------------------------------------------------------------
_reported_checkpoints: set[tuple[str, int | None]] = set()


def checkpoint_once(path: str, step: int | None) -> bool:
    """True the first time ``(path, step)`` is seen: two integrations that both notice a
    checkpoint (Lightning's callback and logger) report it once."""
    key = (os.path.abspath(path), step)
    if key in _reported_checkpoints:
        return False
    _reported_checkpoints.add(key)
    return True


def path_size(path: str) -> int | None:
    """Bytes in a checkpoint file, or in all files under a checkpoint directory."""
    try:
        if os.path.isdir(path):
            total = 0
            for root, _dirs, files in os.walk(path):
                for name in files:
                    try:
                        total += os.path.getsize(os.path.join(root, name))
                    except OSError:
                        pass
            return total
        return os.path.getsize(path)
    except OSError:
        return None


def error_status(exc: BaseException | None) -> str:
    """How a run interrupted by ``exc`` ends: ``stopped`` for Ctrl-C and a stop from the
    dashboard (also an error raised after the loop was told to stop), ``failed`` for
    anything else."""
    if isinstance(exc, (KeyboardInterrupt, StopTraining)) or _relay.stop_delivered():
        return "stopped"
    return "failed"


def end_run_for(exc: BaseException) -> str:
    """Ends the open run because of ``exc`` (see :func:`stepwatch._lifecycle.end_run_for`)."""
    return _lifecycle.end_run_for(exc)
