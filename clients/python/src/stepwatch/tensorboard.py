"""A stand-in for TensorBoard's ``SummaryWriter`` that sends to Stepwatch instead.

Switch by changing one import::

    # from torch.utils.tensorboard import SummaryWriter
    from stepwatch.tensorboard import SummaryWriter

    writer = SummaryWriter("runs/exp1")          # run id "exp1"
    writer.add_scalar("Loss/train", loss, step)  # the run's loss chart
    writer.add_scalar("Accuracy/test", acc, step)
    writer.close()

No framework is needed (not even torch); tensors and numpy scalars are read with
``.item()``, and NaN and infinities travel as the SDK sends them (``"NaN"``,
``"Infinity"``). No event files are written.

Connecting: the writer connects to the relay unless the SDK is connected already
(``url`` defaults to ``STEPWATCH_URL``, else ``http://127.0.0.1:8080``). The run id is
``run=``, else ``STEPWATCH_RUN``, else the last part of ``log_dir`` (``runs/exp1`` ->
``exp1``), else one made like TensorBoard's default (``<date>_<host><comment>``).

What each call sends:

- ``add_scalar(tag, value, step)``: ``metric_update`` with ``name=tag``, ``value`` and
  ``step``; except for the training loss, which fills the dashboard's loss chart as
  ``batch_end`` with ``loss`` (``step`` = ``global_step``, also used as ``batch_idx``).
  The training loss is the first tag seen that has a ``loss`` part and no evaluation
  part: ``loss``, ``train/loss``, ``Loss/train``, ``train_loss`` are; ``val/loss``,
  ``Loss/test``, ``eval_loss`` are not (they stay metrics). ``loss_tag=`` names it
  instead; ``loss_tag=""`` sends every tag as a metric.
- The learning rate: the first tag seen whose last part names one (``lr``,
  ``learning_rate``, ``train/lr``, ``LR``, ``lr-Adam`` as Lightning's LearningRateMonitor
  names it; a trailing parameter-group part is skipped: ``lr/group0``, ``lr-Adam/pg1``)
  is the run's learning rate: it rides in the ``lr`` field of the training loss's
  ``batch_end`` (the latest value, so log it before the loss to have each step's own),
  never a metric of its own. ``lr_tag=`` names it instead; ``lr_tag=""`` keeps every
  tag a metric (so does ``loss_tag=""``). Other param groups' rates stay metrics.
- No epochs: the writer sends no ``epoch`` field and no ``epoch_start`` (TensorBoard has
  no epochs); ``batch_idx`` is the global step.
- ``add_scalars(main_tag, {k: v}, step)``: one ``metric_update`` with the metrics
  ``main_tag/k`` (a training loss among them as ``batch_end``, as above).
- ``add_hparams(hparams, metrics)``: the hyperparameters become the run's ``config``
  when no other ``add_*`` call came first (the run starts with the writer's first call);
  after that, a ``log`` line. The metrics are a ``metric_update``.
- ``add_text(tag, text, step)``: a ``text_sample`` (``name=tag``), as
  :func:`stepwatch.log_text`.
- ``add_image(tag, img, step, dataformats="CHW")``: an ``image`` (a tensor, an array, a
  PIL image or PNG/JPEG/WebP bytes; floats in [0, 1] as TensorBoard takes them), as
  :func:`stepwatch.log_image`: the pixels are copied, encoded and uploaded off the
  training thread. ``add_images(tag, imgs, step, dataformats="NCHW")``: one image per
  item, ``index`` 0..N-1 (where TensorBoard tiles them into one grid image).
- ``add_histogram(tag, values, step, bins=...)``: a ``histogram`` of the values, as
  :func:`stepwatch.log_histogram` (a tensor binned on its device). ``bins`` an int is
  the number of equal bins; TensorBoard's ``"tensorflow"`` and numpy's named rules
  become 64 (``max_bins`` caps it, 512 at most).
- ``flush()``: waits (bounded, ``flush_timeout`` s) for delivery.
- ``close()`` and leaving a ``with`` block: ``training_end`` for the run this writer
  started (``completed``; ``stopped`` after a stop from the dashboard; leaving a ``with``
  block by an exception: ``failed`` with the error, or ``stopped`` for Ctrl-C), then a
  bounded wait for delivery. Writers that did not start the run only flush.

The first ``add_*`` call starts the run (``training_start``) if nothing has. Other
``SummaryWriter`` methods (``add_graph``, ``add_embedding``, ``add_figure`` ...) are
accepted and ignored, so existing code runs unchanged. ``walltime`` is ignored: events
carry the time they are sent.

Control from the dashboard: each training-loss value is a control point (pause and
commands take effect there). A Stop raises ``KeyboardInterrupt`` (``stepwatch.StopInterrupt``)
there, unless your loop checks ``stepwatch.should_stop()`` and ends itself (see
``stepwatch.connect(stop=...)``).
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Callable

from . import _media, _relay
from ._helpers import (
    emit_batch_end,
    emit_log,
    emit_metric_update,
    emit_training_end,
    emit_training_start,
)
from .integrations import _common

__all__ = ["SummaryWriter"]

#: Default bounded wait (seconds) of ``flush()``.
FLUSH_TIMEOUT = 2.0


#: Bins of ``add_histogram`` when ``bins`` is TensorBoard's ``"tensorflow"`` or a rule.
HISTOGRAM_BINS = 64


def _step(global_step: Any) -> int | None:
    return int(global_step) if global_step is not None else None


def _is_tensor(obj: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, torch.Tensor)


def _hwc(img: Any, dataformats: str) -> tuple[Any, str | None]:
    """An array or tensor in ``dataformats`` order as a view in HW, HWC or CHW order,
    with that order (for :func:`stepwatch.log_image`); anything else as it is."""
    fmt = dataformats.upper()
    shape = getattr(img, "shape", None)
    if shape is None or not callable(getattr(img, "transpose", None)):
        return img, None
    if fmt in ("HW", "HWC", "CHW") or len(shape) != len(fmt) or set(fmt) - set("CHW"):
        return img, fmt if len(shape) == len(fmt) else None
    target = "HWC" if "C" in fmt else "HW"
    order = [fmt.index(ch) for ch in target]
    view = img.permute(*order) if _is_tensor(img) else img.transpose(order)
    return view, target


def _default_log_dir(comment: str) -> str:
    """TensorBoard's default: ``runs/<Mon>DD_HH-MM-SS_<host><comment>``."""
    stamp = time.strftime("%b%d_%H-%M-%S")
    return os.path.join("runs", f"{stamp}_{socket.gethostname()}{comment}")


