"""Stepwatch for PyTorch Lightning: a callback, a logger, or both::

    from stepwatch.integrations.lightning import StepwatchCallback, StepwatchLogger

    trainer = Trainer(callbacks=[StepwatchCallback()])   # every batch, control, stop
    trainer = Trainer(logger=StepwatchLogger())          # what Lightning logs
    trainer = Trainer(logger=StepwatchLogger(), callbacks=[StepwatchCallback()])

Uses ``lightning`` (``pip install lightning``), or ``pytorch_lightning`` when ``lightning``
is not installed. Both connect to the relay on first use unless the SDK is already
connected (``url`` and ``run`` default to ``STEPWATCH_URL`` and ``STEPWATCH_RUN``), and
report from global rank 0 only. Epochs are numbered from 1 (``current_epoch + 1``).

``StepwatchCallback``:

- ``on_fit_start``: connects. ``on_train_start`` (dataloaders are ready, so the totals are
  known) -> ``training_start`` with ``total_epochs``, ``total_batches`` (batches per epoch)
  and ``config``: the module's (and datamodule's) ``hparams``, plus ``trainer`` settings,
  ``model_class``, ``model_parameters`` and ``optimizer``.
- ``on_train_epoch_start`` / ``on_train_epoch_end`` -> ``epoch_start`` / ``epoch_end``
  (``avg_loss`` of the epoch's batches and the training metrics that changed).
- ``on_train_batch_end`` -> ``batch_end``: ``loss`` from the step's output (or a logged
  training loss), ``lr`` of the first optimizer, ``step = trainer.global_step``, and in
  ``metrics`` the scalar ``trainer.callback_metrics`` that changed since the last batch
  (evaluation metrics left out). Every ``every_n_steps`` batches (default 1). Then a
  control point (pause, commands); after a stop from the dashboard,
  ``trainer.should_stop = True``.
- ``on_validation_end`` (not the sanity check) -> ``metric_update`` with the validation
  metrics.
- Checkpoints written by ``ModelCheckpoint`` -> ``checkpoint_saved`` (path, step, epoch,
  size, monitored score), noticed at the next hook after the save.
- ``on_exception`` -> ``error_occurred`` (fatal) and ``training_end`` ``failed``; Ctrl-C
  or ``StopTraining`` -> ``training_end`` ``stopped``.
- ``on_fit_end`` -> ``training_end`` (``completed``, or ``stopped`` after a stop from the
  dashboard), then a bounded wait for delivery.
- A retried job (``STEPWATCH_RESUME_FROM``, see :func:`stepwatch.resume_from`) resumes:
  :func:`fit` passes it as ``ckpt_path``; a fit started without a ``ckpt_path`` is
  restored from it by the callback in ``on_fit_start`` (unless the script registered a
  ``load_checkpoint`` handler, which is called instead). ``global_step`` goes on from the
  checkpoint's, and ``checkpoint_loaded`` follows ``training_start``.

``StepwatchLogger`` (works alone; with the callback it adds nothing twice):

- ``log_hyperparams`` + ``log_graph`` (both called as a fit starts) -> ``training_start``
  with the params, ``model_class`` and ``model_parameters`` as ``config``; params that
  arrive after the run started are sent as a ``log`` line.
- ``log_metrics(metrics, step)`` -> ``batch_end`` with ``loss`` when a training loss is
  among them (``train_loss``, ``loss``, ``train/loss``, ``*_step`` variants), the other
  training values in ``metrics``; evaluation values and everything else ->
  ``metric_update``. While a ``StepwatchCallback`` runs, metrics are the callback's job.
- ``after_save_checkpoint`` -> ``checkpoint_saved``.
- ``log_image(key, images, step, caption=[...])`` -> ``image`` events (``index`` 0..N-1),
  ``log_text`` / ``log_table(key, columns, data, dataframe, step)`` -> a ``text_sample``
  table: the signatures of WandbLogger's, so code written for it runs unchanged.
- ``finalize(status)`` -> ``training_end``: ``success`` -> ``completed`` (``stopped``
  after a stop from the dashboard), ``failed`` -> ``failed`` (``stopped`` for Ctrl-C),
  with the exception as ``error_occurred``.
- Alone (no ``StepwatchCallback`` to set ``trainer.should_stop``), a Stop from the
  dashboard arrives as ``KeyboardInterrupt`` at the next ``batch_end`` it sends, and
  Lightning shuts down as for Ctrl-C (its graceful shutdown, which then exits the
  process with status 1); the run ends ``stopped``. Add the callback for a clean stop.
- ``save()`` wakes the sender without waiting; ``experiment`` is a
  :class:`stepwatch.tensorboard.SummaryWriter` on the same run, for code that calls
  ``self.logger.experiment.add_scalar(...)``.
"""

