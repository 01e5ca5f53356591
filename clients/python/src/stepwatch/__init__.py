"""Stepwatch trainer SDK.

The seed's API, unchanged but for the import line::

    from stepwatch import training_emitter, WebUIHooks, emit_batch_end

    training_emitter.emit("batch_end", batch_idx=100, loss=2.5, lr=0.0001)

Call ``stepwatch.connect("http://127.0.0.1:8080", run="my-run")`` (or set
``STEPWATCH_URL`` / ``STEPWATCH_RUN``) and every event is also forwarded to a relay
from a background thread. Emitting never blocks training and never raises because
the relay is unreachable.
"""

from . import _relay
from ._alerts import alert, check_rule
from ._api import Api, ApiError, AuthError, RelayUnreachable, Run, RunNotFound
from ._control import StopInterrupt, StopTraining, on_command
from ._emitter import TrainingEventEmitter, training_emitter
from ._helpers import (
    emit_batch_end,
    emit_batch_start,
    emit_checkpoint_loaded,
    emit_checkpoint_saved,
    emit_epoch_end,
    emit_epoch_start,
    emit_error_occurred,
    emit_log,
    emit_metric_update,
    emit_training_end,
    emit_training_start,
)
from ._hooks import WebUIHooks
from ._launch import Job, LaunchError, LaunchWarning, get_job, jobs, launch, queues, templates
from ._logs import LogHandler, capture_output
from ._media import log_histogram, log_image, log_text
from ._relay import (
    RelaySender,
    connect,
    control_point,
    current_run,
    disconnect,
    flush,
    should_stop,
)
from ._resume import resume_from
from ._runmeta import set_meta
from ._system import parse_nvidia_smi_csv
from ._watch import WatchHandle, unwatch, watch

#: The media calls under the seed's ``emit_*`` names.
emit_text_sample = log_text
emit_image = log_image
emit_histogram = log_histogram

__all__ = [
    "Api",
    "ApiError",
    "AuthError",
    "Job",
    "LaunchError",
    "LaunchWarning",
    "LogHandler",
    "RelaySender",
    "RelayUnreachable",
    "Run",
    "RunNotFound",
    "capture_output",
    "parse_nvidia_smi_csv",
    "StopInterrupt",
    "StopTraining",
    "control_point",
    "on_command",
    "should_stop",
    "TrainingEventEmitter",
    "WatchHandle",
    "WebUIHooks",
    "alert",
    "check_rule",
    "connect",
    "current_run",
    "disconnect",
    "emit_batch_end",
    "emit_batch_start",
    "emit_checkpoint_loaded",
    "emit_checkpoint_saved",
    "emit_epoch_end",
    "emit_epoch_start",
    "emit_error_occurred",
    "emit_histogram",
    "emit_image",
    "emit_log",
    "emit_metric_update",
    "emit_text_sample",
    "emit_training_end",
    "emit_training_start",
    "flush",
    "get_job",
    "jobs",
    "launch",
    "log_histogram",
    "log_image",
    "log_text",
    "queues",
    "resume_from",
    "set_meta",
    "templates",
    "training_emitter",
    "unwatch",
    "watch",
]

__version__ = "0.1.0"

# STEPWATCH_URL set: forward to that relay from the start, with no code change.
_relay.connect_from_env()