class SummaryWriter:
    """Sends TensorBoard scalars, hyperparameters and text to Stepwatch (see the module
    docstring). Takes the arguments of ``torch.utils.tensorboard.SummaryWriter``; the
    ones about event files are accepted and ignored. Keyword-only: ``url``, ``run``,
    ``loss_tag``, ``lr_tag``, ``flush_timeout``, ``end_run_on_close`` (default: end the run on
    ``close()`` if this writer started it), ``connect_kwargs`` for ``stepwatch.connect``.
    """

    def __init__(
        self,
        log_dir: str | os.PathLike[str] | None = None,
        comment: str = "",
        purge_step: int | None = None,
        max_queue: int = 10,
        flush_secs: int = 120,
        filename_suffix: str = "",
        *args: Any,
        url: str | None = None,
        run: str | None = None,
        loss_tag: str | None = None,
        lr_tag: str | None = None,
        flush_timeout: float = FLUSH_TIMEOUT,
        end_run_on_close: bool | None = None,
        connect_kwargs: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self.log_dir = os.fspath(log_dir) if log_dir else _default_log_dir(comment)
        self.loss_tag = loss_tag
        self.lr_tag = lr_tag
        self._lr: float | None = None  # the latest learning rate, for the next batch_end
        self.flush_timeout = flush_timeout
        self._end_run_on_close = end_run_on_close
        self._owns_run = False
        self._closed = False
        self._config: dict[str, Any] = {}
        base = os.path.basename(os.path.normpath(self.log_dir))
        self.run_name = _common.safe_run_id(base)
        _common.ensure_connected(url, run, self.run_name, **dict(connect_kwargs or {}))
        sender = _common.current_sender()
        #: The run this writer sends to.
        self.run = sender.run if sender is not None else run

    # -- the run --------------------------------------------------------------------------
    def _ensure_run(self) -> None:
        if self._closed:
            self._closed = False  # TensorBoard reopens a closed writer on the next add_*
        if not self._owns_run and not _common.run_open():
            self._owns_run = True
            emit_training_start(config=dict(self._config) or None, log_dir=self.log_dir)

    def _is_loss(self, tag: str) -> bool:
        if self.loss_tag is not None:
            return tag == self.loss_tag
        if _common.is_train_loss_name(tag):
            self.loss_tag = tag  # the first training-loss tag is the run's loss
            return True
        return False

    def _is_lr(self, tag: str) -> bool:
        if self.loss_tag == "":
            return False  # no batch_end to carry it: a metric like any other
        if self.lr_tag is not None:
            return tag == self.lr_tag
        if _common.is_lr_name(tag):
            self.lr_tag = tag  # the first learning-rate tag is the run's
            return True
        return False

    def _batch_end(self, loss: float, step: int | None) -> None:
        emit_batch_end(batch_idx=step if step is not None else 0, loss=loss, lr=self._lr, step=step)

    # -- TensorBoard API ------------------------------------------------------------------
    def get_logdir(self) -> str:
        return self.log_dir

    def add_scalar(
        self,
        tag: str,
        scalar_value: Any,
        global_step: int | None = None,
        walltime: float | None = None,
        new_style: bool = False,
        double_precision: bool = False,
    ) -> None:
        """One value: ``metric_update`` (``name=tag``), ``batch_end`` for the loss, kept
        for the next ``batch_end`` for the learning rate."""
        value = _common.to_float(scalar_value)
        if value is None:
            return
        self._ensure_run()
        step = int(global_step) if global_step is not None else None
        if self._is_loss(tag):
            self._batch_end(value, step)
        elif self._is_lr(tag):
            self._lr = value
        else:
            emit_metric_update(name=tag, value=value, step=step)

    def add_scalars(
        self,
        main_tag: str,
        tag_scalar_dict: Mapping[str, Any],
        global_step: int | None = None,
        walltime: float | None = None,
    ) -> None:
        """Several values under ``main_tag``: one ``metric_update`` (``main_tag/key``)."""
        values = _common.numeric({f"{main_tag}/{k}": v for k, v in tag_scalar_dict.items()})
        if not values:
            return
        self._ensure_run()
        step = int(global_step) if global_step is not None else None
        lr = next((t for t in values if self._is_lr(t)), None)
        if lr is not None:
            self._lr = values.pop(lr)
        loss = next((t for t in values if self._is_loss(t)), None)
        if loss is not None:
            self._batch_end(values.pop(loss), step)
        if values:
            emit_metric_update(metrics=values, step=step)

    def add_hparams(
        self,
        hparam_dict: Mapping[str, Any],
        metric_dict: Mapping[str, Any],
        hparam_domain_discrete: Mapping[str, list[Any]] | None = None,
        run_name: str | None = None,
        global_step: int | None = None,
    ) -> None:
        """Hyperparameters as the run's config (or a log line once it runs); metrics as
        one ``metric_update``."""
        params = _common.json_safe(dict(hparam_dict or {}))
        if not self._owns_run and not _common.run_open():
            self._config.update(params)
        else:
            started = _common.started_config()
            new = {k: v for k, v in params.items() if started.get(k) != v}
            if new:
                emit_log(
                    "hyperparameters: " + json.dumps(new, default=str, sort_keys=True),
                    logger="tensorboard",
                )
        self._ensure_run()
        metrics = _common.numeric(dict(metric_dict or {}))
        if metrics:
            emit_metric_update(
                metrics=metrics, step=int(global_step) if global_step is not None else None
            )

    def add_text(
        self,
        tag: str,
        text_string: str | list[str],
        global_step: int | None = None,
        walltime: float | None = None,
    ) -> None:
        """A ``text_sample`` named ``tag``."""
        self._ensure_run()
        text = text_string if isinstance(text_string, str) else "\n".join(map(str, text_string))
        _media.log_text(tag, text, step=_step(global_step))

    def add_image(
        self,
        tag: str,
        img_tensor: Any,
        global_step: int | None = None,
        walltime: float | None = None,
        dataformats: str = "CHW",
    ) -> None:
        """An ``image`` named ``tag`` (``dataformats``: the order of ``C``, ``H``, ``W``)."""
        self._ensure_run()
        img, fmt = _hwc(img_tensor, dataformats)
        _media.log_image(tag, img, step=_step(global_step), dataformats=fmt)

    def add_images(
        self,
        tag: str,
        img_tensor: Any,
        global_step: int | None = None,
        walltime: float | None = None,
        dataformats: str = "NCHW",
    ) -> None:
        """One ``image`` per item of the batch, ``index`` 0..N-1."""
        self._ensure_run()
        fmt = dataformats.upper()
        shape = getattr(img_tensor, "shape", None)
        if "N" not in fmt or shape is None or len(shape) != len(fmt):
            _media.warn_once("image", tag, f"add_images of shape {shape} as {dataformats}")
            return
        n_axis = fmt.index("N")
        rest = fmt.replace("N", "")
        step = _step(global_step)
        for i in range(min(int(shape[n_axis]), _media.MAX_INDEX)):
            item = img_tensor.select(n_axis, i) if _is_tensor(img_tensor) else None
            if item is None:
                item = img_tensor.take(i, axis=n_axis)
            img, f = _hwc(item, rest)
            _media.log_image(tag, img, step=step, index=i, dataformats=f)

    def add_histogram(
        self,
        tag: str,
        values: Any,
        global_step: int | None = None,
        bins: Any = "tensorflow",
        walltime: float | None = None,
        max_bins: int | None = None,
    ) -> None:
        """A ``histogram`` named ``tag`` of ``values``."""
        self._ensure_run()
        n = bins if isinstance(bins, int) and not isinstance(bins, bool) else HISTOGRAM_BINS
        if max_bins is not None:
            n = min(n, int(max_bins))
        n = max(1, min(n, _media.MAX_BINS))
        _media.log_histogram(tag, values, bins=n, step=_step(global_step))

    def flush(self) -> None:
        """Waits up to ``flush_timeout`` s for what was sent to reach the relay."""
        _relay.flush(self.flush_timeout)

    def close(self) -> None:
        """Ends the run this writer started, then waits (bounded) for delivery."""
        self._finish(None)

    def _finish(self, exc: BaseException | None) -> None:
        if self._closed:
            return
        self._closed = True
        end = self._owns_run if self._end_run_on_close is None else self._end_run_on_close
        if end and _common.run_open():
            if exc is None:
                emit_training_end()  # "stopped" after a stop from the dashboard
            else:
                _common.end_run_for(exc)  # failed with the error; stopped for Ctrl-C / Stop
        _relay.flush(_common.end_flush(None))

    def __enter__(self) -> SummaryWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._finish(exc)

    def __getattr__(self, name: str) -> Callable[..., None]:
        # add_graph, add_embedding, add_figure, ...: accepted, not sent.
        if name.startswith("add_"):

            def ignored(*args: Any, **kwargs: Any) -> None:
                return None

            return ignored
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
