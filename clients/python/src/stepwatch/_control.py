"""Control from the dashboard: pause, resume, stop, load_checkpoint, ask.

A daemon thread follows the relay's command stream for the run. Commands that act on
the model (``load_checkpoint``, ``ask``) and pausing run on the *training* thread, at
the next control point: every ``emit_batch_end`` (or ``training_emitter.emit("batch_end")``)
and every explicit :func:`control_point` call. Each command id is handled once; answers
go back as ``command_ack`` events (``accepted``, then ``done``, or ``rejected`` /
``failed`` with a message).
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.request
from collections import deque
from typing import Any, Callable

from ._emitter import TrainingEventEmitter

_log = logging.getLogger("stepwatch")

#: Commands the trainer understands.
KNOWN = ("pause", "resume", "stop", "load_checkpoint", "ask")
#: Commands that call a handler registered with :func:`on_command`.
HANDLED = ("load_checkpoint", "ask")


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
    """Raised at a control point after a stop command, when the trainer opted in."""


class Controller:
    """Receives commands for one run and carries them out at control points."""

    def __init__(
        self,
        url: str,
        run: str,
        emitter: TrainingEventEmitter,
        token: str | None = None,
        raise_on_stop: bool = False,
    ) -> None:
        self.url = url.rstrip("/")
        self.run = run
        self.token = token
        self.raise_on_stop = raise_on_stop
        self._emitter = emitter
        self._handlers = HANDLERS
        self._seen: set[str] = set()
        self._work: deque = deque()  # (id, command, args) to run on the training thread
        self._cond = threading.Condition()
        self._pause_id: str | None = None  # pause asked for, not yet ended
        self._pause_acked = False
        self._resume_id: str | None = None
        self._stop_id: str | None = None
        self._closed = False
        self.connected = False
        self._thread = threading.Thread(target=self._listen, name="stepwatch-commands", daemon=True)
        self._thread.start()

    # -- public -----------------------------------------------------------------------
    def should_stop(self) -> bool:
        return self._stop_id is not None

    @property
    def paused(self) -> bool:
        return self._pause_id is not None

    def close(self) -> None:
        self._closed = True
        with self._cond:
            self._cond.notify_all()

    def control_point(self, raise_on_stop: bool | None = None) -> None:
        """Runs queued commands; blocks while paused; raises StopTraining if asked to."""
        self._run_work()
        if self._pause_id is not None and self._stop_id is None:
            pause_id = self._pause_id
            if not self._pause_acked:
                self._pause_acked = True
                self._ack(pause_id, "pause", "accepted", "paused")
            with self._cond:
                while self._pause_id is not None and self._stop_id is None and not self._closed:
                    self._cond.wait(0.2)
                    if self._work:
                        self._cond.release()
                        try:
                            self._run_work()
                        finally:
                            self._cond.acquire()
            resume_id = self._resume_id
            self._resume_id = None
            self._ack(pause_id, "pause", "done", "resumed" if resume_id else "ended")
            if resume_id:
                self._ack(resume_id, "resume", "done", "resumed")
        stop = self.raise_on_stop if raise_on_stop is None else raise_on_stop
        if stop and self._stop_id is not None:
            raise StopTraining("stopped from the Stepwatch dashboard")

    def finish_stop(self) -> bool:
        """Called when training ends: answers a stop command; True if one was asked."""
        if self._stop_id is None:
            return False
        self._ack(self._stop_id, "stop", "done", "stopped")
        return True

    # -- answers ------------------------------------------------------------------------
    def _ack(
        self, cid: str, command: str, status: str, message: str = "", output: Any = None
    ) -> None:
        fields: dict[str, Any] = {"command_id": cid, "command": command, "status": status}
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
    def _dispatch(self, cmd: dict) -> None:
        cid = cmd.get("command_id")
        name = cmd.get("command")
        args = cmd.get("args") or {}
        if not isinstance(cid, str) or cid in self._seen:
            return
        self._seen.add(cid)
        if name not in KNOWN:
            self._ack(cid, str(name), "rejected", f"unknown command {name!r}")
            return
        with self._cond:
            if name == "pause":
                if self._pause_id is not None:
                    self._ack(cid, name, "rejected", "already paused")
                else:
                    self._pause_id, self._pause_acked = cid, False
            elif name == "resume":
                if self._pause_id is None:
                    self._ack(cid, name, "rejected", "not paused")
                else:
                    self._resume_id = cid
                    self._pause_id = None
                    self._ack(cid, name, "accepted", "resuming")
            elif name == "stop":
                if self._stop_id is not None:
                    self._ack(cid, name, "rejected", "already stopping")
                else:
                    self._stop_id = cid
                    self._ack(cid, name, "accepted", "stopping at the next control point")
            elif name not in self._handlers:
                self._ack(
                    cid,
                    name,
                    "rejected",
                    f"this trainer does not support {name} "
                    f"(register one with stepwatch.on_command({name!r}, fn))",
                )
            else:
                self._work.append((cid, name, args))
                self._ack(cid, name, "accepted", "queued for the next control point")
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
                    event, data = "", []
                    for raw in resp:
                        if self._closed:
                            return
                        line = raw.decode("utf-8", "replace").rstrip("\r\n")
                        if line.startswith("event:"):
                            event = line[6:].strip()
                        elif line.startswith("data:"):
                            data.append(line[5:].strip())
                        elif not line:
                            if event == "command" and data:
                                try:
                                    self._dispatch(json.loads("\n".join(data)))
                                except ValueError:
                                    _log.warning("stepwatch: bad command message %r", data)
                            event, data = "", []
            except Exception:
                pass  # relay down or restarting: reconnect, open commands come again
            self.connected = False
            time.sleep(backoff)
            backoff = min(backoff * 2, 5.0)
