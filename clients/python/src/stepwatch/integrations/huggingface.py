"""Stepwatch for the Hugging Face ``transformers.Trainer``::

    from stepwatch.integrations.huggingface import StepwatchCallback

    trainer = Trainer(..., callbacks=[StepwatchCallback()])
    trainer.train()

The callback connects to the relay when training begins, unless the SDK is already
connected (``url`` and ``run`` default to ``STEPWATCH_URL`` and ``STEPWATCH_RUN``, then
``args.run_name``). Only the main process (``state.is_world_process_zero``) reports.

What is reported:

- ``on_train_begin`` -> ``training_start``: ``total_epochs`` (``state.num_train_epochs``),
  ``total_batches`` (optimizer steps per epoch, so the dashboard's progress adds up;
  ``state.max_steps`` when the run is shorter than an epoch), ``total_steps``
  (``state.max_steps``), ``config`` (``args.to_dict()`` made JSON-safe, plus
  ``model_config``, ``model_class`` and ``model_parameters`` when the model has them).
- ``on_epoch_begin`` / ``on_epoch_end`` -> ``epoch_start`` / ``epoch_end``, epochs
  numbered from 1; ``epoch_end`` carries ``avg_loss`` over the epoch's logged losses.
- ``on_log`` with a training loss -> ``batch_end`` (``loss``, ``lr`` from
  ``learning_rate``, ``grad_norm`` and any other numbers in ``metrics``,
  ``step = state.global_step``, ``batch_idx`` = the step's index in its epoch). With
  ``eval_*`` keys -> ``metric_update`` with those metrics. Anything else (the final
  ``train_runtime``/``train_loss`` summary, your own ``trainer.log``) -> ``metric_update``.
- ``on_save`` -> ``checkpoint_saved`` for ``{output_dir}/checkpoint-{global_step}``, with
  its size on disk and the latest eval metrics.
- ``on_step_end`` -> a control point: pause, resume, ``ask`` and ``load_checkpoint``
  from the dashboard run here. After a stop, ``control.should_training_stop`` is set
  (and ``control.should_save`` when the run saves checkpoints and ``save_on_stop``), so
  the Trainer ends cleanly and the run ends as ``stopped``.
- ``on_train_end`` -> ``training_end`` (``completed``, or ``stopped`` after a stop from
  the dashboard), then a bounded wait for delivery.

An exception inside ``trainer.train()`` ends the run as ``failed`` through the SDK's
exception hook.

Resuming a retried job (``STEPWATCH_RESUME_FROM``, see :func:`stepwatch.resume_from`):
start training with :func:`train` (``train(trainer)`` is ``trainer.train(
resume_from_checkpoint=stepwatch.resume_from())``), or pass that yourself; the Trainer
then restores the model, optimizer and ``global_step`` and the run's charts go on from
the checkpoint's step (``checkpoint_loaded`` is reported). A Trainer started without it
calls your ``load_checkpoint`` handler, when you registered one with
``stepwatch.on_command``; with neither, the callback logs a warning saying how.
"""

from __future__ import annotations

import math
import os
from typing import Any

try:
    from transformers import TrainerCallback
except ImportError as _e:  # pragma: no cover - exercised by a test without transformers
    raise ImportError(
        "stepwatch.integrations.huggingface needs the transformers package: "
        "pip install transformers"
    ) from _e

from .. import _control, _dist, _relay, _resume, _session
from .._helpers import (
    emit_batch_end,
    emit_checkpoint_loaded,
    emit_checkpoint_saved,
    emit_epoch_end,
    emit_epoch_start,
    emit_metric_update,
    emit_training_end,
    emit_training_start,
)
from . import _common

__all__ = ["StepwatchCallback", "train"]

#: Keys of a training log that are not metrics of their own.
_TRAIN_KEYS = ("loss", "learning_rate", "epoch")


def _is_speed(key: str) -> bool:
    """``eval_runtime``, ``eval_samples_per_second``: timings, not model quality."""
    return key.endswith(("_runtime", "_per_second"))


