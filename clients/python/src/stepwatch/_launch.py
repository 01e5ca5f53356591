"""Launching jobs from Python: :func:`launch` submits a job to a relay's queue (the API in
docs/LAUNCH.md), :class:`Job` follows and cancels it, :func:`jobs`, :func:`queues` and
:func:`templates` list what the relay has. :func:`typed_params` turns ``k=v`` text into a
template's typed values (the ``python -m stepwatch launch`` command line uses it).

``url`` and ``token`` default to ``STEPWATCH_URL`` and ``STEPWATCH_TOKEN``, as for
:func:`stepwatch.connect`. A refusal raises :class:`LaunchError` with the relay's
message and the field it names; the relay's warnings (no live agent serves the queue…)
are issued as :class:`LaunchWarning`.
"""

from __future__ import annotations

import math
import os
import time
import urllib.parse
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from . import _http

#: Where a job ends; ``failed`` counts only once no retry is left.
FINAL = ("succeeded", "failed", "cancelled")
#: The resources a job may ask for.
RESOURCES = ("gpus", "cpus", "memory_mb", "nodes", "time_limit_s")
#: Seconds between looks while waiting for a job.
POLL = 0.5
DEFAULT_URL = _http.DEFAULT_URL


class LaunchError(Exception):
    """The relay (or this client, before sending) refused: ``field`` names what is wrong
    (``entry.params.lr``, ``resources.gpus``, …) when the refusal says; ``status`` is the
    HTTP status (None when nothing was sent or the relay could not be reached)."""

    def __init__(self, message: str, field: str | None = None, status: int | None = None):
        super().__init__(f"{field}: {message}" if field else message)
        self.message = message
        self.field = field
        self.status = status


class LaunchWarning(UserWarning):
    """A warning in the relay's answer to a submission (e.g. no live agent)."""


def _base(url: str | None) -> str:
    return _http.relay_url(url)


def _token(token: str | None) -> str | None:
    return _http.relay_token(token)


def request(
    method: str,
    path: str,
    body: Any = None,
    url: str | None = None,
    token: str | None = None,
    timeout: float = 30.0,
) -> Any:
    """One call of the relay's API; the answer's JSON (None when empty). Raises
    :class:`LaunchError` on a refusal or when the relay cannot be reached."""
    try:
        return _http.call(method, path, body, url=url, token=token, timeout=timeout)
    except _http.Refused as e:
        raise LaunchError(e.message, e.field, e.status) from None
    except _http.Unreachable as e:
        raise LaunchError(f"could not reach the relay at {e.url}: {e.reason}") from None


