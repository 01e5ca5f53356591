"""System metrics and logs recorded without extra code."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from stepwatch import parse_nvidia_smi_csv
from stepwatch._system import gpus_nvidia_smi

NVSMI = Path(__file__).parent / "fixtures" / "nvidia-smi"
MIB = 1024 * 1024


def test_parses_real_nvidia_smi_output_with_and_without_header_and_units():
    for name in ("nvidia-smi-query.csv", "nvidia-smi-query-noheader-nounits.csv"):
        gpus = parse_nvidia_smi_csv((NVSMI / name).read_text())
        assert len(gpus) == 1, name
        g = gpus[0]
        assert g["index"] == 0 and g["name"] == "NVIDIA H200", (name, g)
        assert g["util_percent"] == 0.0
        assert g["mem_used_bytes"] == 0
        assert g["mem_total_bytes"] == 143771 * MIB
        assert g["temperature_c"] == 38.0
        assert 123.0 < g["power_w"] < 124.0  # the two captures differ by 0.01 W


def test_missing_values_and_garbage_are_skipped_not_fatal():
    text = "0, NVIDIA A100, [N/A], 100, 40960, 50, [N/A]\n1, short\n\n"
    gpus = parse_nvidia_smi_csv(text)
    assert len(gpus) == 1
    assert "util_percent" not in gpus[0] and "power_w" not in gpus[0]
    assert gpus[0]["mem_used_bytes"] == 100 * MIB
    assert parse_nvidia_smi_csv("") == []


def test_nvidia_smi_on_path_is_run_and_parsed_and_its_absence_is_no_error(tmp_path, monkeypatch):
    # nvidia-smi cannot run on this machine: a script that prints the real H200 output
    # stands in for the binary, so the subprocess path itself is exercised.
    tool = tmp_path / "nvidia-smi"
    tool.write_text(f"#!/bin/sh\ncat {NVSMI / 'nvidia-smi-query-noheader-nounits.csv'}\n")
    tool.chmod(tool.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    assert gpus_nvidia_smi()[0]["name"] == "NVIDIA H200"
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert gpus_nvidia_smi() == []


def test_system_samples_and_log_records_reach_the_relay(relay, run_script):
    code = """
import logging, time, stepwatch
stepwatch.connect(run="sys", system_interval=0.1, capture_stdout=True)
logging.getLogger("trainer").warning("learning rate warm-up done")
print("epoch 1 finished")
time.sleep(0.5)
assert stepwatch.flush(10)
"""
    proc = run_script(code, env={"STEPWATCH_URL": relay.url})
    assert proc.returncode == 0, proc.stderr
    assert "epoch 1 finished" in proc.stdout  # the terminal still gets its output
    state = relay.get("/api/runs/sys")
    sys_sample = state["system"]
    assert 0.0 <= sys_sample["cpu_percent"] <= 100.0
    assert sys_sample["mem_total_bytes"] > sys_sample["mem_used_bytes"] > 0
    assert sys_sample["process_rss_bytes"] > 0
    assert "gpus" not in sys_sample  # no GPU here: no GPU fields, no error
    logs = relay.get("/api/runs/sys/events?event=log")
    got = {(e["logger"], e["level"], e["message"]) for e in logs}
    assert ("trainer", "warning", "learning rate warm-up done") in got
    assert ("stdout", "info", "epoch 1 finished") in got
    assert len(relay.get("/api/runs/sys/events?event=system")) >= 2


def test_training_start_records_where_and_how_the_run_started(relay, run_script, tmp_path):
    code = """
import stepwatch
stepwatch.connect(run="meta", system_interval=0)
stepwatch.emit_training_start(total_epochs=1, config={"lr": 0.1})
assert stepwatch.flush(10)
"""
    proc = run_script(code, env={"STEPWATCH_URL": relay.url})
    assert proc.returncode == 0, proc.stderr
    meta = relay.get("/api/runs/meta")["meta"]
    assert meta["python"].count(".") == 2
    assert meta["host"] and meta["pid"] > 0
    assert meta["argv"][0].endswith("trainer.py")
    assert relay.get("/api/runs/meta")["config"] == {"lr": 0.1}


def test_a_quiet_trainer_keeps_beating_and_the_beat_can_be_switched_off(relay, run_script):
    code = """
import time, stepwatch
stepwatch.connect(run="{run}", system_interval=0, heartbeat_interval={beat})
stepwatch.emit_training_start(total_epochs=1)
time.sleep(0.6)  # a long validation: no training events at all
assert stepwatch.flush(10)
"""
    for run, beat in (("beating", 0.1), ("silent", 0)):
        proc = run_script(code.format(run=run, beat=beat), env={"STEPWATCH_URL": relay.url})
        assert proc.returncode == 0, proc.stderr
    beats = relay.get("/api/runs/beating/events?event=heartbeat")
    assert len(beats) >= 3, beats
    state = relay.get("/api/runs/beating")
    assert state["last_event_at"] >= beats[-1]["time"] > state["started_at"]
    assert relay.get("/api/runs/silent/events?event=heartbeat") == []
