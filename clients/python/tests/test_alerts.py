"""Alerts from the trainer: ``stepwatch.alert()`` and ``connect(alerts=[...])`` against a
real relay, and ``check_rule`` agreeing with the relay's own checker (rule.rs) on the
shared cases in ``crates/events/tests/alert_rules.json``."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.error
import warnings

import pytest
from conftest import REPO, Relay, trainer_env

import stepwatch
from stepwatch._alerts import RuleError, check_rules

CASES = json.loads((REPO / "crates" / "events" / "tests" / "alert_rules.json").read_text())
QUIET = {"STEPWATCH_SYSTEM_INTERVAL": "0", "STEPWATCH_HEARTBEAT_INTERVAL": "0"}
GOOD = {"name": "loss-high", "kind": "above", "threshold": 10, "for": 3, "action": "pause"}


RELAY_RECORDS = ("alert_fired", "alert_resolved", "alert_delivery")


def events(relay: Relay, run: str) -> list[dict]:
    """What the trainer sent (the relay's own alert records left out)."""
    got = relay.get(f"/api/runs/{run}/events?limit=1000")
    return [e for e in got if e["event"] not in RELAY_RECORDS]


def fired(relay: Relay, run: str, n: int) -> list[dict]:
    """The run's alert_fired records, once there are `n` (the engine runs on its own thread)."""
    deadline = time.monotonic() + 10
    while True:
        got = relay.get(f"/api/runs/{run}/events?event=alert_fired")
        if len(got) >= n or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


def test_check_rule_agrees_with_the_relay_on_every_shared_case():
    assert len(CASES) >= 20
    for case in CASES:
        if "field" not in case:
            assert case["ok"] is True
            assert stepwatch.check_rule(case["rule"]) == case["rule"]
            continue
        with pytest.raises(RuleError) as e:
            stepwatch.check_rule(case["rule"])
        assert e.value.field == case["field"], (case["rule"], str(e.value))
        with pytest.raises(ValueError, match=r"^alerts\[2\]"):
            check_rules([GOOD, {"name": "ok", "kind": "failed"}, case["rule"]])


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ({"name": "x", "kind": "nan"}, "kind"),
        ({"name": "x", "kind": "spike", "window": -5}, "window"),
        ({"name": "x", "kind": "stale", "colour": "red"}, "colour"),
        ({"name": "x", "kind": "above"}, "threshold"),
        ({"name": "x", "kind": "above", "threshold": 1, "metric": "*"}, "metric"),
        ({"name": "x", "kind": "stale", "notify": ["ops", "on call"]}, "notify[1]"),
        ({"name": "x", "kind": "below", "threshold": float("nan")}, "threshold"),
        ({"name": "x", "kind": "stale", "after_s": True}, "after_s"),
    ],
)
def test_connect_refuses_a_bad_rule_naming_its_field_and_connects_nothing(bad, field):
    with pytest.raises(ValueError, match="^" + re.escape(f"alerts[1].{field}: ")):
        stepwatch.connect("http://127.0.0.1:9", run="never", alerts=[GOOD, bad])
    assert stepwatch.current_run() is None


def test_the_message_says_what_is_allowed():
    spike = {"name": "s", "kind": "spike", "window": 1}
    with pytest.raises(ValueError) as e:
        stepwatch.connect("http://127.0.0.1:9", run="never", alerts=[GOOD, spike])
    assert str(e.value) == "alerts[1].window: must be between 2 and 10000"
    with pytest.raises(ValueError, match=r"^alerts: must be a list"):
        stepwatch.connect("http://127.0.0.1:9", run="never", alerts=GOOD)  # type: ignore[arg-type]
    many = [{"name": f"r{i}", "kind": "failed"} for i in range(65)]
    with pytest.raises(ValueError, match=r"^alerts: at most 64 rules"):
        stepwatch.connect("http://127.0.0.1:9", run="never", alerts=many)
    assert stepwatch.current_run() is None


def test_an_unknown_level_warns_and_is_sent_as_warning_with_no_relay():
    stepwatch.training_emitter.clear_history()
    with pytest.warns(UserWarning, match="unknown level 'loud'"):
        stepwatch.alert("disk almost full", level="loud")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the known spellings warn nothing
        stepwatch.alert("diverged", "loss 1e9", level="CRITICAL")
        stepwatch.alert("note", level="info")
        stepwatch.alert("t" * 250)
    got = [
        (e["title"], e["text"], e["level"]) for e in stepwatch.training_emitter.get_history("alert")
    ]
    assert got == [
        ("disk almost full", "", "warning"),
        ("diverged", "loss 1e9", "error"),
        ("note", "", "info"),
        ("t" * 200, "", "warning"),
    ]