# -- what is sent ---------------------------------------------------------------------------
def build_spec(
    queue: str,
    template: str | None = None,
    params: Mapping[str, Any] | None = None,
    argv: Sequence[str] | None = None,
    cwd: str | None = None,
    env: Mapping[str, str] | None = None,
    name: str | None = None,
    resources: Mapping[str, int] | None = None,
    priority: int = 0,
    max_retries: int = 0,
    clone_of: str | None = None,
    extras: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """The JobSpec JSON ``POST /api/jobs`` takes. Either ``template`` (with ``params``)
    or ``argv`` (with ``cwd``, ``env``); the name defaults to the template's, else the
    program's. Raises :class:`LaunchError` naming the field for what is plainly wrong."""
    if not queue:
        raise LaunchError("a queue is needed", "queue")
    if (template is None) == (argv is None):
        raise LaunchError("give either a template or an argv", "entry")
    entry: dict[str, Any]
    if template is not None:
        if cwd is not None or env:
            raise LaunchError("cwd and env come from the template", "entry")
        entry = {"template": template}
        if params:
            entry["params"] = dict(params)
    else:
        if params:
            raise LaunchError("params need a template", "entry.params")
        if isinstance(argv, (str, bytes)):
            raise LaunchError("argv is a list of arguments, not a string", "entry.argv")
        items = [str(a) for a in argv or ()]
        if not items:
            raise LaunchError("must name a program: argv is empty", "entry.argv")
        entry = {"argv": items}
        if cwd is not None:
            entry["cwd"] = str(cwd)
        if env:
            entry["env"] = {str(k): str(v) for k, v in env.items()}
    res: dict[str, int] = {}
    for key, value in (resources or {}).items():
        if key not in RESOURCES:
            raise LaunchError(f"unknown resource; use one of {', '.join(RESOURCES)}", key)
        if value is not None:
            res[key] = int(value)
    if name is None:
        name = template if template is not None else os.path.basename(entry["argv"][0])
    spec: dict[str, Any] = {
        "name": name,
        "queue": queue,
        "entry": entry,
        "resources": res,
        "priority": int(priority),
        "max_retries": int(max_retries),
    }
    if extras:
        spec["extras"] = {str(k): dict(v) for k, v in extras.items()}
    if clone_of is not None:
        spec["clone_of"] = clone_of
    return spec


def _kind(param: Mapping[str, Any]) -> dict[str, Any]:
    kind = param.get("kind")
    return dict(kind) if isinstance(kind, Mapping) else {"type": "string"}


def _in_range(value: float, kind: Mapping[str, Any]) -> bool:
    lo, hi = kind.get("min"), kind.get("max")
    return (lo is None or value >= lo) and (hi is None or value <= hi)


def _range_text(kind: Mapping[str, Any]) -> str:
    lo, hi = kind.get("min"), kind.get("max")
    if lo is not None and hi is not None:
        return f" between {lo} and {hi}"
    if lo is not None:
        return f" of at least {lo}"
    return f" of at most {hi}" if hi is not None else ""


def convert_param(param: Mapping[str, Any], text: str) -> Any:
    """``text`` as the value of the template parameter ``param`` (``{"name", "kind":
    {"type": ...}}``): int, float, bool, choice, string or path. Raises ``ValueError``
    with what the value must be."""
    kind = _kind(param)
    kind_type = kind.get("type")
    if kind_type == "int":
        try:
            number = int(text.strip(), 10)
        except ValueError:
            raise ValueError(f"{text!r} is not an integer") from None
        if not _in_range(number, kind):
            raise ValueError(f"must be an integer{_range_text(kind)}, got {number}")
        return number
    if kind_type == "float":
        try:
            real = float(text.strip())
        except ValueError:
            raise ValueError(f"{text!r} is not a number") from None
        if not math.isfinite(real) or not _in_range(real, kind):
            raise ValueError(f"must be a finite number{_range_text(kind)}, got {text}")
        return real
    if kind_type == "bool":
        low = text.strip().lower()
        if low in ("true", "1", "yes", "on"):
            return True
        if low in ("false", "0", "no", "off"):
            return False
        raise ValueError(f"{text!r} is not true or false")
    choices = kind.get("values") if kind_type == "choice" else kind.get("choices")
    if isinstance(choices, list) and text not in choices:
        raise ValueError(f"{text!r} is not one of {', '.join(map(str, choices))}")
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise ValueError("may not contain control characters")
    max_len = kind.get("max_len")
    if isinstance(max_len, int) and len(text) > max_len:
        raise ValueError(f"must be at most {max_len} characters")
    if kind_type == "path":
        parts = text.split("/")
        if not text or text.startswith(("/", "-")) or "\\" in text or ".." in parts:
            raise ValueError(
                f"{text!r} is not a relative path (no leading '/' or '-', no '..', no '\\')"
            )
    return text


def find_template(templates: Iterable[Mapping[str, Any]], name: str) -> Mapping[str, Any]:
    """The template called ``name``; :class:`LaunchError` (field ``entry.template``)
    listing the known ones if there is none."""
    known = list(templates)
    for t in known:
        if t.get("name") == name:
            return t
    names = ", ".join(sorted(str(t.get("name")) for t in known)) or "none"
    raise LaunchError(f"no template {name!r} (the relay has: {names})", "entry.template")


def typed_params(template: Mapping[str, Any], pairs: Iterable[str]) -> dict[str, Any]:
    """``["epochs=3", "lr=0.1"]`` as the typed values of ``template``'s parameters.
    A pair without ``=``, an unknown parameter, or a bad value raises
    :class:`LaunchError` naming ``entry.params.<name>`` (as the relay would)."""
    declared = {
        str(p.get("name")): p for p in template.get("params") or [] if isinstance(p, Mapping)
    }
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise LaunchError(f"{pair!r} is not NAME=VALUE", "entry.params")
        field = f"entry.params.{key}"
        param = declared.get(key)
        if param is None:
            names = ", ".join(sorted(declared)) or "none"
            raise LaunchError(
                f"template {template.get('name')!r} has no parameter {key!r} (it has: {names})",
                field,
            )
        try:
            out[key] = convert_param(param, text)
        except ValueError as e:
            raise LaunchError(str(e), field) from None
    return out


# -- jobs -----------------------------------------------------------------------------------
def is_final(view: Mapping[str, Any], until: Iterable[str] = FINAL) -> bool:
    """Whether a JobView's status is one of ``until``; a ``failed`` job with retries
    left is not final (the relay requeues it)."""
    status = view.get("status")
    if status not in tuple(until):
        return False
    return not (status == "failed" and (view.get("retries_left") or 0) > 0)


class Job:
    """A submitted job. ``id``, ``run`` (the run every attempt reports to), ``url`` (its
    page on the dashboard), ``state`` (the latest ``JobView`` dict: status, history,
    reason, position, …), ``status``; :meth:`refresh`, :meth:`cancel`, :meth:`wait`."""

    def __init__(
        self,
        job_id: str,
        run: str | None = None,
        state: Mapping[str, Any] | None = None,
        url: str | None = None,
        token: str | None = None,
    ) -> None:
        self.id = job_id
        self._base = _base(url)
        self._token = token
        self.state: dict[str, Any] = dict(state or {})
        self.run: str | None = run or self.state.get("run")
        self.warnings: list[str] = []

    @property
    def status(self) -> str:
        """The status when last seen: queued, claimed, submitted, running, succeeded,
        failed or cancelled."""
        return str(self.state.get("status") or "queued")

    @property
    def url(self) -> str:
        """The run's page on the dashboard."""
        run = urllib.parse.quote(self.run or "", safe="")
        return f"{self._base}/#/runs/{run}"

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        return request(method, path, body, url=self._base, token=self._token)

    def refresh(self) -> Job:
        """Fetches the job's view again (``GET /api/jobs/{id}``); returns self."""
        view = self._call("GET", f"/api/jobs/{urllib.parse.quote(self.id, safe='')}")
        if isinstance(view, dict):
            self.state = view
            self.run = view.get("run") or self.run
        return self

    def cancel(self) -> Job:
        """Asks the relay to cancel the job (a queued one at once, a running one with a
        stop first, then the engine's kill); returns self, refreshed."""
        answer = self._call("POST", f"/api/jobs/{urllib.parse.quote(self.id, safe='')}/cancel")
        view = answer.get("job") if isinstance(answer, dict) else None
        if isinstance(view, dict):  # {"job": JobView, "stop_command": ...}
            self.state = view
            return self
        return self.refresh()

    def wait(
        self,
        timeout: float | None = None,
        until: Iterable[str] = FINAL,
        poll: float = POLL,
    ) -> str:
        """Polls until the status is one of ``until`` (a ``failed`` job with retries left
        is waited on: it is requeued); returns that status. Raises ``TimeoutError`` after
        ``timeout`` seconds."""
        wanted = tuple(until)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self.refresh()
            if is_final(self.state, wanted):
                return self.status
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"job {self.id} is still {self.status} after {timeout} s")
            left = poll if deadline is None else min(poll, max(deadline - time.monotonic(), 0))
            time.sleep(left)

    def __repr__(self) -> str:
        return f"Job(id={self.id!r}, run={self.run!r}, status={self.status!r})"