from __future__ import annotations

import json
import math
import os
import sys
from argparse import Namespace
from collections.abc import Mapping, Sequence
from typing import Any

try:
    from lightning.pytorch import Callback
    from lightning.pytorch.loggers import Logger
    from lightning.pytorch.utilities import rank_zero_only
except ImportError as _first:  # pragma: no cover - depends on what is installed
    try:
        from pytorch_lightning import Callback  # type: ignore[assignment]
        from pytorch_lightning.loggers import Logger  # type: ignore[assignment]
        from pytorch_lightning.utilities import rank_zero_only
    except ImportError:
        raise ImportError(
            "stepwatch.integrations.lightning needs PyTorch Lightning: "
            "pip install lightning (or pip install pytorch-lightning)"
        ) from _first

from .. import _control, _dist, _media, _relay, _resume, _session
from .._helpers import (
    emit_batch_end,
    emit_checkpoint_loaded,
    emit_checkpoint_saved,
    emit_epoch_end,
    emit_epoch_start,
    emit_log,
    emit_metric_update,
    emit_training_end,
    emit_training_start,
)
from ..tensorboard import SummaryWriter
from . import _common, _lightning_resume

__all__ = ["StepwatchCallback", "StepwatchLogger", "fit"]

#: StepwatchCallbacks inside a fit now; while any is, the logger leaves metrics to them.
_active_callbacks = 0


def _rank_zero() -> bool:
    return int(getattr(rank_zero_only, "rank", 0) or 0) == 0


def _epoch_number(current_epoch: Any) -> int:
    """Lightning's 0-based ``current_epoch`` as the dashboard's 1-based epoch."""
    try:
        return int(current_epoch) + 1
    except (TypeError, ValueError):
        return 1


def _callback_metrics(trainer: Any) -> dict[str, float]:
    try:
        return _common.numeric(trainer.callback_metrics)
    except Exception:
        return {}


def _loss_of(outputs: Any) -> float | None:
    if isinstance(outputs, Mapping):
        outputs = outputs.get("loss")
    return _common.to_float(outputs)


def _first_lr(trainer: Any) -> float | None:
    try:
        return _common.to_float(trainer.optimizers[0].param_groups[0]["lr"])
    except (AttributeError, IndexError, KeyError, TypeError):
        return None


def _loss_key(metrics: Mapping[str, float]) -> str | None:
    """The logged training loss among ``metrics``: per-step values first."""
    found = None
    for key in metrics:
        base = key[: -len("_step")] if key.endswith("_step") else key
        if key.endswith("_epoch") or not _common.is_train_loss_name(base):
            continue
        if key.endswith("_step"):
            return key
        found = found or key
    return found


def _hparams(obj: Any) -> dict[str, Any]:
    params = getattr(obj, "hparams", None)
    if not params:
        return {}
    try:
        return dict(_common.json_safe(dict(params)))
    except Exception:
        return {}


def _checkpoint_path(cb: Any) -> str | None:
    path = getattr(cb, "_last_checkpoint_saved", None)
    if path is None:  # older Lightning: the last or best file
        path = getattr(cb, "last_model_path", None) or getattr(cb, "best_model_path", None)
    return str(path) if path else None


