"""Reading runs back (``stepwatch.Api``, ``python -m stepwatch export``) against a real
relay: the filters, paging across page and window boundaries, the M4 reduction, the
error classes, the CLI's output and exit codes, and a million-step run read back in
bounded memory."""

from __future__ import annotations

import csv
import inspect
import io
import json
import math
import subprocess
import sys
import time
import tracemalloc
import urllib.request
import warnings
from array import array

import pytest
from conftest import Relay, trainer_env

import stepwatch
from stepwatch import _history
from stepwatch.__main__ import main

T0 = 1_764_000_000.0


def post(relay: Relay, run: str, events: list[dict]) -> dict:
    """Stores ``events`` in ``run`` (NDJSON, one request)."""
    return post_lines(relay, run, [json.dumps(e) for e in events])


def post_lines(relay: Relay, run: str, lines: list[str]) -> dict:
    req = urllib.request.Request(
        f"{relay.url}/api/runs/{run}/events",
        data="\n".join(lines).encode(),
        method="POST",
        headers={"Content-Type": "application/x-ndjson"},
    )
    if relay.token:
        req.add_header("Authorization", f"Bearer {relay.token}")
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())


def batches(steps, **extra) -> list[dict]:
    return [
        {"event": "batch_end", "time": T0 + s, "step": s, "loss": 1.0 / (1 + s), **extra}
        for s in steps
    ]


@pytest.fixture
def no_pandas(monkeypatch):
    """history() as on a machine without pandas."""
    monkeypatch.setitem(sys.modules, "pandas", None)


# -- finding runs -----------------------------------------------------------------------------
def start(name: str, config: dict) -> dict:
    return {"event": "training_start", "time": T0, "name": name, "config": config}


def test_runs_filter_by_name_status_tag_and_config(relay):
    cfg = {"lr": 0.001, "optimizer": {"name": "adam"}, "layers": [2, 2]}
    post(relay, "sweep-a", [start("lr-sweep a", cfg)])
    post(relay, "sweep-b", [start("lr-sweep b", {"lr": 1e-2, "optimizer": {"name": "sgd"}})])
    post(relay, "sweep-b", [{"event": "training_end", "time": T0 + 1, "status": "completed"}])
    post(relay, "other", [start("baseline", {"lr": 1, "epochs": 3, "amp": True})])
    post(relay, "other", [{"event": "training_end", "time": T0 + 1, "status": "failed"}])
    post(relay, "bare", [{"event": "log", "message": "hi"}])  # pending, no config
    api = stepwatch.Api(relay.url)

    def ids(**filters) -> list[str]:
        return sorted(r.id for r in api.runs(**filters))

    assert ids() == ["bare", "other", "sweep-a", "sweep-b"]
    # name: a part of the name or id, or a glob over the whole of either
    assert ids(name="lr-sweep") == ["sweep-a", "sweep-b"]
    assert ids(name="sweep-?") == ["sweep-a", "sweep-b"]
    assert ids(name="*line") == ["other"]
    assert ids(name="line") == ["other"]
    assert ids(name="Sweep") == []
    # status: one or several
    assert ids(status="completed") == ["sweep-b"]
    assert ids(status=["failed", "pending"]) == ["bare", "other"]
    assert ids(status="running") == ["sweep-a"]
    with pytest.raises(ValueError, match="unknown status 'complete': runs are pending"):
        api.runs(status="complete")
    # config: dotted keys, numbers by value, a bool is not a number
    assert ids(config={"lr": 1e-3}) == ["sweep-a"]
    assert ids(config={"optimizer.name": "sgd"}) == ["sweep-b"]
    assert ids(config={"lr": 1.0}) == ["other"]
    assert ids(config={"lr": 0.01, "optimizer.name": "adam"}) == []
    assert ids(config={"amp": 1}) == []
    assert ids(config={"amp": True, "epochs": 3.0}) == ["other"]
    assert ids(config={"optimizer": {"name": "adam"}}) == ["sweep-a"]
    assert ids(config={"layers": (2, 2.0)}) == ["sweep-a"]
    assert ids(config={"layers": [2]}) == []
    assert ids(config={"missing.key": None}) == []
    # all filters together
    assert ids(name="sweep", status="running", config={"lr": 0.001}) == ["sweep-a"]
    # tags and groups: from the trainer's run_meta, or set through the API
    assert ids(tag="baseline") == []
    assert api.runs(name="other")[0].tags == []
    post(relay, "sweep-a", [{"event": "run_meta", "tags": ["lr sweep"], "group": "s1"}])
    api.run("other").set_meta(tags="baseline, reference", notes="the **old** recipe")
    api.run("sweep-b").set_meta(tags=["lr sweep"], group="s1")
    assert ids(tag="baseline") == ["other"]
    assert ids(tag="lr sweep") == ["sweep-a", "sweep-b"]
    assert ids(group="s1") == ["sweep-a", "sweep-b"]
    assert ids(tag="lr sweep", status="completed") == ["sweep-b"]
    other = api.run("other")
    assert (other.tags, other.group, other.notes) == (
        ["baseline", "reference"],
        None,
        "the **old** recipe",
    )
    # a change keeps what it does not name; "" clears
    other.set_meta(group="refs")
    assert (other.tags, other.group) == (["baseline", "reference"], "refs")
    assert other.set_meta(notes="").notes == ""
    # checked before anything is sent, and the relay's refusal names the field
    with pytest.raises(ValueError, match=r"tags\[0\]: a tag is at most 64"):
        other.set_meta(tags=["x" * 65])
    with pytest.raises(ValueError, match="give tags, group or notes"):
        other.set_meta()
    changes = [e for e in other.events(["run_meta"])]
    assert len(changes) == 3
    assert all(e.get("sender") == "anonymous" for e in changes)


