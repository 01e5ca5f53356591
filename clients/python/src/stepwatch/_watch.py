"""``stepwatch.watch(model)``: histograms of a PyTorch model's gradients and weights
every N steps, at a bounded cost.

- **The step.** Without an optimizer, the clock is the run's ``batch_end`` events (their
  ``step``, else how many there were: the reducer's step). Gradients are gone at a
  ``batch_end`` when the loop calls ``zero_grad()`` before emitting it, so they are caught
  as they are made: when the next step is due, a hook is put on each watched parameter
  (``register_post_accumulate_grad_hook``) for that step's backward pass only, and taken
  off again at its ``batch_end``, where the histograms are sent with that step. With
  ``optimizer=``, its ``step()`` is the clock instead (its count of steps): gradients
  are read in a step pre-hook, weights in a post-hook.
- **Other steps** cost one comparison in a ``batch_end`` listener (or optimizer hook).
- **Bounded.** At most ``max_params`` parameters (default 50): the largest by element
  count, kept in the model's order; 64 bins each.
- **On the device.** Each histogram is computed where its tensor lives, with no
  synchronisation (:func:`stepwatch._media.tensor_summary`); a step's results are
  stacked into one tensor per device, and the one copy to the host and the events
  happen on a background thread, not the training thread.

Without torch, with a model that has no parameters, or when a hook fails, it warns
(once) and does nothing more: it never raises into the training loop. In a
distributed run only rank 0 computes and sends them.
"""

from __future__ import annotations

import logging
import queue
import sys
import threading
from typing import Any

from . import _media, _session
from ._emitter import training_emitter

_log = logging.getLogger("stepwatch")

#: Parameters watched at most, by default.
DEFAULT_MAX_PARAMS = 50
LOG_KINDS = ("gradients", "parameters", "all")

_handles: dict[int, WatchHandle] = {}
_work: queue.Queue[tuple[int, list[str], list[Any], int]] = queue.Queue(maxsize=16)
_worker: threading.Thread | None = None
_worker_lock = threading.Lock()


def _hist_name(prefix: str, name: str) -> str:
    full = f"{prefix}/{name}"
    if len(full.encode()) <= _media.MAX_NAME:
        return full
    tail = name.encode()[-(_media.MAX_NAME - len(prefix) - 4) :].decode(errors="ignore")
    return f"{prefix}/…{tail}"


def _send_loop() -> None:
    """The background thread: one device-to-host copy per device per step, then the
    events."""
    while True:
        step, names, stacks, bins = _work.get()
        try:
            rows: list[list[float]] = []
            for stacked in stacks:
                rows += stacked.cpu().tolist()
            for name, row in zip(names, rows):
                fields = _media.summary_to_event(row, bins)
                training_emitter.emit("histogram", name=name, step=step, **fields)
        except Exception as e:
            _log.warning("stepwatch: watch() histograms at step %s not sent: %s", step, e)
        finally:
            _work.task_done()


def _submit(step: int, names: list[str], rows: list[Any], bins: int) -> None:
    global _worker
    if not rows:
        return
    torch = sys.modules["torch"]
    by_device: dict[Any, list[int]] = {}
    for i, r in enumerate(rows):
        by_device.setdefault(r.device, []).append(i)
    order = [i for idx in by_device.values() for i in idx]
    stacks = [torch.stack([rows[i] for i in idx]) for idx in by_device.values()]
    with _worker_lock:
        if _worker is None or not _worker.is_alive():
            _worker = threading.Thread(target=_send_loop, name="stepwatch-watch", daemon=True)
            _worker.start()
            if wait_idle not in _session.before_flush:
                _session.before_flush.append(wait_idle)
    try:
        _work.put_nowait((step, [names[i] for i in order], stacks, bins))
    except queue.Full:
        _log.warning("stepwatch: watch() histograms at step %s dropped (busy)", step)


def _reports() -> bool:
    """Only rank 0 of a distributed run sends histograms (the others' would be dropped:
    with DDP their gradients are the same anyway)."""
    f = _session.rank_filter
    return f is None or f.world.rank == 0