def _checkpoint_metrics(cb: Any, path: str) -> dict[str, float] | None:
    monitor = getattr(cb, "monitor", None)
    if not monitor:
        return None
    score = _common.to_float((getattr(cb, "best_k_models", None) or {}).get(path))
    if score is None:
        score = _common.to_float(getattr(cb, "current_score", None))
    return {str(monitor): score} if score is not None else None


def _report_checkpoint(
    path: str, step: int | None, epoch: int | None, metrics: dict[str, float] | None
) -> None:
    if _common.checkpoint_once(path, step):
        emit_checkpoint_saved(
            checkpoint_path=path,
            epoch=epoch,
            step=step,
            size_bytes=_common.path_size(path),
            metrics=metrics,
        )


def _end_run(exc: BaseException | None = None, status: str | None = None) -> None:
    """Ends the open run: with ``exc``, as failed (and its error) or stopped."""
    if not _common.run_open():
        return
    if exc is not None:
        _common.end_run_for(exc)  # failed with its error; stopped for Ctrl-C / a stop
        return
    emit_training_end(status=status)


class StepwatchCallback(Callback):  # type: ignore[misc]
    """Reports a Lightning fit to Stepwatch and obeys the dashboard (see the module
    docstring). ``url``, ``run``: where to connect (an existing connection is kept unless
    they name another relay or run; ``run`` defaults to a ``StepwatchLogger``'s run).
    ``every_n_steps``: emit ``batch_end`` every n batches (the control point runs every
    batch). ``end_flush``: seconds to wait for delivery at the end (default
    ``STEPWATCH_EXIT_FLUSH``, else 5). Other keyword arguments go to
    ``stepwatch.connect``."""

    def __init__(
        self,
        url: str | None = None,
        run: str | None = None,
        every_n_steps: int = 1,
        end_flush: float | None = None,
        **connect_kwargs: Any,
    ) -> None:
        super().__init__()
        self.url = url
        self.run = run
        self.every_n_steps = max(int(every_n_steps), 1)
        self.end_flush = end_flush
        self.connect_kwargs = connect_kwargs
        self._active = False
        self._started = False
        self._batches = 0
        self._epoch_losses: list[float] = []
        self._last_metrics: dict[str, float] = {}
        self._epoch_metrics: dict[str, float] = {}
        self._val_metrics: dict[str, float] = {}
        self._seen_paths: dict[int, str] = {}
        self._pending_save: tuple[int | None, int | None] = (None, None)
        self._resumed: str | None = None  # the retried job's checkpoint, restored
        self._rank_joined = False  # a rank other than 0 of a distributed run, connected

    # -- helpers --------------------------------------------------------------------------
    def _activate(self) -> None:
        global _active_callbacks
        if not self._active:
            self._active = True
            _active_callbacks += 1
        _control.framework_stops("Lightning")  # a stop sets trainer.should_stop

    def _deactivate(self) -> None:
        global _active_callbacks
        if self._active:
            self._active = False
            _active_callbacks = max(_active_callbacks - 1, 0)
        if _active_callbacks == 0:
            _control.framework_stops(None)

    @staticmethod
    def _default_run(trainer: Any) -> str | None:
        for logger in getattr(trainer, "loggers", None) or []:
            if isinstance(logger, StepwatchLogger):
                return logger.version
        return None

    def _config(self, trainer: Any, pl_module: Any) -> dict[str, Any]:
        config: dict[str, Any] = {}
        datamodule = getattr(trainer, "datamodule", None)
        if datamodule is not None:
            config.update(_hparams(datamodule))
        config.update(_hparams(pl_module))
        settings: dict[str, Any] = {}
        for key in (
            "max_epochs",
            "max_steps",
            "min_epochs",
            "accumulate_grad_batches",
            "precision",
            "gradient_clip_val",
            "check_val_every_n_epoch",
            "val_check_interval",
            "log_every_n_steps",
            "num_devices",
            "num_nodes",
        ):
            value = getattr(trainer, key, None)
            if value is not None:
                settings[key] = _common.json_safe(value)
        strategy = getattr(trainer, "strategy", None)
        if strategy is not None:
            settings["strategy"] = type(strategy).__name__
        config["trainer"] = settings
        config["model_class"] = type(pl_module).__name__
        try:
            config["model_parameters"] = sum(p.numel() for p in pl_module.parameters())
        except Exception:
            pass
        optimizers = getattr(trainer, "optimizers", None) or []
        if optimizers:
            config["optimizer"] = type(optimizers[0]).__name__
        return config

    @staticmethod
    def _totals(trainer: Any) -> tuple[int | None, int | None]:
        batches = _common.to_float(getattr(trainer, "num_training_batches", None))
        per_epoch = int(batches) if batches is not None and math.isfinite(batches) else None
        max_epochs = getattr(trainer, "max_epochs", None)
        epochs = int(max_epochs) if max_epochs is not None and max_epochs > 0 else None
        max_steps = getattr(trainer, "max_steps", -1)
        if max_steps is not None and max_steps > 0 and per_epoch:
            accumulate = max(int(getattr(trainer, "accumulate_grad_batches", 1) or 1), 1)
            needed = math.ceil(max_steps * accumulate / per_epoch)
            epochs = min(epochs, needed) if epochs else needed
            per_epoch = min(per_epoch, max_steps * accumulate)
        return epochs, per_epoch

    def _start(self, trainer: Any, pl_module: Any) -> None:
        if self._started:
            return
        self._started = True
        epochs, per_epoch = self._totals(trainer)
        max_steps = getattr(trainer, "max_steps", -1)
        emit_training_start(
            total_epochs=epochs,
            total_batches=per_epoch,
            total_steps=max_steps if max_steps is not None and max_steps > 0 else None,
            config=self._config(trainer, pl_module),
        )
        if self._resumed:
            step = int(getattr(trainer, "global_step", 0) or 0)
            emit_checkpoint_loaded(self._resumed, step=step, resumed=True)
            self._resumed = None
        self._last_metrics = _callback_metrics(trainer)

    def _poll_checkpoints(self, trainer: Any) -> None:
        """Reports files ``ModelCheckpoint`` wrote since the last look."""
        for cb in getattr(trainer, "checkpoint_callbacks", None) or []:
            path = _checkpoint_path(cb)
            if not path or self._seen_paths.get(id(cb)) == path:
                continue
            self._seen_paths[id(cb)] = path
            step, epoch = self._pending_save
            self._pending_save = (None, None)
            if step is None:
                step = int(getattr(trainer, "global_step", 0) or 0)
            if epoch is None:
                epoch = _epoch_number(getattr(trainer, "current_epoch", 0))
            _report_checkpoint(path, step, epoch, _checkpoint_metrics(cb, path))

    def _obey(self, trainer: Any) -> None:
        # Every rank: pause blocks here; commands run here.
        _session.step_point(int(getattr(trainer, "global_step", 0) or 0) or None)
        if _relay.stop_requested() and not getattr(trainer, "should_stop", False):
            trainer.should_stop = True

    # -- hooks ----------------------------------------------------------------------------
    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        if not trainer.is_global_zero:
            # Another rank of a distributed run: it joins the run to obey commands at the
            # same step as rank 0 (and sends its samples); rank 0 alone reports training.
            if _dist.detect() is not None:
                _common.ensure_connected(
                    self.url, self.run, self._default_run(trainer), **self.connect_kwargs
                )
                self._rank_joined = True
                _control.framework_stops("Lightning")
            return
        _common.ensure_connected(
            self.url, self.run, self._default_run(trainer), **self.connect_kwargs
        )
        self._activate()
        self._started = False
        self._batches = 0
        self._resumed = _lightning_resume.resume_at_fit_start(trainer)
        self._seen_paths = {
            id(cb): p
            for cb in getattr(trainer, "checkpoint_callbacks", None) or []
            if (p := _checkpoint_path(cb))
        }

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        if trainer.is_global_zero and self._active:
            self._start(trainer, pl_module)

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        if not (trainer.is_global_zero and self._active):
            return
        self._start(trainer, pl_module)
        self._epoch_losses = []
        self._epoch_metrics = _callback_metrics(trainer)
        epochs, _ = self._totals(trainer)
        emit_epoch_start(epoch=_epoch_number(trainer.current_epoch), total_epochs=epochs)

    def on_train_batch_start(
        self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int
    ) -> None:
        if trainer.is_global_zero and self._active:
            self._poll_checkpoints(trainer)

    def on_train_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self._rank_joined and not trainer.is_global_zero:
            self._obey(trainer)
            return
        if not (trainer.is_global_zero and self._active):
            return
        self._poll_checkpoints(trainer)
        self._batches += 1
        loss = _loss_of(outputs)
        if loss is not None and math.isfinite(loss):
            self._epoch_losses.append(loss)
        if self._batches % self.every_n_steps == 0:
            current = _callback_metrics(trainer)
            if loss is None:
                key = _loss_key(current)
                loss = current.get(key) if key else None
            fresh = {
                k: v
                for k, v in _common.changed(current, self._last_metrics).items()
                if not _common.is_eval_name(k)
                and not k.endswith("_epoch")  # epoch aggregates go with epoch_end
                and not (v == loss and _common.is_train_loss_name(k))  # the loss chart has it
            }
            self._last_metrics = current
            emit_batch_end(
                batch_idx=int(batch_idx),
                loss=loss,
                lr=_first_lr(trainer),
                step=int(trainer.global_step),
                epoch=_epoch_number(trainer.current_epoch),
                metrics=fresh or None,
            )
        self._obey(trainer)

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if not (trainer.is_global_zero and self._active):
            return
        metrics = {
            k: v
            for k, v in _common.changed(_callback_metrics(trainer), self._epoch_metrics).items()
            if not _common.is_eval_name(k) and not k.endswith("_step")
        }
        if self._epoch_losses:
            metrics["avg_loss"] = sum(self._epoch_losses) / len(self._epoch_losses)
        emit_epoch_end(epoch=_epoch_number(trainer.current_epoch), metrics=metrics or None)
        self._poll_checkpoints(trainer)

    def on_validation_start(self, trainer: Any, pl_module: Any) -> None:
        if trainer.is_global_zero and self._active:
            self._val_metrics = _callback_metrics(trainer)

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if not (trainer.is_global_zero and self._active) or trainer.sanity_checking:
            return
        current = _callback_metrics(trainer)
        fresh = _common.changed(current, self._val_metrics)
        metrics = {k: v for k, v in current.items() if k in fresh or _common.is_eval_name(k)}
        self._last_metrics = current
        if metrics and self._started:
            emit_metric_update(metrics=metrics, step=int(trainer.global_step))
        self._poll_checkpoints(trainer)
        self._obey(trainer)

    def on_save_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: dict[str, Any]) -> None:
        step = checkpoint.get("global_step")
        epoch = checkpoint.get("epoch")
        self._pending_save = (
            int(step) if step is not None else None,
            _epoch_number(epoch) if epoch is not None else None,
        )

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        if not (trainer.is_global_zero and self._active):
            return
        self._poll_checkpoints(trainer)
        self._start(trainer, pl_module)
        _end_run(exception)
        self._deactivate()
        _relay.flush(_common.end_flush(self.end_flush))

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        if self._rank_joined and not trainer.is_global_zero:
            self._rank_joined = False
            _control.framework_stops(None)
            return
        if not (trainer.is_global_zero and self._active):
            return
        self._poll_checkpoints(trainer)
        self._start(trainer, pl_module)
        _end_run()  # "stopped" when the dashboard asked, else "completed"
        self._deactivate()
        _relay.flush(_common.end_flush(self.end_flush))


