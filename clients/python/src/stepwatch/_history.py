"""A run's metric history read from the relay's series index
(``GET /api/runs/{run}/series``), for :meth:`stepwatch.Run.history` and
``python -m stepwatch export --csv``.

Exact history is read a window of steps at a time: the window is sized from the index's
point counts so that every metric's points in it fit one answer (the relay returns every
point while there are at most 4 per bucket asked for); a window that came back reduced
is asked again narrower. Steps are the relay's global steps, whole numbers, so windows
``[a, b]``, ``[b + 1, c]``… cover every point once. With ``samples`` one request per
metric asks the relay's M4 reduction instead. Rows are gathered in ``array.array``
columns (8 bytes a value); pandas is imported only to build the DataFrame at the end.
"""

from __future__ import annotations

import math
import urllib.parse
import warnings
from array import array
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Union

if TYPE_CHECKING:
    from ._api import Run

#: Points an exact history request aims at (the window of steps is sized for it).
HISTORY_PAGE = 40_000
#: Buckets one series request may ask for (the relay's limit); each keeps at most 4
#: points, so up to 4 × this many points come back exact.
MAX_BUCKETS = 20_000

#: One chunk of history rows: steps, times (None: the point had none), and per metric
#: its values (None: no value at that row).
Chunk = tuple[list[int], list[Union[float, None]], list[list[Union[float, None]]]]

_NON_FINITE = {"NaN": math.nan, "nan": math.nan, "Infinity": math.inf, "inf": math.inf}
_NON_FINITE.update({"+Infinity": math.inf, "-Infinity": -math.inf, "-inf": -math.inf})


def number(v: Any) -> Any:
    """A JSON value with the relay's non-finite strings (``"NaN"``…) as floats."""
    if isinstance(v, str):
        return _NON_FINITE.get(v, v)
    return v


def names(value: str | Iterable[str] | None) -> list[str] | None:
    """Names given as a list or as one comma-separated string; None for none given."""
    if value is None:
        return None
    if isinstance(value, str):
        return [n.strip() for n in value.split(",") if n.strip()]
    return [str(n) for n in value]


def selected_metrics(run: Run, metrics: str | Iterable[str] | None) -> list[dict[str, Any]]:
    """The series index's entries (``metric``, ``count``, ``first_step``,
    ``last_step``) of the metrics asked for, in that order; all of them for None.
    ``ValueError`` naming the run's metrics for one it does not have."""
    infos = {str(i["metric"]): i for i in run.series_info()}
    wanted = names(metrics)
    if wanted is None:
        return list(infos.values())
    unknown = [m for m in wanted if m not in infos]
    if unknown:
        has = ", ".join(sorted(infos)) or "none yet"
        raise ValueError(f"run {run.id!r} has no metric {unknown[0]!r} (it has: {has})")
    return [infos[m] for m in dict.fromkeys(wanted)]


def _series(run: Run, metric: str, buckets: int, lo: int | None, hi: int | None) -> dict[str, Any]:
    query: dict[str, Any] = {"metric": metric, "points": buckets}
    if lo is not None:
        query["from"] = lo
    if hi is not None:
        query["to"] = hi
    page = run.api.get(f"{run._path}/series?{urllib.parse.urlencode(query)}", run.id)
    return page if isinstance(page, dict) else {"total": 0, "points": []}


