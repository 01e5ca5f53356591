"""``python -m stepwatch export RUN (--csv | --json)``: a run's metric history as CSV (a
``step`` column, ``time`` when the points have one, one column per metric; an empty
cell where a metric has no value at that step) or its events as JSON lines, to stdout
or ``--out FILE``. Both are streamed: a run of any length is written in bounded memory.
Errors go to stderr; exit status 2 when the relay refused (unknown run or metric,
refused token), 1 when it could not be reached or failed, or the file not be written."""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
from typing import IO, Any

from . import _relay
from ._api import Api, ApiError, RelayUnreachable
from ._history import column_names, history_chunks, selected_metrics


def add_command(sub: Any, url: str) -> None:
    """Adds ``export`` to the subparsers ``sub``."""
    ex = sub.add_parser(
        "export",
        help="write a run's history as CSV or its events as JSON lines",
        usage="python -m stepwatch export RUN (--csv | --json) [options]",
    )
    ex.add_argument("run", help="the run id")
    what = ex.add_mutually_exclusive_group(required=True)
    what.add_argument("--csv", action="store_true", help="the metric history, one row a step")
    what.add_argument("--json", action="store_true", help="the stored events, one JSON a line")
    ex.add_argument("--metrics", help="--csv: these metrics (comma-separated; default all)")
    ex.add_argument("--min-step", type=int, help="--csv: from this step on")
    ex.add_argument("--max-step", type=int, help="--csv: up to this step")
    ex.add_argument("--samples", type=int, help="--csv: about this many points a metric (M4)")
    ex.add_argument("--events", help="--json: only events of these names (comma-separated)")
    ex.add_argument("--out", help="write to this file (default: stdout)")
    ex.add_argument("--url", default=url, help="the relay (default STEPWATCH_URL)")
    ex.add_argument("--token", help="the token (default STEPWATCH_TOKEN)")


def run(args: argparse.Namespace) -> int:
    """Runs ``export``; the exit status."""
    # The package connects as a trainer when STEPWATCH_URL is set: not for this tool.
    _relay.disconnect(timeout=0)
    api = Api(args.url, args.token)
    try:
        if args.out:
            return _to_file(api, args)
        _write(api, args, sys.stdout)
        sys.stdout.flush()
        return 0
    except BrokenPipeError:  # `… | head`: the reader has what it wanted
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except (ApiError, ValueError) as e:
        print(f"stepwatch export: error: {e}", file=sys.stderr)
        failed = isinstance(e, RelayUnreachable) or (
            isinstance(e, ApiError) and (e.status is None or e.status >= 500)
        )
        return 1 if failed else 2
    except OSError as e:
        why = e.strerror or str(e)
        print(f"stepwatch export: error: could not write {args.out}: {why}", file=sys.stderr)
        return 1


def _to_file(api: Api, args: argparse.Namespace) -> int:
    """Writes beside ``--out`` and renames at the end: no half-written file is left."""
    folder = os.path.dirname(os.path.abspath(args.out))
    fd, tmp = tempfile.mkstemp(prefix=".stepwatch-export-", dir=folder)
    try:
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as out:
            _write(api, args, out)
        os.replace(tmp, args.out)
    except BaseException:
        os.unlink(tmp)
        raise
    return 0


def _write(api: Api, args: argparse.Namespace, out: IO[str]) -> None:
    run = api.run(args.run)
    if args.json:
        for event in run.events(args.events):
            out.write(json.dumps(event, separators=(",", ":")) + "\n")
        return
    metrics = selected_metrics(run, args.metrics)
    names = column_names(str(m["metric"]) for m in metrics)
    writer = csv.writer(out, lineterminator="\n")
    timed: bool | None = None  # decided by the first rows: do the points have a time?
    for steps, times, cols in history_chunks(
        run, metrics, args.min_step, args.max_step, args.samples
    ):
        if not steps:
            continue
        if timed is None:
            timed = any(t is not None for t in times)
            writer.writerow(["step", *(["time"] if timed else []), *names])
        for i, step in enumerate(steps):
            row: list[Any] = [step]
            if timed:
                row.append("" if times[i] is None else repr(times[i]))
            row.extend("" if c[i] is None else repr(c[i]) for c in cols)
            writer.writerow(row)
    if timed is None:
        writer.writerow(["step", *names])