class StepwatchLogger(Logger):  # type: ignore[misc]
    """A Lightning logger that sends what Lightning logs to Stepwatch (see the module
    docstring). ``run``: the run id (else ``STEPWATCH_RUN``, the connected run, or a new
    id); it is also the logger's ``version``, so ``ModelCheckpoint`` writes under
    ``{default_root_dir}/{name}/{run}/checkpoints`` unless ``save_dir`` is given.
    ``url``: where to connect (default ``STEPWATCH_URL``). ``end_flush`` as for the
    callback. Other keyword arguments go to ``stepwatch.connect``."""

    def __init__(
        self,
        run: str | None = None,
        url: str | None = None,
        name: str = "stepwatch",
        save_dir: str | None = None,
        end_flush: float | None = None,
        **connect_kwargs: Any,
    ) -> None:
        super().__init__()
        self._run = run
        self._url = url
        self._name = name
        self._save_dir = save_dir
        self.end_flush = end_flush
        self.connect_kwargs = connect_kwargs
        self._run_id: str | None = None
        self._config: dict[str, Any] = {}
        self._writer: Any = None
        self._started = False
        self._epoch: int | None = None

    # -- Logger properties ----------------------------------------------------------------
    @property
    def name(self) -> str:
        return self._name

    @property
    def version(self) -> str:
        """The run id (decided once, without connecting)."""
        if self._run_id is None:
            sender = _common.current_sender()
            self._run_id = (
                self._run
                or os.environ.get("STEPWATCH_RUN")
                or (sender.run if sender is not None else None)
                or _relay.default_run_id()
            )
        return self._run_id

    @property
    def save_dir(self) -> str | None:
        return self._save_dir

    @property
    def root_dir(self) -> str | None:
        return os.path.join(self._save_dir, self._name) if self._save_dir else None

    @property
    def log_dir(self) -> str | None:
        root = self.root_dir
        return os.path.join(root, self.version) if root else None

    @property
    def experiment(self) -> Any:
        """A ``SummaryWriter`` stand-in on this run (``add_scalar`` and friends)."""
        if self._writer is None:
            self._connect()
            self._writer = SummaryWriter(run=self.version, end_run_on_close=False)
        return self._writer

    # -- helpers --------------------------------------------------------------------------
    def _connect(self) -> None:
        _common.ensure_connected(self._url, self._run, self.version, **self.connect_kwargs)

    def _ensure_run(self) -> None:
        """Starts the run if nothing has (the logger alone; once: values logged after the
        run ended, e.g. by ``trainer.test``, are added to it)."""
        self._connect()
        if not self._started and not _active_callbacks and not _common.run_open():
            self._started = True
            emit_training_start(config=dict(self._config))

    # -- Logger methods -------------------------------------------------------------------
    def log_hyperparams(
        self, params: dict[str, Any] | Namespace, *args: Any, **kwargs: Any
    ) -> None:
        if not _rank_zero():
            return
        if isinstance(params, Namespace):
            params = vars(params)
        safe = _common.json_safe(dict(params or {}))
        if not isinstance(safe, dict):
            return
        if self._started or _active_callbacks or _common.run_open():
            # The run has started (or the callback starts it with the hparams): only what
            # is new is worth a line in the log.
            started = _common.started_config()
            new = {k: v for k, v in safe.items() if started.get(k) != v}
            self._config.update(safe)
            if new and not _active_callbacks:
                self._connect()
                emit_log(
                    "hyperparameters: " + json.dumps(new, default=str, sort_keys=True),
                    logger="stepwatch.lightning",
                )
            return
        self._config.update(safe)  # sent with training_start (log_graph comes next in a fit)

    def log_graph(self, model: Any, input_array: Any = None) -> None:
        """Called by Lightning at the start of every fit: records the model's class and
        size and starts the run."""
        if not _rank_zero():
            return
        self._config.setdefault("model_class", type(model).__name__)
        try:
            self._config.setdefault("model_parameters", sum(p.numel() for p in model.parameters()))
        except Exception:
            pass
        self._ensure_run()

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        if not _rank_zero() or _active_callbacks > 0:
            return
        values = _common.numeric(metrics)
        epoch_value = values.pop("epoch", None)
        if not values:
            return
        self._ensure_run()
        epoch = _epoch_number(epoch_value) if epoch_value is not None else None
        self._epoch = epoch or self._epoch
        evals = {k: v for k, v in values.items() if _common.is_eval_name(k)}
        train = {k: v for k, v in values.items() if k not in evals}
        key = _loss_key(train)
        if key is not None:
            loss = train.pop(key)
            emit_batch_end(
                batch_idx=int(step or 0),
                loss=loss,
                step=step,
                epoch=epoch,
                metrics=train or None,
            )
            train = {}
        rest = {**train, **evals}
        if rest:
            emit_metric_update(metrics=rest, step=step)

    def log_image(
        self, key: str, images: Sequence[Any], step: int | None = None, **kwargs: Any
    ) -> None:
        """Images under ``key`` as WandbLogger takes them: a list (tensors, arrays, PIL
        images, PNG/JPEG/WebP bytes), ``index`` 0..N-1, and ``caption=[...]``, one per
        image; other per-image lists are ignored. As :func:`stepwatch.log_image`: the
        pixels are copied, encoded and uploaded off the training thread."""
        if not _rank_zero():
            return
        if not isinstance(images, (list, tuple)):
            images = [images]
        captions = kwargs.get("caption")
        if captions is not None and (
            not isinstance(captions, (list, tuple)) or len(captions) != len(images)
        ):
            captions = None
        self._ensure_run()
        several = len(images) > 1
        for i, img in enumerate(images):
            caption = captions[i] if captions is not None else None
            _media.log_image(
                key,
                img,
                step=step,
                index=i if several else None,
                caption=None if caption is None else str(caption),
            )

    def log_text(
        self,
        key: str,
        columns: list[str] | None = None,
        data: list[list[Any]] | None = None,
        dataframe: Any = None,
        step: int | None = None,
    ) -> None:
        """A table of text under ``key`` (``columns`` and rows of ``data``, or a pandas
        ``dataframe``), as WandbLogger takes it: a ``text_sample`` table."""
        self.log_table(key, columns, data, dataframe, step)

    def log_table(
        self,
        key: str,
        columns: list[str] | None = None,
        data: list[list[Any]] | None = None,
        dataframe: Any = None,
        step: int | None = None,
    ) -> None:
        """A table under ``key``: a ``text_sample`` with ``columns`` and ``rows``."""
        if not _rank_zero():
            return
        if dataframe is not None:
            columns = [str(c) for c in dataframe.columns]
            data = dataframe.values.tolist()
        self._ensure_run()
        _media.log_text(key, columns=list(columns or []), rows=list(data or []), step=step)

    def after_save_checkpoint(self, checkpoint_callback: Any) -> None:
        if not _rank_zero() or _active_callbacks:
            return  # a running StepwatchCallback reports it, with its epoch
        path = _checkpoint_path(checkpoint_callback)
        if not path:
            return
        self._ensure_run()
        step = getattr(checkpoint_callback, "_last_global_step_saved", None)
        _report_checkpoint(
            path,
            int(step) if step is not None else None,
            self._epoch,
            _checkpoint_metrics(checkpoint_callback, path),
        )

    def save(self) -> None:
        _relay.flush(0)  # wakes the sender; never waits

    def finalize(self, status: str) -> None:
        """Ends the run unless a ``StepwatchCallback`` did already (then nothing to do)."""
        if not _rank_zero() or _active_callbacks or not _common.run_open():
            return
        if status == "failed":
            exc = sys.exc_info()[1]  # Lightning calls this while handling the exception
            if exc is not None:
                _end_run(exc)
            else:
                _end_run(status="failed")
        elif status in ("success", "finished", "completed"):
            _end_run()  # "stopped" when the dashboard asked, else "completed"
        else:
            _end_run(status="stopped")
        _relay.flush(_common.end_flush(self.end_flush))


def fit(trainer: Any, model: Any, *args: Any, ckpt_path: Any = None, **kwargs: Any) -> Any:
    """``trainer.fit(model, ...)`` that resumes a retried job: ``ckpt_path`` defaults to
    :func:`stepwatch.resume_from` (None on a first attempt: a fresh fit)."""
    if ckpt_path is None:
        ckpt_path = _resume.resume_from()
    return trainer.fit(model, *args, ckpt_path=ckpt_path, **kwargs)