def history_chunks(
    run: Run,
    infos: Sequence[Mapping[str, Any]],
    min_step: float | None = None,
    max_step: float | None = None,
    samples: int | None = None,
) -> Iterator[Chunk]:
    """The history of the metrics ``infos`` (from :func:`selected_metrics`) in chunks of
    rows, in step order; ``min_step`` / ``max_step`` inclusive."""
    if samples is not None and samples < 1:
        raise ValueError(f"samples must be at least 1, got {samples}")
    lo = None if min_step is None else math.ceil(min_step)
    hi = None if max_step is None else math.floor(max_step)
    if not infos or (lo is not None and hi is not None and lo > hi):
        return
    if samples is not None:
        buckets = max(1, min(MAX_BUCKETS, int(samples) // 4))
        pages = [_series(run, str(i["metric"]), buckets, lo, hi)["points"] for i in infos]
        yield merge(pages)
        return
    yield from _exact_chunks(run, infos, lo, hi)


def _exact_chunks(
    run: Run, infos: Sequence[Mapping[str, Any]], lo: int | None, hi: int | None
) -> Iterator[Chunk]:
    ranges = []
    for i in infos:
        first, last, count = i.get("first_step"), i.get("last_step"), i.get("count") or 0
        if count and first is not None and last is not None:
            ranges.append((math.floor(first), math.ceil(last), int(count)))
        else:
            ranges.append((1, 0, 0))  # an empty series: in no window
    live = [r for r in ranges if r[2]]
    if not live:
        return
    start = min(r[0] for r in live) if lo is None else max(lo, min(r[0] for r in live))
    end = max(r[1] for r in live) if hi is None else min(hi, max(r[1] for r in live))
    per_step = sum(n / (b - a + 1) for a, b, n in live)
    width = max(1, int(HISTORY_PAGE / per_step))
    cursor = start
    while cursor <= end:
        stop = min(end, cursor + width - 1)
        pages, total = _window(run, infos, ranges, cursor, stop)
        if pages is None:  # reduced: this window again, narrower
            width = max(1, min(width // 2, width * HISTORY_PAGE // max(total, 1)))
            continue
        got = sum(len(p) for p in pages)
        chunk = merge(pages)
        del pages  # one window's answers at a time
        yield chunk
        del chunk
        cursor = stop + 1
        if got < HISTORY_PAGE // 2:
            width *= 2


def _window(
    run: Run,
    infos: Sequence[Mapping[str, Any]],
    ranges: Sequence[tuple[int, int, int]],
    lo: int,
    hi: int,
) -> tuple[list[list[Any]] | None, int]:
    """Every metric's points with steps in ``[lo, hi]``; ``(None, total)`` when one came
    back reduced (``total``: its points in the window) and the window can narrow."""
    pages: list[list[Any]] = []
    for info, (first, last, _) in zip(infos, ranges):
        if last < lo or first > hi:
            pages.append([])
            continue
        page = _series(run, str(info["metric"]), MAX_BUCKETS, lo, hi)
        points, total = page.get("points") or [], int(page.get("total") or 0)
        if len(points) < total:
            if hi > lo:
                return None, total
            # One step's points all come back (M4 has no width to cut) up to the
            # relay's exact limit (a million); past it, block summaries stand in.
            warnings.warn(
                f"run {run.id!r}: {total} points of {info['metric']!r} at step {lo}, more "
                f"than the relay reads exactly: kept the {len(points)} it answered",
                RuntimeWarning,
                stacklevel=2,
            )
        pages.append(points)
    return pages, 0


def merge(pages: Sequence[Sequence[Any]]) -> Chunk:
    """Rows from per-metric ``[step, time, value]`` points, each list in step order: one
    row per step; when a step repeats (a run that went back to an earlier step) the
    n-th point of it in one metric sits beside the n-th in another. A time of 0 is the
    relay's "none"."""
    first = pages[0] if pages else []
    if all(len(p) == len(first) for p in pages) and all(
        p is first or all(x[0] == y[0] for x, y in zip(p, first)) for p in pages
    ):  # the same steps in every metric (loss and lr of each batch_end): no merging
        steps = [int(p[0]) for p in first]
        times = [float(p[1]) or None for p in first]
        return steps, times, [[number(p[2]) for p in page] for page in pages]
    steps, times = [], []
    cols: list[list[float | None]] = [[] for _ in pages]
    at = [0] * len(pages)
    while True:
        heads = [p[i][0] for p, i in zip(pages, at) if i < len(p)]
        if not heads:
            break
        step = min(heads)
        time: float | None = None
        for k, page in enumerate(pages):
            i = at[k]
            if i < len(page) and page[i][0] == step:
                time = time or float(page[i][1]) or None
                cols[k].append(number(page[i][2]))
                at[k] = i + 1
            else:
                cols[k].append(None)
        steps.append(int(step))
        times.append(time)
    return steps, times, cols


def _pandas() -> Any:
    """pandas when it can be imported, else None (it is optional)."""
    try:
        import pandas
    except ImportError:
        return None
    return pandas


def column_names(metrics: Iterable[str]) -> list[str]:
    """The metrics' columns beside ``step`` and ``time``: their names, ``step_`` and
    ``time_`` for metrics that have those."""
    return [f"{m}_" if m in ("step", "time") else m for m in metrics]


class Columns:
    """The history being gathered, in arrays (8 bytes a value, NaN for "none")."""

    def __init__(self, infos: Sequence[Mapping[str, Any]]) -> None:
        self.metrics = list(infos)
        self.step = array("q")
        self.time = array("d")
        self.timed = False
        self.values = [array("d") for _ in infos]

    def add(self, chunk: Chunk) -> None:
        steps, times, cols = chunk
        self.step.extend(steps)
        self.timed = self.timed or any(t is not None for t in times)
        self.time.extend(math.nan if t is None else t for t in times)
        for col, values in zip(self.values, cols):
            col.extend(math.nan if v is None else v for v in values)

    def result(self) -> Any:
        """A DataFrame when pandas can be imported, else the dict of arrays."""
        out: dict[str, array[Any]] = {"step": self.step}
        if self.timed:
            out["time"] = self.time
        columns = column_names(str(info["metric"]) for info in self.metrics)
        out.update(zip(columns, self.values))
        pd = _pandas()
        if pd is None:
            return out
        import numpy

        data = {}
        for key, col in out.items():
            dtype = "int64" if key == "step" else "float64"
            data[key] = numpy.frombuffer(col, dtype=dtype) if len(col) else numpy.empty(0, dtype)
        return pd.DataFrame(data, columns=list(out))