class WatchHandle:
    """What :func:`watch` returns: ``remove()`` stops watching."""

    def __init__(
        self,
        model: Any,
        log: str,
        every: int,
        max_params: int,
        bins: int,
        optimizer: Any = None,
    ) -> None:
        self.model = model
        self.log = log
        self.every = every
        self.bins = bins
        self.grads = log in ("gradients", "all")
        self.weights = log in ("parameters", "all")
        self.params: list[tuple[str, Any]] = []
        self._hooks: list[Any] = []  # this step's gradient hooks (armed)
        self._fixed: list[Any] = []  # listeners / optimizer hooks, until remove()
        self._captured: dict[int, Any] = {}
        self._count = 0  # batch_end events / optimizer steps seen
        self._last: int | None = None
        self._stride = 1
        self._failed = False
        self._listener: Any = None
        self.removed = False
        torch = sys.modules.get("torch")
        named = getattr(model, "named_parameters", None)
        if torch is None or not callable(named):
            _log.warning("stepwatch: watch() needs a torch.nn.Module; nothing is watched")
            return
        params = [(n, p) for n, p in named() if isinstance(p, torch.Tensor)]
        if self.grads and not self.weights:
            params = [(n, p) for n, p in params if p.requires_grad]
        if not params:
            _log.warning("stepwatch: watch(): the model has no parameters to watch")
            return
        if len(params) > max_params:
            biggest = sorted(range(len(params)), key=lambda i: -params[i][1].numel())
            keep = set(biggest[:max_params])
            params = [p for i, p in enumerate(params) if i in keep]
        self.params = params
        if optimizer is not None:
            self._fixed.append(optimizer.register_step_pre_hook(self._before_opt_step))
            self._fixed.append(optimizer.register_step_post_hook(self._after_opt_step))
        else:
            # One bound method, kept: the emitter's off() compares by identity.
            self._listener = training_emitter.on("batch_end", self._tick)
            self._fixed.append(self._listener)
            if self.grads and self._crosses(0, 1):
                self._arm()

    # -- the clock ------------------------------------------------------------------------
    def _crosses(self, before: int, after: int) -> bool:
        """A multiple of ``every`` in ``(before, after]``."""
        return after // self.every > before // self.every

    def _tick(self, record: dict[str, Any]) -> None:
        """``batch_end`` listener (the training thread)."""
        self._count += 1
        step = record.get("step")
        s = step if isinstance(step, int) and not isinstance(step, bool) else self._count
        last = self._last if self._last is not None else s - 1
        if s > last:
            self._stride = s - last
        self._last = s
        if self._hooks or self._captured:
            self._collect(s)
        if self._failed or not _reports():
            return
        if self.weights and self._crosses(last, s):
            self._send_weights(s)
        if self.grads and self._crosses(s, s + self._stride):
            self._arm()

    def _before_opt_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        nxt = self._count + 1
        if self.grads and not self._failed and self._crosses(self._count, nxt) and _reports():
            self._guard(self._send_grads_now, nxt)

    def _after_opt_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        before, self._count = self._count, self._count + 1
        if self.weights and not self._failed and self._crosses(before, self._count) and _reports():
            self._guard(self._send_weights, self._count)

    # -- work on due steps -------------------------------------------------------------------
    def _guard(self, fn: Any, *args: Any) -> None:
        try:
            fn(*args)
        except Exception as e:
            self._failed = True
            self._disarm()
            _log.warning("stepwatch: watch() stopped: %s", e)

    def _arm(self) -> None:
        """Hooks on the watched parameters for the coming backward pass only."""
        self._captured = {}
        for i, (_, p) in enumerate(self.params):
            if not p.requires_grad:
                continue
            if hasattr(p, "register_post_accumulate_grad_hook"):
                self._hooks.append(p.register_post_accumulate_grad_hook(self._accumulated(i)))
            else:  # torch < 2.1: the gradient flowing in, before accumulation
                self._hooks.append(p.register_hook(self._flowing(i)))

    def _disarm(self) -> None:
        hooks, self._hooks = self._hooks, []
        for h in hooks:
            try:
                h.remove()
            except Exception:
                pass

    def _accumulated(self, i: int) -> Any:
        def hook(p: Any) -> None:
            if p.grad is not None:
                self._capture(i, p.grad)

        return hook

    def _flowing(self, i: int) -> Any:
        def hook(grad: Any) -> None:
            self._capture(i, grad)

        return hook

    def _capture(self, i: int, grad: Any) -> None:
        # Called from autograd, maybe several times a step (gradient accumulation): the
        # last one, the full gradient, is kept.
        if self._failed:
            return
        try:
            torch = sys.modules["torch"]
            with torch.no_grad():
                self._captured[i] = _media.tensor_summary(grad, self.bins)
        except Exception as e:
            self._failed = True
            _log.warning("stepwatch: watch() stopped: %s", e)

    def _collect(self, step: int) -> None:
        self._disarm()
        captured, self._captured = self._captured, {}
        if captured:
            order = sorted(captured)
            names = [_hist_name("gradients", self.params[i][0]) for i in order]
            self._guard(_submit, step, names, [captured[i] for i in order], self.bins)

    def _send_grads_now(self, step: int) -> None:
        torch = sys.modules["torch"]
        names, rows = [], []
        with torch.no_grad():
            for name, p in self.params:
                if p.grad is not None:
                    names.append(_hist_name("gradients", name))
                    rows.append(_media.tensor_summary(p.grad, self.bins))
        _submit(step, names, rows, self.bins)

    def _send_weights(self, step: int) -> None:
        torch = sys.modules["torch"]
        try:
            with torch.no_grad():
                rows = [_media.tensor_summary(p, self.bins) for _, p in self.params]
            names = [_hist_name("parameters", n) for n, _ in self.params]
            _submit(step, names, rows, self.bins)
        except Exception as e:
            self._failed = True
            _log.warning("stepwatch: watch() stopped: %s", e)

    # -- the end ------------------------------------------------------------------------
    def remove(self) -> None:
        """Stops watching: every hook and listener is taken off."""
        if self.removed:
            return
        self.removed = True
        self._disarm()
        self._captured = {}
        for h in self._fixed:
            if h is self._listener:
                training_emitter.off("batch_end", h)
            else:
                try:
                    h.remove()
                except Exception:
                    pass
        self._fixed = []
        if _handles.get(id(self.model)) is self:
            del _handles[id(self.model)]


