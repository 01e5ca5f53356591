"""The launch commands of ``python -m stepwatch``: ``launch`` (submit a job, from a
template with ``--param k=v`` typed by the template, or a free-form ``-- argv...``; with
``--wait`` follow it: exit 0 when it succeeded, 1 when it failed or was cancelled),
``jobs`` (a table) and ``cancel JOB``. Errors go to stderr with the field they name;
exit status 2 for a refusal (nothing was submitted when the command line was wrong)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from typing import Any

from . import _launch, _relay
from ._launch import Job, LaunchError

#: Seconds between looks while following a job.
FOLLOW_POLL = 0.5


def add_commands(sub: Any, url: str) -> None:
    """Adds ``launch``, ``jobs`` and ``cancel`` to the subparsers ``sub``."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", default=url, help="the relay (default STEPWATCH_URL)")
    common.add_argument("--json", action="store_true", help="print JSON")

    la = sub.add_parser(
        "launch",
        parents=[common],
        help="submit a job to a queue",
        usage="python -m stepwatch launch --queue Q (--template T [--param K=V ...] | "
        "-- PROGRAM ARG...) [options]",
    )
    la.add_argument("--queue", required=True)
    la.add_argument("--template", help="a launch template the relay defines")
    la.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="K=V",
        help="a template parameter, typed by the template (repeat for more)",
    )
    la.add_argument("--name", help="the job's name (default: the template's or program's)")
    for flag in ("gpus", "cpus", "memory-mb", "time-limit-s", "nodes"):
        la.add_argument(f"--{flag}", type=int)
    la.add_argument("--priority", type=int, default=0, help="higher goes first")
    la.add_argument("--max-retries", type=int, default=0)
    la.add_argument("--clone-of", help="the run this job re-runs")
    la.add_argument("--cwd", help="working directory (free-form jobs)")
    la.add_argument("--env", action="append", default=[], metavar="K=V", help="(free-form)")
    la.add_argument("--wait", action="store_true", help="follow the job until it ends")
    la.add_argument("--timeout", type=float, help="seconds --wait waits at most")
    la.add_argument("argv", nargs="*", help="after --: the program and its arguments")

    jo = sub.add_parser("jobs", parents=[common], help="list jobs")
    jo.add_argument("--queue")
    jo.add_argument("--status")

    ca = sub.add_parser("cancel", parents=[common], help="cancel a job")
    ca.add_argument("job")


def run(args: argparse.Namespace) -> int:
    """Runs a launch command; the exit status."""
    # The package connects as a trainer when STEPWATCH_URL is set: not for these tools.
    _relay.disconnect(timeout=0)
    try:
        if args.cmd == "launch":
            return _launch_cmd(args)
        if args.cmd == "jobs":
            return _jobs_cmd(args)
        return _cancel_cmd(args)
    except LaunchError as e:
        where = f" (status {e.status})" if e.status else ""
        print(f"stepwatch {args.cmd}: error{where}: {e}", file=sys.stderr)
        return 2


def _pairs(items: list[str], field: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise LaunchError(f"{item!r} is not NAME=VALUE", field)
        out[key] = value
    return out


def _spec_args(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of ``launch()`` from the command line; the parameters are
    typed by the template (fetched from the relay) before anything is submitted."""
    if args.template and args.argv:
        raise LaunchError("give either --template or a program after --, not both", "entry")
    if not args.template and not args.argv:
        raise LaunchError("give --template NAME or a program after --", "entry")
    if args.param and not args.template:
        raise LaunchError("--param needs --template", "entry.params")
    resources = {
        key: getattr(args, key)
        for key in ("gpus", "cpus", "memory_mb", "nodes", "time_limit_s")
        if getattr(args, key) is not None
    }
    kwargs: dict[str, Any] = {
        "queue": args.queue,
        "name": args.name,
        "resources": resources,
        "priority": args.priority,
        "max_retries": args.max_retries,
        "clone_of": args.clone_of,
        "url": args.url,
    }
    if args.template:
        template = _launch.find_template(_launch.templates(url=args.url), args.template)
        kwargs["template"] = args.template
        kwargs["params"] = _launch.typed_params(template, args.param)
    else:
        kwargs["argv"] = list(args.argv)
        kwargs["cwd"] = args.cwd
        kwargs["env"] = _pairs(args.env, "entry.env")
    return kwargs


def _launch_cmd(args: argparse.Namespace) -> int:
    kwargs = _spec_args(args)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", _launch.LaunchWarning)
        job = _launch.launch(**kwargs)
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    if args.json:
        print(json.dumps({**job.state, "run": job.run, "url": job.url, "warnings": job.warnings}))
    else:
        where = f" (position {job.state['position']})" if job.state.get("position") else ""
        print(f"job {job.id} {job.status}{where}")
        print(f"run {job.run}")
        print(job.url)
    if not args.wait:
        return 0
    status = _follow(job, args.timeout, quiet=args.json)
    if args.json:
        print(json.dumps(job.state))
    return 0 if status == "succeeded" else 1


def _follow(job: Job, timeout: float | None, quiet: bool) -> str:
    """Polls the job until it ends, telling each status change on stderr."""
    deadline = None if timeout is None else time.monotonic() + timeout
    said = None
    while True:
        job.refresh()
        line = job.status + (f": {job.state['reason']}" if job.state.get("reason") else "")
        if line != said and not quiet:
            print(f"job {job.id}: {line}", file=sys.stderr)
            said = line
        if _launch.is_final(job.state):
            return job.status
        if deadline is not None and time.monotonic() >= deadline:
            print(f"job {job.id}: still {job.status} after {timeout} s", file=sys.stderr)
            return job.status
        time.sleep(FOLLOW_POLL)


def _jobs_cmd(args: argparse.Namespace) -> int:
    found = _launch.jobs(queue=args.queue, status=args.status, url=args.url)
    if args.json:
        print(json.dumps([j.state for j in found]))
        return 0
    rows = [("JOB", "QUEUE", "STATUS", "RUN", "NAME", "REASON")]
    for j in found:
        spec = j.state.get("spec") or {}
        rows.append(
            (
                j.id,
                str(j.state.get("queue") or spec.get("queue") or ""),
                j.status,
                j.run or "",
                str(spec.get("name") or ""),
                str(j.state.get("reason") or j.state.get("waiting") or ""),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1])
    return 0


def _cancel_cmd(args: argparse.Namespace) -> int:
    job = Job(args.job, url=args.url, token=os.environ.get("STEPWATCH_TOKEN")).cancel()
    if args.json:
        print(json.dumps(job.state))
    else:
        print(f"job {job.id} {job.status}")
    return 0