def launch(
    queue: str,
    template: str | None = None,
    params: Mapping[str, Any] | None = None,
    argv: Sequence[str] | None = None,
    cwd: str | None = None,
    env: Mapping[str, str] | None = None,
    name: str | None = None,
    resources: Mapping[str, int] | None = None,
    priority: int = 0,
    max_retries: int = 0,
    clone_of: str | None = None,
    extras: Mapping[str, Mapping[str, Any]] | None = None,
    url: str | None = None,
    token: str | None = None,
    wait: bool = False,
    timeout: float | None = None,
) -> Job:
    """Submits a job to ``queue`` (``POST /api/jobs``) and returns its :class:`Job`::

        job = stepwatch.launch(queue="local", template="demo", params={"epochs": 3})
        print(job.id, job.run, job.url)
        job.wait()  # "succeeded", "failed" or "cancelled"

    Either a ``template`` the relay defines, with ``params`` (typed values: ``3``, not
    ``"3"``), or a free-form ``argv`` list (never a shell string) with ``cwd`` and
    ``env`` (names starting ``STEPWATCH_`` are the agent's). ``resources``: any of
    ``gpus``, ``cpus``, ``memory_mb``, ``nodes``, ``time_limit_s`` (the queue's defaults
    fill the rest). ``extras``: per-engine settings, e.g. ``{"slurm": {"partition":
    "debug"}}``. ``max_retries``: a failed job is requeued that many times, resuming from
    its run's last checkpoint. ``clone_of``: the run this one re-runs. ``wait``: return
    only once the job ended (``timeout`` seconds at most, then ``TimeoutError``).

    A refusal raises :class:`LaunchError` (``.field`` names the field, e.g.
    ``entry.params.lr``); warnings in the answer are issued as :class:`LaunchWarning`.
    """
    spec = build_spec(
        queue,
        template=template,
        params=params,
        argv=argv,
        cwd=cwd,
        env=env,
        name=name,
        resources=resources,
        priority=priority,
        max_retries=max_retries,
        clone_of=clone_of,
        extras=extras,
    )
    answer = request("POST", "/api/jobs", spec, url=url, token=token)
    if not isinstance(answer, dict) or not isinstance(answer.get("job"), str):
        raise LaunchError(f"unexpected answer from the relay: {answer!r}")
    state = {k: answer[k] for k in ("status", "position", "run") if k in answer}
    state["job"] = answer["job"]
    job = Job(answer["job"], answer.get("run"), state, url=url, token=token)
    job.warnings = [str(w) for w in answer.get("warnings") or []]
    for w in job.warnings:
        warnings.warn(w, LaunchWarning, stacklevel=2)
    if wait:
        job.wait(timeout)
    return job