def watch(
    model: Any,
    log: str = "gradients",
    every: int = 100,
    max_params: int = DEFAULT_MAX_PARAMS,
    *,
    bins: int = 64,
    optimizer: Any = None,
) -> WatchHandle:
    """Sends histograms of ``model``'s gradients (``gradients/<param name>``), weights
    (``parameters/<param name>``) or both (``log="all"``) every ``every`` steps, for at
    most ``max_params`` parameters (the largest). The step is the run's ``batch_end``
    (emit one per step), or ``optimizer``'s steps when given. Watching a model again
    replaces the earlier watch. Returns a handle whose ``remove()`` stops it (as does
    :func:`unwatch`)."""
    if log not in LOG_KINDS:
        raise ValueError(f"log must be one of {', '.join(LOG_KINDS)}, not {log!r}")
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise ValueError(f"every must be an int >= 1, not {every!r}")
    if not 1 <= bins <= _media.MAX_BINS:
        raise ValueError(f"bins must be from 1 to {_media.MAX_BINS}")
    old = _handles.get(id(model))
    if old is not None:
        old.remove()
    handle = WatchHandle(model, log, every, max(1, int(max_params)), bins, optimizer)
    if handle.params:
        _handles[id(model)] = handle
    return handle


def unwatch(model: Any = None) -> None:
    """Stops :func:`watch` on ``model`` (every watched model when None)."""
    targets = list(_handles.values()) if model is None else [_handles.get(id(model))]
    for h in targets:
        if h is not None:
            h.remove()


def wait_idle(timeout: float = 5.0) -> bool:
    """Waits until the background thread has sent every step handed to it (tests)."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _work.unfinished_tasks == 0:
            return True
        time.sleep(0.005)
    return False
