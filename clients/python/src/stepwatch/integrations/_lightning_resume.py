"""Resuming a Lightning fit of a retried job (``STEPWATCH_RESUME_FROM``) from the
``StepwatchCallback``: the fit's own ``ckpt_path`` when it was given one, else the
callback restores the checkpoint itself in ``on_fit_start`` (model, datamodule and
callbacks there; Lightning restores the loops, ``global_step`` and optimizers right
after, as for ``fit(ckpt_path=...)``), unless the script registered its own
``load_checkpoint`` handler. No framework is imported here: the trainer is duck-typed.
"""

from __future__ import annotations

from typing import Any

from .. import _control, _resume

#: What the trainer's checkpoint connector must offer for the callback to restore.
_CONNECTOR_STEPS = ("resume_start", "restore_model", "restore_datamodule", "restore_callbacks")


def _restore(trainer: Any, path: str) -> bool:
    connector: Any = getattr(trainer, "_checkpoint_connector", None)
    if not all(callable(getattr(connector, n, None)) for n in _CONNECTOR_STEPS):
        return False
    try:
        connector.resume_start(path)
        connector.restore_model()
        connector.restore_datamodule()
        connector.restore_callbacks()
    except Exception as e:  # a bad checkpoint: reported, the fit goes on from the start
        _resume.warn(f"could not resume from {path}: {type(e).__name__}: {e}")
        return False
    return True


def resume_at_fit_start(trainer: Any) -> str | None:
    """Called from ``on_fit_start``: the checkpoint this fit resumes from, or None."""
    if _resume.path() is None:
        return None
    if getattr(trainer, "ckpt_path", None):  # fit(ckpt_path=...) restored it
        return _resume.announce()
    if _resume.pending() is None:
        return None  # the script took it (stepwatch.resume_from())
    if "load_checkpoint" in _control.HANDLERS:
        return None  # the script's handler loads it at the first control point
    path = _resume.claim()
    if path is None:
        return None
    if _restore(trainer, path):
        return path
    _resume.warn(
        f"this job resumes from {path} but the fit did not: pass "
        "ckpt_path=stepwatch.resume_from() to trainer.fit, or use "
        "stepwatch.integrations.lightning.fit(trainer, model)"
    )
    return None