def get_job(job_id: str, url: str | None = None, token: str | None = None) -> Job:
    """The job ``job_id`` as the relay has it now."""
    return Job(job_id, url=url, token=token).refresh()


def jobs(
    queue: str | None = None,
    status: str | None = None,
    url: str | None = None,
    token: str | None = None,
) -> list[Job]:
    """The relay's jobs (``GET /api/jobs``), optionally of one ``queue`` / ``status``:
    queued ones in queue order, the others newest first."""
    query = {k: v for k, v in (("queue", queue), ("status", status)) if v}
    path = "/api/jobs" + ("?" + urllib.parse.urlencode(query) if query else "")
    views = request("GET", path, url=url, token=token) or []
    return [
        Job(str(v.get("job")), v.get("run"), v, url=url, token=token)
        for v in views
        if isinstance(v, dict)
    ]


def queues(url: str | None = None, token: str | None = None) -> list[dict[str, Any]]:
    """The relay's queues (``GET /api/queues``): engine, defaults, limits, agents,
    counts, and whether the caller may submit."""
    return list(request("GET", "/api/queues", url=url, token=token) or [])


def templates(url: str | None = None, token: str | None = None) -> list[dict[str, Any]]:
    """The relay's launch templates (``GET /api/templates``): name, description, queue,
    argv and typed params."""
    return list(request("GET", "/api/templates", url=url, token=token) or [])