def test_rules_then_alerts_arrive_in_order_and_the_run_state_holds_the_rules(relay, run_script):
    code = f"""
import stepwatch
rules = [{GOOD!r}, {{"name": "mine", "kind": "event", "level": "error"}}]
stepwatch.connect("{relay.url}", run="alerting", commands=False, alerts=rules)
stepwatch.emit_training_start(total_epochs=1)
stepwatch.alert("loss high", "loss 12 at step 3", level="warn")
stepwatch.emit_batch_end(batch_idx=0, loss=1.0)
stepwatch.alert("x" * 300, level="fatal")
assert stepwatch.flush(10)
"""
    proc = run_script(code, env=QUIET)
    assert proc.returncode == 0, proc.stderr
    got = events(relay, "alerting")
    names = [e["event"] for e in got]
    assert names == ["alert_rule", "alert_rule", "training_start", "alert", "batch_end", "alert"]
    assert got[0]["rule"] == GOOD
    # The first alert() fires the default `alert` rule and the run's own `mine`; the second
    # comes within both rules' cooldown and is held back.
    records = fired(relay, "alerting", 2)
    assert sorted(r["rule"] for r in records) == ["alert", "mine"]
    assert {r["title"] for r in records} == {"loss high"}
    assert {r["rule"]: r["level"] for r in records} == {"alert": "warning", "mine": "warning"}
    assert got[1]["rule"]["name"] == "mine"
    first, last = got[3], got[5]
    assert (first["title"], first["text"], first["level"]) == (
        "loss high",
        "loss 12 at step 3",
        "warning",
    )
    assert (last["title"], last["text"], last["level"]) == ("x" * 200, "", "error")
    state = relay.get("/api/runs/alerting")
    rules = [r["rule"] for r in state["alerts"]["rules"]]
    assert [r["name"] for r in rules] == ["loss-high", "mine"]
    assert (rules[0]["kind"], rules[0]["threshold"], rules[0]["for"]) == ("above", 10.0, 3)
    assert rules[0]["action"] == "pause"
    assert (rules[1]["event"], rules[1]["level"]) == ("alert", "error")


def test_a_bad_list_sends_nothing_and_keeps_the_connection(relay, run_script):
    code = f"""
import stepwatch
stepwatch.connect("{relay.url}", run="kept", commands=False)
stepwatch.emit_batch_end(batch_idx=0, loss=1.0)
bad = [{GOOD!r}, {{"name": "x", "kind": "spike", "window": -5}}]
for run in ("kept", "other"):
    try:
        stepwatch.connect("{relay.url}", run=run, commands=False, alerts=bad)
    except ValueError as e:
        print("REFUSED", e)
stepwatch.emit_batch_end(batch_idx=1, loss=1.0)
assert stepwatch.current_run() == "kept"
assert stepwatch.flush(10)
"""
    proc = run_script(code, env=QUIET)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("REFUSED alerts[1].window: must not be negative") == 2, proc.stdout
    got = events(relay, "kept")
    assert [(e["event"], e.get("batch_idx")) for e in got] == [("batch_end", 0), ("batch_end", 1)]
    with pytest.raises(urllib.error.HTTPError) as e:
        relay.get("/api/runs/other")
    assert e.value.code == 404


def test_alert_with_the_relay_down_returns_and_arrives_once_it_is_up(tmp_path):
    relay = Relay(tmp_path / "data")  # not started
    marker = tmp_path / "returned"
    code = f"""
import stepwatch
stepwatch.connect("{relay.url}", run="later", commands=False, alerts=[{GOOD!r}])
stepwatch.alert("relay is down", "but training goes on", level="error")
open("{marker}", "w").close()
assert stepwatch.flush(30), "not delivered after the relay came up"
"""
    script = tmp_path / "t.py"
    script.write_text(code)
    env = trainer_env(tmp_path, **QUIET)
    proc = subprocess.Popen([sys.executable, str(script)], env=env, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marker.exists(), "alert() did not return with the relay down"
        relay.start()  # the relay comes up only after alert() returned
        assert proc.wait(60) == 0, proc.stderr.read().decode() if proc.stderr else ""
        got = events(relay, "later")
        assert [e["event"] for e in got] == ["alert_rule", "alert"]
        assert (got[1]["title"], got[1]["level"]) == ("relay is down", "error")
    finally:
        if proc.poll() is None:
            proc.kill()
        relay.stop()
