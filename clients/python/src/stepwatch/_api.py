"""Reading runs back from a relay: :class:`Api` lists and finds runs, :class:`Run` reads
one run's state, metric history and events.

``url`` and ``token`` default to ``STEPWATCH_URL`` and ``STEPWATCH_TOKEN``, as for
:func:`stepwatch.connect`. Everything is read through the relay's JSON API
(``GET /api/runs``, ``/api/runs/{run}``, ``…/events``, ``…/series``); nothing is cached
but a run's state, which :meth:`Run.refresh` reads again.

Memory stays bounded however long the run: :meth:`Run.events` is a generator that asks
for one page at a time, and :meth:`Run.history` reads the series index a step window at
a time and keeps only the result, in compact arrays (pandas, when it is installed, gets
them as a DataFrame; it is never imported before :meth:`Run.history` is called).
"""

from __future__ import annotations

import fnmatch
import urllib.parse
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from . import _history, _http, _runmeta
from ._history import names as _names
from ._history import number as _number

#: Events per request of :meth:`Run.events` (the relay allows up to 100,000).
EVENTS_PAGE = 10_000
#: The statuses a run can have.
STATUSES = ("pending", "running", "paused", "completed", "failed", "stopped")


class ApiError(Exception):
    """A read the relay could not answer. ``status`` is the HTTP status (None when no
    answer came), ``message`` the relay's own words (its ``{"error": …}``), ``url`` the
    relay, ``answer`` the error answer as a dict."""

    def __init__(
        self,
        text: str,
        status: int | None = None,
        message: str | None = None,
        url: str | None = None,
        answer: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(text)
        self.status = status
        self.message = text if message is None else message
        self.url = url
        self.answer: dict[str, Any] = dict(answer or {})


class RunNotFound(ApiError):
    """The relay has no run ``run`` (404)."""

    def __init__(self, run: str, url: str, message: str | None = None) -> None:
        super().__init__(f"no run {run!r} on the relay at {url}", 404, message, url)
        self.run = run


class AuthError(ApiError):
    """The relay refused the credentials (401: none, wrong or expired token) or does not
    let them read this (403: e.g. a trainer's token, which may only write)."""


class RelayUnreachable(ApiError):
    """Nothing answered at the relay's URL: it is not running, or the URL is wrong."""


def _reason(e: BaseException) -> str:
    """A network error in words."""
    inner = getattr(e, "reason", e)  # URLError wraps the OS error
    if isinstance(inner, ConnectionRefusedError):
        return "connection refused"
    if isinstance(inner, TimeoutError) or "timed out" in str(inner):
        return "no answer in time"
    return str(inner)


def _same(a: Any, b: Any) -> bool:
    """JSON equality: numbers by value (``1 == 1.0``, ``1e-3 == 0.001``), never a bool
    for a number; objects and arrays item by item."""
    a, b = _number(a), _number(b)
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b or (isinstance(a, float) and isinstance(b, float) and a != a and b != b)
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return bool(a == b)


_MISSING = object()


def config_value(config: Mapping[str, Any], key: str) -> Any:
    """``config[key]``, where a dotted key also reaches into nested objects
    (``"optimizer.name"``); a key that is itself dotted wins. A sentinel when absent."""
    if key in config:
        return config[key]
    node: Any = config
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return _MISSING
        node = node[part]
    return node


def _name_matches(pattern: str, *names: str) -> bool:
    if any(c in pattern for c in "*?["):
        return any(fnmatch.fnmatchcase(n, pattern) for n in names)
    return any(pattern in n for n in names)


class Api:
    """A relay to read runs from::

    api = stepwatch.Api()  # STEPWATCH_URL / STEPWATCH_TOKEN, else the local relay
    for run in api.runs(status="completed", config={"optimizer.name": "adam"}):
        print(run.id, run.summary.get("loss"))
    df = api.run("my-run").history(["loss", "lr"])
    """

    def __init__(self, url: str | None = None, token: str | None = None, timeout: float = 30.0):
        self.url = _http.relay_url(url)
        self.token = _http.relay_token(token)
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"Api(url={self.url!r})"

    def get(self, path: str, run: str | None = None) -> Any:
        """``GET path`` on the relay (``/api/…``); the answer's JSON. Raises
        :class:`RunNotFound` (a 404 for ``run``), :class:`AuthError`,
        :class:`RelayUnreachable` or :class:`ApiError`."""
        return self._call("GET", path, None, run)

    def post(self, path: str, body: Any, run: str | None = None) -> Any:
        """``POST path`` with ``body`` as JSON; the answer's JSON, errors as :meth:`get`."""
        return self._call("POST", path, body, run)

    def get_bytes(self, path: str, run: str | None = None) -> bytes:
        """``GET path``; the answer's bytes as they came (media). Errors as :meth:`get`."""
        return bytes(self._call("GET", path, None, run, raw=True))

    def _call(self, method: str, path: str, body: Any, run: str | None, raw: bool = False) -> Any:
        try:
            return _http.call(
                method,
                path,
                body,
                url=self.url,
                token=self.token,
                timeout=self.timeout,
                raw=raw,
            )
        except _http.Unreachable as e:
            raise RelayUnreachable(
                f"could not reach the Stepwatch relay at {self.url} ({_reason(e.reason)}): "
                "is it running, and is that its address (STEPWATCH_URL)?",
                url=self.url,
            ) from None
        except _http.Refused as e:
            raise self._refusal(e, path, run, method) from None

    def _refusal(
        self, e: _http.Refused, path: str, run: str | None, method: str = "GET"
    ) -> ApiError:
        where = f"the relay at {self.url}"
        if e.status == 404 and run is not None and not e.message.startswith("no API endpoint"):
            return RunNotFound(run, self.url, e.message)
        if e.status == 401:
            if self.token:
                text = f"{where} refused the token ({e.message}): check STEPWATCH_TOKEN"
            else:
                text = f"{where} needs a token ({e.message}): set STEPWATCH_TOKEN"
            return AuthError(text, 401, e.message, self.url, e.answer)
        if e.status == 403:
            verb = "read" if method == "GET" else "change"
            text = f"{where} does not let this token {verb} {path.split('?')[0]} ({e.message})"
            return AuthError(text, 403, e.message, self.url, e.answer)
        text = f"{where} answered {e.status} to {method} {path.split('?')[0]}: {e.message}"
        return ApiError(text, e.status, e.message, self.url, e.answer)

    def runs(
        self,
        name: str | None = None,
        status: str | Iterable[str] | None = None,
        tag: str | None = None,
        config: Mapping[str, Any] | None = None,
        group: str | None = None,
    ) -> list[Run]:
        """The relay's runs (``GET /api/runs``), filtered here, all filters together:

        - ``name``: a part of the run's name or id (``"lr-sweep"``), or a glob when it
          has ``*``, ``?`` or ``[`` (``"sweep-*"``, matched against the whole name or
          id; case matters);
        - ``status``: one status or several (``"running"``, ``["completed",
          "stopped"]``); an unknown one raises ``ValueError``;
        - ``tag``: runs whose tags hold it (``connect(tags=…)``, the dashboard,
          :meth:`Run.set_meta`); ``group``: runs of that group;
        - ``config``: every key equal in the run's ``training_start`` config; a dotted
          key reaches into nested objects (``{"optimizer.name": "adam"}``); numbers
          compare by value (``1 == 1.0``, ``1e-3 == 0.001``), a bool never equals a
          number.

        ``config`` reads each remaining run's state (one request per run).
        """
        statuses = _names(status)
        if statuses is not None:
            unknown = [s for s in statuses if s not in STATUSES]
            if unknown:
                raise ValueError(f"unknown status {unknown[0]!r}: runs are {', '.join(STATUSES)}")
        found = []
        for summary in self.get("/api/runs") or []:
            if not isinstance(summary, dict) or not isinstance(summary.get("run"), str):
                continue
            run = Run(self, summary["run"], summary=summary)
            if name is not None and not _name_matches(name, run.name, run.id):
                continue
            if statuses is not None and run.status not in statuses:
                continue
            if tag is not None and tag not in run.tags:
                continue
            if group is not None and run.group != group:
                continue
            if config is not None:
                cfg = run.config
                if not all(_same(config_value(cfg, k), v) for k, v in config.items()):
                    continue
            found.append(run)
        return found

    def run(self, run_id: str) -> Run:
        """The run ``run_id``, its state read now; :class:`RunNotFound` if there is none."""
        return Run(self, run_id).refresh()


class Run:
    """One run of a relay. ``id``, ``name``, ``status``; from its state (read once, on
    first use; :meth:`refresh` reads it again): ``state``, ``config``, ``summary``,
    ``tags``, ``group``, ``notes``, ``checkpoints``, ``commands``, ``alerts``;
    :meth:`set_meta` changes the first three. Read from the relay on each
    call: :meth:`history`, :meth:`events`, :meth:`logs`, :meth:`metric_names`."""

    def __init__(
        self,
        api: Api,
        run_id: str,
        summary: Mapping[str, Any] | None = None,
        state: Mapping[str, Any] | None = None,
    ) -> None:
        self.api = api
        self.id = run_id
        self._summary: dict[str, Any] = dict(summary or {})
        self._state: dict[str, Any] | None = None if state is None else dict(state)

    def __repr__(self) -> str:
        return f"Run(id={self.id!r}, name={self.name!r}, status={self.status!r})"

    @property
    def _path(self) -> str:
        return f"/api/runs/{urllib.parse.quote(self.id, safe='')}"

    def _known(self) -> Mapping[str, Any]:
        """The freshest of what was read: the state, else the runs list's summary."""
        return self._state if self._state is not None else self._summary

    @property
    def name(self) -> str:
        """The display name (``training_start``'s ``name``, else the run id)."""
        return str(self._known().get("name") or self.id)

    @property
    def status(self) -> str:
        """pending, running, paused, completed, failed or stopped (as last read)."""
        return str(self._known().get("status") or "pending")

    def refresh(self) -> Run:
        """Reads the run's state again (``GET /api/runs/{run}``); returns self."""
        state = self.api.get(self._path, run=self.id)
        self._state = dict(state) if isinstance(state, dict) else {}
        return self

    @property
    def state(self) -> dict[str, Any]:
        """The run's state as ``GET /api/runs/{run}`` answers it (read on first use)."""
        if self._state is None:
            self.refresh()
        assert self._state is not None
        return self._state

    @property
    def config(self) -> dict[str, Any]:
        """``training_start``'s config (empty when the run sent none)."""
        config = self.state.get("config")
        return dict(config) if isinstance(config, dict) else {}

    @property
    def tags(self) -> list[str]:
        """The run's tags, as last read (the runs list's summary carries them)."""
        tags = self._known().get("tags")
        return [str(t) for t in tags] if isinstance(tags, list) else []

    @property
    def group(self) -> str | None:
        """The run's group, as last read; None when it has none."""
        group = self._known().get("group")
        return str(group) if group else None

    @property
    def notes(self) -> str:
        """The run's notes (Markdown), from its state; empty when it has none."""
        return str(self.state.get("notes") or "")

    def set_meta(
        self,
        tags: Iterable[str] | str | None = None,
        group: str | None = None,
        notes: str | None = None,
    ) -> Run:
        """Changes the run's tags (the whole list, or one comma-separated string), group
        or notes (``""`` clears one); what is not given stays. Recorded as a
        ``run_meta`` event with who sent it (``POST /api/runs/{run}/meta``; the token's
        role must be allowed to send commands). A bad value raises ``ValueError`` before
        anything is sent; returns self, its state read again."""
        fields = _runmeta.check_meta(
            None if tags is None else (tags if isinstance(tags, str) else list(tags)),
            group,
            notes,
        )
        if not fields:
            raise ValueError("set_meta: give tags, group or notes")
        self.api.post(self._path + "/meta", fields, run=self.id)
        return self.refresh()

    @property
    def summary(self) -> dict[str, Any]:
        """The last value of every metric by name (``loss``, ``lr``, and every metric the
        run reported), and under ``"best"`` the best values the relay keeps, each
        ``{"value", "step"}``: ``"loss"`` (lowest training loss) and the lowest
        validation loss under its own name (``"val_loss"``…). Non-finite values are
        floats (``nan``, ``inf``)."""
        s = self.state
        out: dict[str, Any] = {}
        if s.get("current_loss") is not None:
            out["loss"] = _number(s["current_loss"])
        if s.get("learning_rate") is not None:
            out["lr"] = _number(s["learning_rate"])
        metrics = s.get("metrics")
        if isinstance(metrics, dict):
            out.update({str(k): _number(v) for k, v in metrics.items()})
        best: dict[str, dict[str, Any]] = {}
        if s.get("best_loss") is not None:
            best["loss"] = {"value": _number(s["best_loss"]), "step": s.get("best_step")}
        val = s.get("best_val")
        if isinstance(val, dict) and val.get("metric"):
            best[str(val["metric"])] = {"value": _number(val.get("value")), "step": val.get("step")}
        if best:
            out["best"] = best
        return out

    def _state_list(self, key: str) -> list[dict[str, Any]]:
        items = self.state.get(key)
        return [dict(i) for i in items if isinstance(i, dict)] if isinstance(items, list) else []

    @property
    def checkpoints(self) -> list[dict[str, Any]]:
        """The checkpoints the run reported, oldest first (the relay keeps the last 100):
        ``path``, ``step``, ``epoch``, ``metrics``, …; empty when none."""
        return self._state_list("checkpoints")

    @property
    def commands(self) -> list[dict[str, Any]]:
        """Dashboard commands sent to the run, oldest first, with their status and
        messages; empty when none."""
        return self._state_list("commands")

    @property
    def alerts(self) -> list[dict[str, Any]]:
        """The run's alert history, newest first, as ``GET /api/runs/{run}/alerts`` lists
        it: records with ``what`` (fired, resolved, delivery), ``rule``, ``level``,
        ``text`` (a firing's title), ``time``, …; empty when none."""
        alerts = self.state.get("alerts")
        recent = alerts.get("recent") if isinstance(alerts, dict) else None
        if not isinstance(recent, list):
            return []
        return [dict(r) for r in reversed(recent) if isinstance(r, dict)]

    # -- events ---------------------------------------------------------------------------
    def events(
        self,
        names: str | Iterable[str] | None = None,
        after: int = 0,
        page_size: int = EVENTS_PAGE,
    ) -> Iterator[dict[str, Any]]:
        """The run's stored events, oldest first, as dicts (the relay adds ``id`` and
        ``received``): those after event id ``after``, only those named ``names``
        (``"log"``, ``["batch_end", "epoch_end"]``) if given. A generator: it reads
        ``page_size`` events per request as you iterate, so a run of any length is
        streamed in bounded memory; errors (:class:`RunNotFound`…) are raised by the
        first ``next()``. Events stored while iterating come along until a page comes
        back short."""
        wanted = _names(names)
        if not 1 <= page_size <= 100_000:
            raise ValueError("page_size must be between 1 and 100000")
        cursor = int(after)
        while True:
            query: dict[str, Any] = {"after": cursor, "limit": page_size}
            if wanted:
                query["event"] = ",".join(wanted)
            page = self.api.get(f"{self._path}/events?{urllib.parse.urlencode(query)}", self.id)
            if not isinstance(page, list) or not page:
                return
            full, last = len(page) >= page_size, int(page[-1].get("id") or 0)
            if last <= cursor:  # ids only grow: a page that does not move on is the end
                return
            cursor = last
            page.reverse()  # pop from the end: each event is let go once handed out
            while page:
                yield page.pop()
            del page
            if not full:
                return

    # -- media ----------------------------------------------------------------------------
    def _media_events(self, event: str, name: str | None) -> Iterator[dict[str, Any]]:
        return (e for e in self.events(event) if name is None or e.get("name") == name)

    def images(self, name: str | None = None) -> Iterator[dict[str, Any]]:
        """The run's ``image`` events (only tag ``name`` if given), oldest first: ``name``,
        ``step``, ``caption``, ``index``, ``media`` (the bytes' SHA-256), ``mime``,
        ``width``, ``height``; the bytes with :meth:`image_bytes`. A generator."""
        return self._media_events("image", name)

    def image_bytes(self, image: Mapping[str, Any] | str) -> bytes:
        """An image's bytes (PNG, JPEG or WebP, as uploaded): from an event of
        :meth:`images` or its ``media`` hash."""
        sha = image if isinstance(image, str) else str(image.get("media") or "")
        # run=None: a 404 here is a missing image (ApiError), not a missing run.
        return self.api.get_bytes(f"{self._path}/media/{urllib.parse.quote(sha)}")

    def text_samples(self, name: str | None = None) -> Iterator[dict[str, Any]]:
        """The run's ``text_sample`` events (``text``; or ``prompt`` and ``completion``;
        or ``columns`` and ``rows``), oldest first, only tag ``name`` if given."""
        return self._media_events("text_sample", name)

    def histograms(self, name: str | None = None) -> Iterator[dict[str, Any]]:
        """The run's ``histogram`` events (``edges``, ``counts``, ``min``, ``max``…),
        oldest first, only tag ``name`` if given."""
        return self._media_events("histogram", name)

    def logs(self) -> Iterator[dict[str, Any]]:
        """The run's ``log`` events (captured logging records and printed lines), oldest
        first: ``message``, ``level``, ``logger``, ``time``…; a generator, as
        :meth:`events`."""
        return self.events("log")

    # -- history --------------------------------------------------------------------------
    def series_info(self) -> list[dict[str, Any]]:
        """The run's metric series as the relay indexes them: ``metric``, ``count``,
        ``first_step``, ``last_step``."""
        infos = self.api.get(f"{self._path}/series", self.id) or []
        return [dict(i) for i in infos if isinstance(i, dict) and isinstance(i.get("metric"), str)]

    def metric_names(self) -> list[str]:
        """The names of the run's metrics (every number its batch_end, epoch_end and
        metric_update events carried), sorted."""
        return [str(i["metric"]) for i in self.series_info()]

    def history(
        self,
        metrics: str | Iterable[str] | None = None,
        min_step: int | None = None,
        max_step: int | None = None,
        samples: int | None = None,
    ) -> Any:
        """The metrics' values by global step, one row per step (wide format): columns
        ``step``, ``time`` (the trainer's unix time of the point, else the relay's time of
        receipt), then one column per metric (one called ``step`` or ``time`` is in
        ``step_`` / ``time_``), NaN where that metric has no value at the row's step (a
        metric logged every 100 steps beside the loss, say).

        ``metrics``: names (a list, or one string, commas allowed); default every
        metric of the run; an unknown one raises ``ValueError`` listing the run's.
        ``min_step`` / ``max_step``: an inclusive range of steps. ``samples``: ask the
        relay for a reduction instead of every point: per metric at most about
        ``samples`` points (up to 80,000), the first, last, lowest and highest point of
        each of ``samples / 4`` equal step buckets (M4, the dashboard's charts), so
        spikes and ends survive; metrics reduced apart land on rows of their own.

        Without ``samples`` every point comes back, exact, read a window of steps at a
        time; only the result is held (8 bytes per value).

        Returns a ``pandas.DataFrame`` when pandas can be imported, else a dict from
        column name to an ``array.array`` (``"q"`` for ``step``, ``"d"`` for the rest;
        ``list(col)`` makes a list), both in that column order.
        """
        cols = _history.Columns(_history.selected_metrics(self, metrics))
        for chunk in _history.history_chunks(self, cols.metrics, min_step, max_step, samples):
            cols.add(chunk)
        return cols.result()