def test_a_run_reads_its_state_summary_and_records(relay):
    post(
        relay,
        "r1",
        [
            start("gpt", {"lr": 3e-4, "layers": [12, 12]}),
            *batches(range(5), lr=0.1, metrics={"acc": 0.5}),
            {"event": "epoch_end", "time": T0 + 6, "epoch": 0, "metrics": {"val_loss": 0.7}},
            {"event": "batch_end", "time": T0 + 7, "step": 5, "loss": "NaN", "lr": 0.05},
            {
                "event": "checkpoint_saved",
                "time": T0 + 8,
                "checkpoint_path": "ckpt/5.pt",
                "step": 5,
            },
            {"event": "epoch_end", "time": T0 + 9, "epoch": 1, "metrics": {"val_loss": 0.9}},
        ],
    )
    api = stepwatch.Api(relay.url)
    run = api.run("r1")
    assert (run.id, run.name, run.status) == ("r1", "gpt", "running")
    assert run.config == {"lr": 3e-4, "layers": [12, 12]}
    summary = run.summary
    assert math.isnan(summary["loss"]) and summary["lr"] == 0.05
    assert (summary["acc"], summary["val_loss"]) == (0.5, 0.9)
    assert summary["best"] == {
        "loss": {"value": 1.0 / 5, "step": 4},
        "val_loss": {"value": 0.7, "step": 4},
    }
    assert [c["path"] for c in run.checkpoints] == ["ckpt/5.pt"]
    assert run.commands == [] and run.tags == []
    assert run.metric_names() == ["acc", "loss", "lr", "val_loss"]

    # A command and an alert land in the state; refresh() reads it again.
    req = urllib.request.Request(
        f"{relay.url}/api/runs/r1/commands",
        data=json.dumps({"command": "pause"}).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    urllib.request.urlopen(req, timeout=5).close()
    post(relay, "r1", [{"event": "alert", "time": T0 + 10, "title": "loss is NaN"}])
    assert run.commands == []  # the state read before
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        fired = [a for a in run.refresh().alerts if a["what"] == "fired"]
        if len(fired) == 2:
            break
        time.sleep(0.05)
    assert [c["command"] for c in run.commands] == ["pause"]
    # the relay's default nan-loss rule fired on the NaN, then the alert() one: newest first
    assert [a["rule"] for a in fired] == ["alert", "nan-loss"], run.alerts
    assert fired[0]["text"] == "loss is NaN"
    # The runs list's runs read their state on first use.
    listed = api.runs(name="r1")[0]
    assert listed._state is None and listed.config["layers"] == [12, 12]


# -- errors -----------------------------------------------------------------------------------
def test_an_unknown_run_a_bad_id_and_a_relay_that_is_down_say_so(relay, tmp_path):
    post(relay, "there", batches(range(3)))
    api = stepwatch.Api(relay.url)
    with pytest.raises(stepwatch.RunNotFound) as e:
        api.run("nope")
    assert isinstance(e.value, stepwatch.ApiError)
    assert (e.value.status, e.value.run) == (404, "nope")
    assert str(e.value) == f"no run 'nope' on the relay at {relay.url}"
    # A generator: the error comes with the first event asked for.
    events = stepwatch.Run(api, "nope").events()
    assert inspect.isgenerator(events)
    with pytest.raises(stepwatch.RunNotFound):
        next(events)
    with pytest.raises(stepwatch.RunNotFound):
        stepwatch.Run(api, "nope").history()
    with pytest.raises(ValueError, match=r"run 'there' has no metric 'acc' \(it has: loss\)"):
        api.run("there").history("loss,acc")
    with pytest.raises(stepwatch.ApiError) as bad:
        api.run("no spaces")
    assert bad.value.status == 400 and not isinstance(bad.value, stepwatch.RunNotFound)
    assert "invalid run id" in bad.value.message and "[A-Za-z0-9._-]" in str(bad.value)

    relay.stop()
    with pytest.raises(stepwatch.RelayUnreachable) as down:
        api.runs()
    assert isinstance(down.value, stepwatch.ApiError) and down.value.status is None
    assert str(down.value).startswith(f"could not reach the Stepwatch relay at {relay.url}")
    assert "connection refused" in str(down.value)


def test_a_missing_wrong_or_write_only_token_is_an_auth_error(tmp_path):
    config = tmp_path / "stepwatch.toml"
    config.write_text(
        '[[users]]\nname = "ci"\nrole = "trainer"\ntokens = ["trainer-token-0123456789"]\n'
        '[[users]]\nname = "me"\nrole = "viewer"\ntokens = ["viewer-token-0123456789"]\n'
    )
    relay = Relay(tmp_path / "data")
    relay.extra = ["--config", str(config)]
    relay.start()
    try:
        relay.token = "trainer-token-0123456789"
        post(relay, "authed", batches(range(10)))
        ok = stepwatch.Api(relay.url, token="viewer-token-0123456789")
        assert [r.id for r in ok.runs()] == ["authed"]
        assert list(ok.run("authed").history(samples=100)["step"]) == list(range(10))
        for token, status, words in [
            (None, 401, "needs a token"),
            ("wrong-token-000000000", 401, "refused the token"),
            ("trainer-token-0123456789", 403, "does not let this token read /api/runs"),
        ]:
            with pytest.raises(stepwatch.AuthError) as e:
                stepwatch.Api(relay.url, token=token).runs()
            assert isinstance(e.value, stepwatch.ApiError)
            assert e.value.status == status and words in str(e.value), str(e.value)
        # The token comes from STEPWATCH_TOKEN too, as for connect().
        env = {"STEPWATCH_TOKEN": "viewer-token-0123456789"}
        code = f"import stepwatch; print(stepwatch.Api({relay.url!r}).run('authed').status)"
        proc = subprocess.run(
            [sys.executable, "-c", code],
            env=trainer_env(tmp_path, **env),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.stdout.strip() == "running", proc.stderr
    finally:
        relay.stop()


# -- events -----------------------------------------------------------------------------------
def test_events_page_through_the_whole_run_in_order(relay):
    mixed = []
    for s in range(2500):
        mixed.append(batches([s])[0])
        if s % 100 == 0:
            mixed.append({"event": "log", "time": T0 + s, "message": f"at {s}", "level": "info"})
    post(relay, "ev", mixed)
    run = stepwatch.Api(relay.url).run("ev")
    got = list(run.events(page_size=1000))
    assert [e["id"] for e in got] == list(range(1, len(mixed) + 1))
    assert run.alerts == [] and run.checkpoints == []
    assert [e["event"] for e in got] == [e["event"] for e in mixed]
    # page boundaries: exactly one page, one page and one event, and a filter over pages
    assert len(list(run.events(page_size=len(mixed)))) == len(mixed)
    assert len(list(run.events(page_size=len(mixed) - 1))) == len(mixed)
    logs = list(run.events("log", page_size=7))
    assert [e["message"] for e in logs] == [f"at {s}" for s in range(0, 2500, 100)]
    assert [e["message"] for e in run.logs()] == [e["message"] for e in logs]
    assert [e["id"] for e in run.events(after=2520, page_size=3)] == list(range(2521, 2526))
    both = list(run.events(["log", "batch_end"], after=100, page_size=50))
    assert len(both) == len(mixed) - 100
    with pytest.raises(stepwatch.ApiError, match="invalid event name"):
        next(run.events("Bad Name"))


# -- history ----------------------------------------------------------------------------------
def test_history_is_exact_across_windows_and_narrows_where_points_crowd(
    relay, monkeypatch, no_pandas
):
    # The relay answers exactly up to 4 points a bucket: 25 buckets, 100 points an answer.
    monkeypatch.setattr(_history, "MAX_BUCKETS", 25)
    monkeypatch.setattr(_history, "HISTORY_PAGE", 100)
    events = batches(range(1000))
    for s in range(0, 1000, 7):
        events.append(
            {"event": "metric_update", "time": T0 + s, "name": "val", "value": s, "step": s}
        )
    # 40 points a step at steps 990..999: the windows there must narrow to stay exact.
    for s in range(990, 1000):
        for k in range(40):
            events.append({"event": "metric_update", "name": "crowd", "value": k, "step": s})
    post(relay, "h", events)
    run = stepwatch.Api(relay.url).run("h")
    h = run.history(["loss", "val"])
    assert list(h) == ["step", "time", "loss", "val"]
    assert isinstance(h["step"], array) and h["step"].typecode == "q"
    assert list(h["step"]) == list(range(1000))
    assert list(h["loss"]) == [1.0 / (1 + s) for s in range(1000)]
    assert list(h["time"]) == [T0 + s for s in range(1000)]
    vals = list(h["val"])
    assert [v for v in vals if not math.isnan(v)] == [float(s) for s in range(0, 1000, 7)]
    assert math.isnan(vals[1]) and vals[7] == 7.0

    crowd = run.history("crowd", min_step=985)
    assert list(crowd) == ["step", "time", "crowd"]  # no time sent: the relay's receipt
    assert len(crowd["step"]) == 400
    assert list(crowd["step"]) == [s for s in range(990, 1000) for _ in range(40)]
    assert list(crowd["crowd"]) == [float(k) for _ in range(10) for k in range(40)]

    part = run.history(min_step=100, max_step=199)
    assert list(part["step"]) == list(range(100, 200))
    assert list(part) == ["step", "time", "crowd", "loss", "val"]
    assert all(math.isnan(v) for v in part["crowd"])
    assert len(run.history(min_step=5000)["step"]) == 0


def test_a_step_holding_more_than_an_answer_comes_back_whole(relay, monkeypatch, no_pandas):
    monkeypatch.setattr(_history, "MAX_BUCKETS", 25)  # 100 points an answer
    post(
        relay,
        "one",
        [{"event": "metric_update", "name": "x", "value": k, "step": 3} for k in range(150)],
    )
    post(relay, "one", batches([2, 4]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        h = stepwatch.Api(relay.url).run("one").history("x")
    assert list(h["step"]) == [3] * 150 and list(h["x"]) == [float(k) for k in range(150)]


def test_a_metric_called_time_or_step_keeps_its_values_beside_the_columns(relay, no_pandas):
    post(relay, "t", batches(range(3), metrics={"time": 0.25, "step": 7.0}))
    h = stepwatch.Api(relay.url).run("t").history()
    assert list(h) == ["step", "time", "loss", "step_", "time_"]
    assert list(h["step"]) == [0, 1, 2] and list(h["time_"]) == [0.25] * 3
    assert list(h["time"]) == [T0, T0 + 1, T0 + 2] and list(h["step_"]) == [7.0] * 3


def test_samples_ask_the_relay_for_m4_keeping_the_ends_and_the_spikes(relay, no_pandas):
    events = batches(range(10_000))
    events[5123]["loss"] = 99.0
    events[7000]["loss"] = -5.0
    events[8000]["loss"] = "NaN"
    post(relay, "m4", events)
    run = stepwatch.Api(relay.url).run("m4")
    h = run.history("loss", samples=400)
    steps, loss = list(h["step"]), list(h["loss"])
    assert 100 <= len(steps) <= 404 and steps == sorted(steps)
    assert (steps[0], steps[-1]) == (0, 9999)
    assert max(v for v in loss if not math.isnan(v)) == 99.0
    assert min(v for v in loss if not math.isnan(v)) == -5.0
    assert any(math.isnan(v) for v in loss)
    windowed = run.history("loss", min_step=2000, max_step=2999, samples=40)
    assert windowed["step"][0] == 2000 and windowed["step"][-1] == 2999
    assert len(windowed["step"]) <= 40
    # asking for more than there are gives every point
    assert len(run.history(samples=80_000)["step"]) == 10_000


def test_history_is_a_dataframe_when_pandas_is_installed(relay):
    pd = pytest.importorskip("pandas")
    post(relay, "df", batches(range(50), lr=0.1))
    post(relay, "df", [{"event": "metric_update", "name": "val", "value": 0.5, "step": 60}])
    df = stepwatch.Api(relay.url).run("df").history()
    assert isinstance(df, pd.DataFrame)
    assert list(df.columns) == ["step", "time", "loss", "lr", "val"]
    assert str(df["step"].dtype) == "int64" and len(df) == 51
    assert df["loss"].iloc[0] == 1.0 and math.isnan(df["loss"].iloc[-1])
    assert df["val"].iloc[-1] == 0.5


def test_pandas_is_not_imported_until_history_is_read(tmp_path):
    code = (
        "import sys, stepwatch\n"
        "stepwatch.Api('http://127.0.0.1:1').runs\n"
        "print('pandas' in sys.modules, 'numpy' in sys.modules)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env=trainer_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.stdout.strip() == "False False", proc.stderr


# -- the export command ----------------------------------------------------------------------
def export(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["export", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_export_writes_csv_and_json_lines(relay, capsys, tmp_path):
    post(relay, "ex", batches(range(3)))
    post(relay, "ex", [{"event": "epoch_end", "time": T0 + 3, "epoch": 0, "metrics": {"v": 2}}])
    post(relay, "ex", [{"event": "log", "time": T0 + 4, "message": "done"}])
    code, out, err = export(capsys, "ex", "--csv", "--url", relay.url)
    assert (code, err) == (0, "")
    rows = list(csv.reader(io.StringIO(out)))
    assert rows == [
        ["step", "time", "loss", "v"],
        ["0", repr(T0), "1.0", ""],
        ["1", repr(T0 + 1), "0.5", ""],
        ["2", repr(T0 + 2), repr(1 / 3), "2.0"],
    ]
    code, out, _ = export(capsys, "ex", "--csv", "--metrics", "v", "--url", relay.url)
    assert out.splitlines() == ["step,time,v", f"2,{T0 + 3!r},2.0"]
    code, out, _ = export(capsys, "ex", "--csv", "--min-step", "1", "--url", relay.url)
    assert [r[0] for r in csv.reader(io.StringIO(out))] == ["step", "1", "2"]

    code, out, err = export(capsys, "ex", "--json", "--url", relay.url)
    assert (code, err) == (0, "")
    lines = [json.loads(line) for line in out.splitlines()]
    assert [e["event"] for e in lines] == ["batch_end"] * 3 + ["epoch_end", "log"]
    assert [e["id"] for e in lines] == [1, 2, 3, 4, 5]
    code, out, _ = export(capsys, "ex", "--json", "--events", "log", "--url", relay.url)
    assert [json.loads(line)["message"] for line in out.splitlines()] == ["done"]

    target = tmp_path / "ex.csv"
    code, out, _ = export(capsys, "ex", "--csv", "--out", str(target), "--url", relay.url)
    assert (code, out) == (0, "")
    assert target.read_text().splitlines()[0] == "step,time,loss,v"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".stepwatch")] == []


def test_export_exit_codes_say_what_went_wrong(relay, capsys, tmp_path):
    post(relay, "ex", batches(range(3)))
    code, out, err = export(capsys, "nope", "--csv", "--url", relay.url)
    assert (code, out) == (2, "")
    assert err == f"stepwatch export: error: no run 'nope' on the relay at {relay.url}\n"
    code, _, err = export(capsys, "ex", "--csv", "--metrics", "acc", "--url", relay.url)
    assert code == 2 and "has no metric 'acc' (it has: loss)" in err
    target = tmp_path / "kept.csv"
    target.write_text("old")
    code, _, _ = export(capsys, "nope", "--json", "--out", str(target), "--url", relay.url)
    assert code == 2 and target.read_text() == "old"
    relay.stop()
    code, out, err = export(capsys, "ex", "--json", "--url", relay.url)
    assert (code, out) == (1, "")
    assert err.startswith(
        f"stepwatch export: error: could not reach the Stepwatch relay at {relay.url}"
    )
    # The command itself, as a user runs it.
    proc = subprocess.run(
        [sys.executable, "-m", "stepwatch", "export", "ex", "--csv"],
        env=trainer_env(tmp_path, STEPWATCH_URL=relay.url),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1 and "could not reach" in proc.stderr, proc.stderr


# -- a million steps --------------------------------------------------------------------------
N = 1_000_000
#: history()'s result for one metric: step, time and value, 8 bytes each a step.
RESULT_BYTES = 3 * 8 * N
#: The bound on history()'s peak: the result, one window's answer (40,000 points parsed,
#: about 6 MB) and the arrays' growth. A million dicts of three floats would be ~250 MB.
HISTORY_PEAK = RESULT_BYTES + 24_000_000
#: The bound while streaming events: one page of 10,000 parsed events is about 7 MB.
EVENTS_PEAK = 16_000_000


@pytest.fixture(scope="module")
def million(tmp_path_factory):
    relay = Relay(tmp_path_factory.mktemp("million") / "data").start()
    try:
        for first in range(0, N, 10_000):  # what batches() writes, written faster
            lines = [
                f'{{"event":"batch_end","time":{T0 + s!r},"step":{s},"loss":{1.0 / (1 + s)!r}}}'
                for s in range(first, first + 10_000)
            ]
            assert post_lines(relay, "big", lines)["accepted"] == 10_000
        yield relay
    finally:
        relay.stop()


def test_a_million_step_history_holds_the_result_and_one_window(million, no_pandas):
    run = stepwatch.Api(million.url).run("big")
    assert run.state["event_count"] == N
    tracemalloc.start()
    try:
        began = time.perf_counter()
        h = run.history()
        took = time.perf_counter() - began
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    print(f"history of {N} steps: {took:.1f} s (traced), peak {peak / 1e6:.1f} MB")
    assert list(h) == ["step", "time", "loss"]
    assert len(h["step"]) == len(h["loss"]) == N
    assert (h["step"][0], h["step"][-1]) == (0, N - 1)
    assert (h["loss"][0], h["loss"][-1]) == (1.0, 1.0 / N)
    assert (h["time"][0], h["time"][-1]) == (T0, T0 + N - 1)
    assert peak < HISTORY_PEAK, f"peak {peak / 1e6:.1f} MB"


def test_a_million_events_stream_in_bounded_memory(million):
    run = stepwatch.Api(million.url).run("big")
    events = run.events()
    count, last = 0, None
    tracemalloc.start()
    try:
        # 300,000 events (30 pages) traced: held events would show long before that.
        for _ in events:
            count += 1
            if count == 300_000:
                break
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    for event in events:
        count += 1
        last = event
    print(f"events: peak {peak / 1e6:.1f} MB over the first 300,000")
    assert count == N and last is not None
    assert (last["id"], last["step"]) == (N, N - 1)
    assert peak < EVENTS_PEAK, f"peak {peak / 1e6:.1f} MB"


def test_connect_labels_the_run_with_tags_group_and_notes(relay, run_script):
    code = f"""
import stepwatch
from stepwatch import emit_training_start, emit_training_end
try:
    stepwatch.connect({relay.url!r}, run="labelled", tags=["ok", "a,b"])
except ValueError as e:
    print("refused:", e)
stepwatch.connect({relay.url!r}, run="labelled", notes="seed **42**")
emit_training_start(total_epochs=1)
stepwatch.set_meta(tags=["late"])
emit_training_end()
"""
    done = run_script(code, env={"STEPWATCH_TAGS": " baseline ,lr sweep", "STEPWATCH_GROUP": "g1"})
    assert done.returncode == 0, done.stderr
    assert "refused: tags[1]: a tag holds no commas" in done.stdout
    state = relay.wait_for("labelled", lambda s: s.get("tags") == ["late"])
    assert (state["group"], state["notes"]) == ("g1", "seed **42**")
    changes = list(stepwatch.Api(relay.url).run("labelled").events("run_meta"))
    assert [c["tags"] for c in changes] == [["baseline", "lr sweep"], ["late"]]
    assert all("sender" not in c for c in changes)
