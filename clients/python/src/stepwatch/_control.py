"""Control from the dashboard: pause, resume, stop, load_checkpoint, ask.

A daemon thread follows the relay's command stream for the run. Commands that act on
the model (``load_checkpoint``, ``ask``), pausing and stopping happen on the *training*
thread, at the next control point: every ``emit_batch_end``, ``emit_batch_start`` and
``emit_epoch_start`` (or ``training_emitter.emit`` of those names) and every explicit
:func:`control_point` call. Each command id is handled once; answers go back as
``command_ack`` events on the timeline both SDKs share (the table in ARCHITECTURE.md,
"The control path"): ``accepted`` when the command arrives (a pause: when the loop
pauses), or ``rejected`` at once when the trainer cannot do it; the final ``done`` /
``failed`` at the control point that carries it out (a stop: when the run ends). The
``accepted`` message says what the trainer is doing. A retried job's checkpoint
(``STEPWATCH_RESUME_FROM``) is loaded at the first control point as a
``load_checkpoint`` would be (:mod:`stepwatch._resume`).

How a Stop ends the loop (``connect(stop=...)`` or ``STEPWATCH_STOP``):

- ``auto`` (default): a loop that checks :func:`stepwatch.should_stop` ends itself (it
  may want to finish its epoch). A loop counts as checking once the process has called
  ``stepwatch.should_stop()``, or when a function running the loop (on the call stack at
  the control point) calls it, directly or through a function of its own. Any other loop
  gets a :class:`StopInterrupt` (a ``KeyboardInterrupt``) raised at its next control
  point, the way Ctrl-C stops a script: ``except KeyboardInterrupt`` blocks run,
  ``finally`` blocks run. A loop trusted to check that lets an epoch go by after the stop
  without calling ``should_stop()`` (a second ``epoch_start``, or more ``batch_end`` than
  the run's ``total_batches``) is interrupted then: a check that never runs does not
  leave the Stop unanswered.
- ``interrupt``: always the ``KeyboardInterrupt``. ``flag``: never; only
  ``should_stop()`` turns true. ``raise`` (or ``raise_on_stop=True``): raise
  :class:`StopTraining` at the next control point.

The interrupt is raised once, at the next control point. A loop that swallows it and
goes on training (reaches ``batch_end`` / ``batch_start`` / ``epoch_start`` again) gets
it again, like a second Ctrl-C; explicit ``control_point()`` calls (evaluation loops)
raise it only the first time, so a final test pass after the interrupt runs. Nothing is
raised once the run has ended (``emit_training_end``). The framework integrations
(Hugging Face, Lightning's callback) stop their trainer themselves in every mode but
``raise``.
"""

from __future__ import annotations

import dis
import json
import logging
import os
import sys
import threading
import time
import urllib.request
from collections import deque
from types import CodeType, FrameType, FunctionType, ModuleType
from typing import Any, Callable

from . import _dist, _resume
from ._emitter import TrainingEventEmitter

_log = logging.getLogger("stepwatch")
_get_ident = threading.get_ident

#: Commands the trainer understands.
KNOWN = ("pause", "resume", "stop", "load_checkpoint", "ask")
#: Commands that call a handler registered with :func:`on_command`.
HANDLED = ("load_checkpoint", "ask")
#: How a stop reaches the loop (see the module docstring).
STOP_MODES = ("auto", "interrupt", "flag", "raise")


#: The functions that mean "the loop checks for a stop" when user code calls them
#: (``stepwatch.should_stop``; :mod:`stepwatch._session` registers it, so this module
#: needs no import of it).
STOP_CHECKS: list[Callable[[], bool]] = []

#: Handlers registered with :func:`on_command`, shared by every connection.
HANDLERS: dict[str, Callable[..., Any]] = {}