class StepwatchCallback(TrainerCallback):  # type: ignore[misc]
    """Reports a ``transformers.Trainer`` run to Stepwatch (see the module docstring).

    ``url``, ``run``: where to connect (an existing connection is kept unless they name
    another relay or run). ``save_on_stop``: save a checkpoint when the dashboard stops
    the run (only when ``args.save_strategy`` saves at all). ``end_flush``: seconds to
    wait for delivery when training ends (default ``STEPWATCH_EXIT_FLUSH``, else 5).
    Other keyword arguments go to ``stepwatch.connect``.
    """

    def __init__(
        self,
        url: str | None = None,
        run: str | None = None,
        save_on_stop: bool = True,
        end_flush: float | None = None,
        **connect_kwargs: Any,
    ) -> None:
        self.url = url
        self.run = run
        self.save_on_stop = save_on_stop
        self.end_flush = end_flush
        self.connect_kwargs = connect_kwargs
        self._epoch = 0
        self._epoch_start_step = 0
        self._epoch_losses: list[float] = []
        self._eval_metrics: dict[str, float] = {}
        self._stop_seen = False

    # -- helpers --------------------------------------------------------------------------
    @staticmethod
    def _main(state: Any) -> bool:
        return bool(getattr(state, "is_world_process_zero", True))

    def _config(self, args: Any, model: Any) -> dict[str, Any]:
        config: dict[str, Any] = {}
        to_dict = getattr(args, "to_dict", None)
        if callable(to_dict):
            try:
                config.update(_common.json_safe(to_dict()))
            except Exception:
                pass
        model_config = getattr(model, "config", None)
        if model_config is not None:
            config["model_config"] = _common.json_safe(model_config)
        if model is not None:
            config["model_class"] = type(model).__name__
            try:
                config["model_parameters"] = sum(p.numel() for p in model.parameters())
            except Exception:
                pass
        return config

    @staticmethod
    def _steps_per_epoch(args: Any, state: Any, train_dataloader: Any) -> int | None:
        max_steps = int(getattr(state, "max_steps", 0) or 0)
        per_epoch: int | None = None
        try:
            batches = len(train_dataloader)
            accumulate = max(int(getattr(args, "gradient_accumulation_steps", 1) or 1), 1)
            per_epoch = max(math.ceil(batches / accumulate), 1)
        except TypeError:  # no dataloader, or an iterable one
            epochs = int(getattr(state, "num_train_epochs", 0) or 0)
            if max_steps > 0 and epochs > 0:
                per_epoch = math.ceil(max_steps / epochs)
        if per_epoch is not None and max_steps > 0:
            per_epoch = min(per_epoch, max_steps)
        return per_epoch or (max_steps or None)

    # -- events ---------------------------------------------------------------------------
    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        run_name = getattr(args, "run_name", None)
        if not self._main(state):
            # Another rank of a distributed run: it joins the run to obey commands at the
            # same step as rank 0 (and sends its samples); rank 0 alone reports training.
            if _dist.detect() is not None:
                _common.ensure_connected(
                    self.url, self.run, _common.safe_run_id(run_name), **self.connect_kwargs
                )
                self._stop_seen = False
                _control.framework_stops("Hugging Face")
            return
        _common.ensure_connected(
            self.url, self.run, _common.safe_run_id(run_name), **self.connect_kwargs
        )
        self._stop_seen = False
        self._epoch_losses = []
        self._eval_metrics = {}
        _control.framework_stops("Hugging Face")  # a stop sets should_training_stop
        resumed = self._claim_resume(state)
        epochs = int(getattr(state, "num_train_epochs", 0) or 0)
        emit_training_start(
            total_epochs=epochs or None,
            total_batches=self._steps_per_epoch(args, state, kwargs.get("train_dataloader")),
            total_steps=int(state.max_steps) if getattr(state, "max_steps", 0) else None,
            config=self._config(args, kwargs.get("model")),
            name=run_name if isinstance(run_name, str) and run_name else None,
        )
        if resumed:
            emit_checkpoint_loaded(resumed, step=int(state.global_step), resumed=True)

    @staticmethod
    def _claim_resume(state: Any) -> str | None:
        """A retried job's checkpoint: the path when the Trainer resumed (its
        ``global_step`` starts past 0); else it is left to a ``load_checkpoint`` handler,
        or a warning says how to resume."""
        if _resume.path() is None:
            return None
        if int(getattr(state, "global_step", 0) or 0) > 0:
            return _resume.announce()
        if _resume.pending() is not None and "load_checkpoint" not in _control.HANDLERS:
            _resume.warn(
                f"this job resumes from {_resume.claim()} but the Trainer started from "
                "step 0: start it with stepwatch.integrations.huggingface.train(trainer), "
                "or trainer.train(resume_from_checkpoint=stepwatch.resume_from())"
            )
        return None

    def on_epoch_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if not self._main(state):
            return
        self._epoch = math.floor((state.epoch or 0) + 1e-9) + 1
        self._epoch_start_step = state.global_step
        self._epoch_losses = []
        epochs = int(getattr(state, "num_train_epochs", 0) or 0)
        emit_epoch_start(epoch=self._epoch, total_epochs=epochs or None)

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if not self._main(state):
            return
        metrics = None
        if self._epoch_losses:
            metrics = {"avg_loss": sum(self._epoch_losses) / len(self._epoch_losses)}
        emit_epoch_end(epoch=self._epoch or 1, metrics=metrics)

    def on_log(
        self,
        args: Any,
        state: Any,
        control: Any,
        logs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if not self._main(state) or not logs:
            return
        step = int(state.global_step)
        if "loss" in logs and not any(k.startswith("eval_") for k in logs):
            loss = _common.to_float(logs.get("loss"))
            if loss is not None and math.isfinite(loss):
                self._epoch_losses.append(loss)
            emit_batch_end(
                batch_idx=max(step - self._epoch_start_step - 1, 0),
                loss=loss,
                lr=_common.to_float(logs.get("learning_rate")),
                step=step,
                epoch=self._epoch or None,
                metrics=_common.numeric(logs, skip=_TRAIN_KEYS) or None,
            )
            return
        evals = {k: v for k, v in logs.items() if k.startswith("eval_")}
        if evals:
            metrics = _common.numeric(evals)
            self._eval_metrics.update(metrics)
        else:
            metrics = _common.numeric(logs, skip=("epoch",))
        if metrics:
            emit_metric_update(metrics=metrics, step=step)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if not self._main(state) and not _session.distributed():
            return
        _session.step_point(int(state.global_step))  # every rank: pause blocks here
        if _relay.stop_requested() and not self._stop_seen:
            self._stop_seen = True
            control.should_training_stop = True
            strategy = getattr(args, "save_strategy", "no")
            if self.save_on_stop and str(getattr(strategy, "value", strategy)) != "no":
                control.should_save = True

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if not self._main(state):
            return
        path = os.path.join(str(args.output_dir), f"checkpoint-{state.global_step}")
        if not _common.checkpoint_once(path, int(state.global_step)):
            return
        emit_checkpoint_saved(
            checkpoint_path=path,
            epoch=self._epoch or None,
            step=int(state.global_step),
            size_bytes=_common.path_size(path),
            metrics={k: v for k, v in self._eval_metrics.items() if not _is_speed(k)} or None,
        )

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if not self._main(state):
            if _session.distributed():
                _control.framework_stops(None)
            return
        if _common.run_open():
            emit_training_end()  # "stopped" when the dashboard asked, else "completed"
        _control.framework_stops(None)
        _relay.flush(_common.end_flush(self.end_flush))


def train(trainer: Any, resume_from_checkpoint: str | bool | None = None, **kwargs: Any) -> Any:
    """``trainer.train(...)`` that resumes a retried job: ``resume_from_checkpoint``
    defaults to :func:`stepwatch.resume_from` (None on a first attempt, when the Trainer
    starts afresh). Other keyword arguments go to ``trainer.train``."""
    if resume_from_checkpoint is None:
        resume_from_checkpoint = _resume.resume_from()
    return trainer.train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)