def on_command(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """Registers the trainer's handler for ``load_checkpoint`` (called with the path) or
    ``ask`` (called with the input; its return value is shown in the dashboard)."""
    if name not in HANDLED:
        raise ValueError(f"on_command: {name!r} takes no handler; use one of {HANDLED}")
    HANDLERS[name] = fn
    return fn


class StopTraining(Exception):
    """Raised at a control point after a stop command, when the trainer opted in
    (``connect(raise_on_stop=True)`` or ``stop="raise"``)."""


class StopInterrupt(KeyboardInterrupt):
    """The ``KeyboardInterrupt`` a Stop from the dashboard raises at the next control
    point of a loop that does not check ``should_stop()`` (see the module docstring).
    ``except KeyboardInterrupt`` catches it, as it catches Ctrl-C."""


# Process-wide, so a reconnect keeps them.
#: User code has called ``stepwatch.should_stop()``: its loop ends itself on a stop.
_user_checked = False
#: The framework integration that ends training itself on a stop, as named in acks.
_framework: str | None = None


def note_user_check() -> None:
    """``stepwatch.should_stop()`` was called by the user's code."""
    global _user_checked
    _user_checked = True


def framework_stops(name: str | None) -> None:
    """An integration (``name``, e.g. "Hugging Face") stops its trainer itself on a stop;
    None when it is done."""
    global _framework
    _framework = name


def resolve_stop_mode(stop: str | None, raise_on_stop: bool = False) -> str:
    """The stop mode: ``raise`` with ``raise_on_stop``, else ``stop``, else
    ``STEPWATCH_STOP``, else ``auto``. A bad ``stop`` raises; a bad env value warns."""
    if raise_on_stop:
        return "raise"
    if stop is not None:
        mode = str(stop).strip().lower()
        if mode not in STOP_MODES:
            raise ValueError(f"stop={stop!r}: use one of {STOP_MODES}")
        return mode
    env = os.environ.get("STEPWATCH_STOP", "").strip().lower()
    if not env:
        return "auto"
    if env not in STOP_MODES:
        _log.warning("stepwatch: STEPWATCH_STOP=%r is not one of %s; using auto", env, STOP_MODES)
        return "auto"
    return env


def _is_stepwatch(module: Any) -> bool:
    return isinstance(module, str) and (module == "stepwatch" or module.startswith("stepwatch."))


#: Per code object: the names whose ``.should_stop`` it loads, and every name it loads.
_code_refs: dict[CodeType, tuple[frozenset[str], frozenset[str]]] = {}


def _refs(code: CodeType) -> tuple[frozenset[str], frozenset[str]]:
    got = _code_refs.get(code)
    if got is None:
        owners: set[str] = set()
        loaded: set[str] = set()
        prev = None
        for ins in dis.get_instructions(code):
            if ins.opname in ("LOAD_ATTR", "LOAD_METHOD"):
                if ins.argval == "should_stop" and prev is not None and prev in loaded:
                    owners.add(prev)
                prev = None
            elif ins.opname.startswith("LOAD_") and ins.opname != "LOAD_CONST":
                prev = ins.argval if isinstance(ins.argval, str) else None
                if prev is not None:
                    loaded.add(prev)
            else:
                prev = None
        got = (frozenset(owners), frozenset(loaded))
        if len(_code_refs) < 10_000:
            _code_refs[code] = got
    return got


def _code_checks(code: CodeType, lookup: Callable[[str], Any], depth: int = 0) -> bool:
    """``code`` calls ``stepwatch.should_stop`` (any alias), or a function it calls does
    (one level down: ``def stop_asked(): return stepwatch.should_stop()``)."""
    owners, loaded = _refs(code)
    for name in loaded:
        value = lookup(name)
        if _is_stop_check(value):
            return True
        if (
            name in owners
            and isinstance(value, ModuleType)
            and _is_stop_check(getattr(value, "should_stop", None))
        ):
            return True
        if (
            depth == 0
            and isinstance(value, FunctionType)
            and not _is_stepwatch(getattr(value, "__module__", None))
        ):
            inner = value.__globals__
            if _code_checks(value.__code__, inner.get, depth + 1):
                return True
    return False


def _is_stop_check(value: Any) -> bool:
    return any(value is fn for fn in STOP_CHECKS)


def loop_checks_should_stop(frame: FrameType | None, use_locals: bool = True) -> bool:
    """Whether a function on the stack from ``frame`` up (outside stepwatch) calls
    ``stepwatch.should_stop``: by name (``from stepwatch import should_stop``, any alias),
    as an attribute of the stepwatch module (``stepwatch.should_stop()``), or through a
    function of its own that does. Locals (``import stepwatch`` inside a function) are
    looked at only with ``use_locals``: not for another thread's frames."""
    depth = 0
    while frame is not None and depth < 200:
        depth += 1
        try:
            g = frame.f_globals
            if not _is_stepwatch(g.get("__name__")):
                code = frame.f_code
                local = frame.f_locals if use_locals and code.co_varnames else {}

                def lookup(name: str, local: Any = local, g: dict[str, Any] = g) -> Any:
                    return local[name] if name in local else g.get(name)

                if _code_checks(code, lookup):
                    return True
        except Exception:  # a strange frame: never break training over a guess
            pass
        frame = frame.f_back
    return False


class Controller:
    """Receives commands for one run and carries them out at control points."""

    def __init__(
        self,
        url: str,
        run: str,
        emitter: TrainingEventEmitter,
        token: str | None = None,
        raise_on_stop: bool = False,
        stop: str | None = None,
        world: _dist.World | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        #: In a distributed run: this rank, and how the ranks agree on a command's step.
        self.world = world
        self._agreement = _dist.Agreement(world, run) if world is not None else None
        self._inbox: list[tuple[int, dict[str, Any]]] = []  # (event id, command) to agree
        self._newest = 0  # the newest command id received
        self.run = run
        self.token = token
        #: How a stop reaches the loop: one of :data:`STOP_MODES`.
        self.stop_mode = resolve_stop_mode(stop, raise_on_stop)
        self.raise_on_stop = self.stop_mode == "raise"
        self._emitter = emitter
        self._handlers = HANDLERS
        self._seen: set[str] = set()
        self._work: deque[Any] = deque()  # (id, command, args) to run on the training thread
        self._cond = threading.Condition()
        self._pause_id: str | None = None  # pause asked for, not yet ended
        self._pause_acked = False
        self._resume_id: str | None = None
        self._stop_id: str | None = None
        self._stop_told: str | None = None  # how the stop's last ack said it would end
        self._stop_delivered = False  # the loop has seen the stop (flag, interrupt, raise)
        # Since the stop arrived: the user's should_stop() calls, epochs begun, batches.
        self._checks_since_stop = 0
        self._epochs_since_stop = 0
        self._batches_at_stop = 0
        self._epoch_batches: int | None = None  # total_batches of the run, if it said
        self._overdue = False  # a loop trusted to check has not, for an epoch
        self._stop_finished = False  # the run ended: nothing more is raised
        self._interrupts = 0
        self._batches = 0  # batch_end events seen (the reducer's step without `step`)
        self._step: Any = None
        self._train_thread: int | None = None  # the thread at the last control point
        self._resume_checked = False  # STEPWATCH_RESUME_FROM looked at (first point)
        self._closed = False
        self.connected = False
        self._thread = threading.Thread(target=self._listen, name="stepwatch-commands", daemon=True)
        self._thread.start()

    # -- public -----------------------------------------------------------------------
    def should_stop(self, user: bool = False) -> bool:
        """True once a stop arrived; ``user``: asked by the user's code (not an
        integration)."""
        if self._stop_id is None:
            return False
        self._stop_delivered = True
        if user:
            self._checks_since_stop += 1
        return True

    @property
    def stop_asked(self) -> bool:
        """A stop arrived (whether or not the loop has seen it yet)."""
        return self._stop_id is not None

    @property
    def stop_delivered(self) -> bool:
        """The loop has been told to stop: ``should_stop()`` answered true to it, or a
        stop was raised into it. An error after this happened on the way out."""
        return self._stop_delivered

    @property
    def paused(self) -> bool:
        return self._pause_id is not None

    def close(self) -> None:
        self._closed = True
        with self._cond:
            self._cond.notify_all()

    def at_event(self, record: dict[str, Any]) -> None:
        """The emitter's control hook: after ``batch_end``, ``batch_start``, ``epoch_start``
        (and ``training_start``, where only a retried job's resume happens)."""
        event = record["event"]
        if event == "batch_end":
            self._batches += 1
            step = record.get("step")
            self._step = self._batches if step is None else step
            if self._agreement is not None and _framework is None:
                # (an integration agrees at its own per-step hook, on every rank)
                self._agree(self._agreement)
            elif (
                self._pause_id is None
                and self._stop_id is None
                and self._resume_checked
                and not self._work
            ):
                # Nothing to do at this control point (every step's case): done here.
                self._train_thread = _get_ident()
                return
        elif event == "training_start":  # only the resume: no pause or stop here
            self._resume_once("training_start")
            return
        elif event == "epoch_start" and self._stop_id is not None:
            self._epochs_since_stop += 1
        self.control_point(where=event)

    def note_step(self, step: int) -> None:
        """The loop's global step, from an integration's step hook (it may send no
        ``batch_end`` on this rank)."""
        self._step = step

    # -- distributed runs ----------------------------------------------------------------
    def _receive(self, cmd: dict[str, Any], eid: int | None) -> None:
        """A command from the stream. In a distributed run it waits in the inbox for the
        step every rank acts at (see :class:`stepwatch._dist.Agreement`); while paused, or
        when the ranks cannot agree, it is handled at once."""
        a = self._agreement
        with self._cond:
            if a is None or a.failed is not None or self._pause_id is not None:
                self._dispatch(cmd)
                return
            self._inbox.append((eid or 0, cmd))
            self._newest = max(self._newest, eid or 0)
            self._cond.notify_all()

    def _agree(self, a: _dist.Agreement) -> None:
        """At a ``batch_end``: every rank takes the commands up to the newest id all of
        them have received, so all act on them at this step."""
        if not self._inbox and not a.available():
            return
        upto = a.agree(self._newest) if a.available() else None
        self._flush_inbox(upto)

    def _flush_inbox(self, upto: int | None) -> None:
        with self._cond:
            take = [c for i, c in self._inbox if upto is None or i <= upto]
            self._inbox = [(i, c) for i, c in self._inbox if upto is not None and i > upto]
            for cmd in take:
                self._dispatch(cmd)

    def control_point(
        self, raise_on_stop: bool | None = None, where: str | None = None, agree: bool = False
    ) -> None:
        """Runs queued commands; blocks while paused; after a stop, may raise
        :class:`StopInterrupt` or :class:`StopTraining` (see the module docstring).
        ``raise_on_stop=False``: an integration's own control point, which never raises.
        ``agree``: a point every rank of a distributed run reaches once per step, where
        they agree on the commands to carry out (the integrations' step hooks)."""
        self._train_thread = threading.get_ident()
        if agree and self._agreement is not None:
            self._agree(self._agreement)
        if not self._resume_checked:
            self._resume_once(where or "control_point")
        self._run_work()
        if self._pause_id is not None and self._stop_id is None:
            pause_id = self._pause_id
            if not self._pause_acked:
                self._pause_acked = True
                self._ack(pause_id, "pause", "accepted", "paused", step=self._step)
            with self._cond:
                while self._resume_id is None and self._stop_id is None and not self._closed:
                    if self._inbox:  # came before the pause: no collective while paused
                        self._flush_inbox(None)
                        continue
                    self._cond.wait(0.2)
                    if self._work:
                        self._cond.release()
                        try:
                            self._run_work()
                        finally:
                            self._cond.acquire()
                resume_id = self._resume_id
                self._pause_id = self._resume_id = None
            if resume_id:
                said = "resumed"
            else:
                said = "stopped while paused" if self._stop_id is not None else "ended"
            self._ack(pause_id, "pause", "done", said)
            if resume_id:
                self._ack(resume_id, "resume", "done", "resumed")
        if self._stop_id is not None and not self._stop_finished and raise_on_stop is not False:
            self._obey_stop(raise_on_stop, where)

    def finish_stop(self) -> bool:
        """Called when training ends: answers a stop command; True if one was asked."""
        if self._stop_id is None:
            return False
        if not self._stop_finished:
            self._stop_finished = True
            self._ack(self._stop_id, "stop", "done", "stopped")
        return True

    # -- stopping -----------------------------------------------------------------------
    def _how(self, frame: FrameType | None, use_locals: bool = True) -> str:
        """How the stop reaches the loop now: interrupt, flag, raise or framework."""
        if self.stop_mode == "raise":
            return "raise"
        if _framework is not None:
            return "framework"
        if self.stop_mode != "auto":
            return self.stop_mode
        if self._overdue:
            return "interrupt"
        if _user_checked:
            return "flag"
        try:
            if loop_checks_should_stop(frame, use_locals):
                return "flag"
        except Exception:
            pass
        return "interrupt"

    def _how_message(self, how: str) -> str:
        if how == "interrupt":
            if self.stop_mode == "interrupt":
                return "interrupting the loop at the next step (stop mode 'interrupt')"
            return "this loop does not check should_stop(): interrupting at the next step"
        if how == "raise":
            return "raising StopTraining at the next step"
        if how == "framework":
            return f"the {_framework} trainer stops cleanly after this step"
        return "the loop ends when it next checks should_stop()"

    def _declared_epoch_batches(self) -> int | None:
        """``total_batches`` of the run's ``training_start``, when it said."""
        try:
            starts = self._emitter.get_history("training_start", limit=1)
            n = starts[-1].get("total_batches") if starts else None
            return int(n) if isinstance(n, (int, float)) and n > 0 else None
        except Exception:
            return None

    def _stop_frame(self) -> FrameType | None:
        """The training thread's current frame, as seen from the listener thread."""
        ident = self._train_thread
        if ident is None:
            return None
        try:
            return sys._current_frames().get(ident)
        except Exception:
            return None

    def _obey_stop(self, raise_on_stop: bool | None, where: str | None) -> None:
        if raise_on_stop:
            how = "raise"
        else:
            how = self._how(sys._getframe(1))
        if how == "raise":
            self._stop_delivered = True
            self._interrupts += 1
            if self._interrupts == 1:
                self._tell_stop(how, f"raising StopTraining at step {self._step_text()}")
            raise StopTraining("stopped from the Stepwatch dashboard")
        if how == "flag" and self.stop_mode == "auto" and self._check_overdue():
            self._overdue = True
            self._interrupts += 1
            self._stop_delivered = True
            self._tell_stop(
                "interrupt",
                "the loop has not checked should_stop() for an epoch since the stop: "
                f"interrupting at step {self._step_text()} (KeyboardInterrupt)",
            )
            raise StopInterrupt(f"Stop from the Stepwatch dashboard (run {self.run})")
        if how != "interrupt":
            if self._stop_told != how:
                self._tell_stop(how, self._how_message(how))
            return
        if self._interrupts and where is None:
            return  # explicit control points (evaluation) interrupt once
        self._interrupts += 1
        self._stop_delivered = True
        if self._interrupts == 1:
            self._tell_stop(
                how, f"interrupting the loop at step {self._step_text()} (KeyboardInterrupt)"
            )
        elif self._interrupts == 2:
            self._tell_stop(
                how,
                "the loop went on after the interrupt: interrupting again at step "
                f"{self._step_text()} (KeyboardInterrupt)",
            )
        raise StopInterrupt(f"Stop from the Stepwatch dashboard (run {self.run})")

    def _check_overdue(self) -> bool:
        """A loop trusted to check should_stop() has let an epoch go by since the stop
        without calling it: a second epoch began, or more batches than an epoch has."""
        if self._checks_since_stop:
            return False
        if self._epochs_since_stop >= 2:
            return True
        per_epoch = self._epoch_batches
        return bool(per_epoch) and self._batches - self._batches_at_stop > (per_epoch or 0)

    def _step_text(self) -> str:
        return str(self._step) if self._step is not None else "0"

    def _tell_stop(self, how: str, message: str) -> None:
        self._stop_told = how
        if self._stop_id is not None:
            self._ack(self._stop_id, "stop", "accepted", message)

    def _resume_once(self, where: str) -> None:
        """A retried job's checkpoint (``STEPWATCH_RESUME_FROM``), at the first control
        point: loaded as a ``load_checkpoint`` command would be (see stepwatch._resume)."""
        if not self._resume_checked:
            self._resume_checked = True
            _resume.load_pending(self._handlers, self._emitter.emit, where)

    # -- answers ------------------------------------------------------------------------
    def _ack(
        self,
        cid: str,
        command: str,
        status: str,
        message: str = "",
        output: Any = None,
        step: Any = None,
    ) -> None:
        fields: dict[str, Any] = {"command_id": cid, "command": command, "status": status}
        if step is not None:
            fields["step"] = step  # where the loop acted (a pause: the step it holds at)
        if message:
            fields["message"] = message
        if output is not None:
            fields["output"] = output
        self._emitter.emit("command_ack", **fields)

    def _run_work(self) -> None:
        while self._work:
            try:
                cid, command, args = self._work.popleft()
            except IndexError:
                return
            fn = self._handlers.get(command)
            if fn is None:
                self._ack(cid, command, "rejected", f"this trainer has no handler for {command}")
                continue
            started = time.perf_counter()
            try:
                if command == "load_checkpoint":
                    result = fn(args["path"])
                else:
                    result = fn(args.get("input"))
            except Exception as e:  # a failing handler fails the command, not training
                self._ack(cid, command, "failed", f"{type(e).__name__}: {e}")
                continue
            took_ms = (time.perf_counter() - started) * 1000
            if command == "load_checkpoint":
                self._emitter.emit("checkpoint_loaded", checkpoint_path=args["path"])
                self._ack(cid, command, "done", f"loaded {args['path']}")
            else:
                self._ack(cid, command, "done", f"answered in {took_ms:.0f} ms", output=result)

    # -- listener thread ----------------------------------------------------------------
    def _dispatch(self, cmd: dict[str, Any]) -> None:
        cid = cmd.get("command_id")
        name = cmd.get("command")
        args = cmd.get("args") or {}
        if not isinstance(cid, str) or cid in self._seen:
            return
        self._seen.add(cid)
        if name not in KNOWN:
            self._ack(cid, str(name), "rejected", f"unknown command {name!r}")
            return
        if name == "ask" and self.world is not None and self.world.rank != 0:
            self._ack(cid, name, "done", "answered by rank 0")
            return
        with self._cond:
            if name == "pause":
                if self._stop_id is not None:
                    self._ack(cid, name, "rejected", "already stopping")
                elif self._pause_id is not None:
                    self._ack(cid, name, "rejected", "already paused")
                else:
                    self._pause_id, self._pause_acked = cid, False
            elif name == "resume":
                if self._pause_id is None or self._resume_id is not None:
                    self._ack(cid, name, "rejected", "not paused")
                else:
                    self._ack(cid, name, "accepted", "resuming")
                    self._resume_id = cid
            elif name == "stop":
                if self._stop_id is not None:
                    self._ack(cid, name, "rejected", "already stopping")
                else:
                    how = self._how(self._stop_frame(), use_locals=False)
                    self._stop_told = how
                    self._batches_at_stop = self._batches
                    self._epoch_batches = self._declared_epoch_batches()
                    # Answered before the training thread can see the stop (and answer
                    # it "done" at the run's end): accepted always comes first.
                    self._ack(cid, name, "accepted", "stop accepted; " + self._how_message(how))
                    self._stop_id = cid
            elif name not in self._handlers:
                self._ack(
                    cid,
                    name,
                    "rejected",
                    f"this trainer does not support {name} "
                    f"(register one with stepwatch.on_command({name!r}, fn))",
                )
            else:
                self._ack(cid, name, "accepted", "queued for the next control point")
                self._work.append((cid, name, args))
            self._cond.notify_all()

    def _listen(self) -> None:
        backoff = 0.2
        while not self._closed:
            req = urllib.request.Request(f"{self.url}/api/runs/{self.run}/commands/stream")
            req.add_header("Accept", "text/event-stream")
            if self.token:
                req.add_header("Authorization", f"Bearer {self.token}")
            try:
                with urllib.request.urlopen(req, timeout=60) as resp:
                    self.connected = True
                    backoff = 0.2
                    event, data, eid = "", [], None
                    for raw in resp:
                        if self._closed:
                            return
                        line = raw.decode("utf-8", "replace").rstrip("\r\n")
                        if line.startswith("event:"):
                            event = line[6:].strip()
                        elif line.startswith("data:"):
                            data.append(line[5:].strip())
                        elif line.startswith("id:"):
                            eid = int(line[3:].strip()) if line[3:].strip().isdigit() else None
                        elif not line:
                            if event == "command" and data:
                                try:
                                    self._receive(json.loads("\n".join(data)), eid)
                                except ValueError:
                                    _log.warning("stepwatch: bad command message %r", data)
                            event, data, eid = "", [], None
            except Exception:
                pass  # relay down or restarting: reconnect, open commands come again
            self.connected = False
            time.sleep(backoff)
            backoff = min(backoff * 2, 5.0)
