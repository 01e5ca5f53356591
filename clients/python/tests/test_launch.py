"""Launching from Python: ``stepwatch.launch`` / ``Job`` and ``python -m stepwatch launch``.

The pure parts (the JobSpec sent, parameters typed by a template) are checked here
directly; the rest against a real relay with a launch config and a real agent."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import Relay, relay_binary, trainer_env

import stepwatch
from stepwatch import LaunchError, LaunchWarning
from stepwatch._launch import build_spec, convert_param, find_template, is_final, typed_params

DEMO = {
    "name": "demo",
    "queue": "local",
    "argv": ["python", "train.py", "--epochs={epochs}"],
    "params": [
        {"name": "epochs", "kind": {"type": "int", "min": 1, "max": 100}, "default": 3},
        {"name": "lr", "kind": {"type": "float", "min": 0.0, "max": 1.0}, "default": 0.01},
        {"name": "amp", "kind": {"type": "bool"}, "default": False},
        {"name": "opt", "kind": {"type": "choice", "values": ["sgd", "adam"]}},
        {"name": "note", "kind": {"type": "string", "max_len": 5}},
        {"name": "tag", "kind": {"type": "string", "choices": ["a", "b"]}},
        {"name": "data", "kind": {"type": "path"}},
    ],
}


# -- the JobSpec --------------------------------------------------------------------------
def test_a_template_job_spec_has_the_wire_shape():
    spec = build_spec(
        "local",
        template="demo",
        params={"epochs": 2},
        resources={"gpus": 1, "time_limit_s": 60},
        priority=5,
        max_retries=2,
        clone_of="run-1",
        extras={"slurm": {"partition": "debug"}},
    )
    assert spec == {
        "name": "demo",
        "queue": "local",
        "entry": {"template": "demo", "params": {"epochs": 2}},
        "resources": {"gpus": 1, "time_limit_s": 60},
        "priority": 5,
        "max_retries": 2,
        "clone_of": "run-1",
        "extras": {"slurm": {"partition": "debug"}},
    }


def test_an_argv_job_spec_keeps_the_arguments_as_a_list():
    spec = build_spec(
        "gpu", argv=["/usr/bin/python3", "-c", "print('a; b')"], cwd="/w", env={"A": 1}
    )
    assert spec["name"] == "python3"
    assert spec["entry"] == {
        "argv": ["/usr/bin/python3", "-c", "print('a; b')"],
        "cwd": "/w",
        "env": {"A": "1"},
    }
    assert spec["resources"] == {} and "extras" not in spec and "clone_of" not in spec


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({}, "entry"),
        ({"template": "demo", "argv": ["x"]}, "entry"),
        ({"argv": "python train.py"}, "entry.argv"),
        ({"argv": []}, "entry.argv"),
        ({"argv": ["x"], "params": {"a": 1}}, "entry.params"),
        ({"template": "demo", "cwd": "/tmp"}, "entry"),
        ({"template": "demo", "resources": {"tpus": 1}}, "tpus"),
    ],
)
def test_a_plainly_wrong_spec_is_refused_before_sending(kwargs, field):
    with pytest.raises(LaunchError) as e:
        build_spec("local", **kwargs)
    assert e.value.field == field and e.value.status is None


# -- parameters typed by the template -----------------------------------------------------
def test_parameters_are_typed_by_the_template():
    got = typed_params(
        DEMO,
        [
            "epochs=7",
            "lr=1e-3",
            "amp=yes",
            "opt=adam",
            "note=hi=x",
            "tag=b",
            "data=sets/a.csv",
        ],
    )
    assert got == {
        "epochs": 7,
        "lr": 0.001,
        "amp": True,
        "opt": "adam",
        "note": "hi=x",  # only the first '=' splits
        "tag": "b",
        "data": "sets/a.csv",
    }
    assert isinstance(got["epochs"], int) and isinstance(got["lr"], float)
    assert typed_params(DEMO, ["amp=False", "epochs= 1 "]) == {"amp": False, "epochs": 1}


@pytest.mark.parametrize(
    ("pair", "field", "says"),
    [
        ("epochs=3.5", "entry.params.epochs", "not an integer"),
        ("epochs=0", "entry.params.epochs", "between 1 and 100"),
        ("lr=fast", "entry.params.lr", "not a number"),
        ("lr=nan", "entry.params.lr", "finite"),
        ("lr=2", "entry.params.lr", "between 0.0 and 1.0"),
        ("amp=maybe", "entry.params.amp", "true or false"),
        ("opt=rmsprop", "entry.params.opt", "sgd, adam"),
        ("note=toolong", "entry.params.note", "at most 5"),
        ("note=a\nb", "entry.params.note", "control"),
        ("tag=c", "entry.params.tag", "a, b"),
        ("data=/etc/passwd", "entry.params.data", "relative path"),
        ("data=../up", "entry.params.data", "relative path"),
        ("data=-rf", "entry.params.data", "relative path"),
        ("epoch=3", "entry.params.epoch", "no parameter 'epoch' (it has: amp, data, epochs"),
        ("epochs", "entry.params", "NAME=VALUE"),
    ],
)
def test_a_bad_or_unknown_parameter_names_the_field(pair, field, says):
    with pytest.raises(LaunchError) as e:
        typed_params(DEMO, [pair])
    assert e.value.field == field
    assert says in e.value.message
    assert str(e.value).startswith(field + ": ")


def test_an_unknown_template_lists_the_known_ones():
    assert find_template([DEMO], "demo") is DEMO
    with pytest.raises(LaunchError) as e:
        find_template([DEMO, {"name": "big"}], "dmeo")
    assert e.value.field == "entry.template" and "big, demo" in e.value.message


def test_convert_param_without_a_kind_is_text():
    assert convert_param({"name": "x"}, "3") == "3"


def test_a_failed_job_with_retries_left_is_not_final():
    assert is_final({"status": "succeeded"})
    assert is_final({"status": "failed", "retries_left": 0})
    assert not is_final({"status": "failed", "retries_left": 1})
    assert not is_final({"status": "running"})
    assert is_final({"status": "running"}, until=("running",))


def test_the_command_line_refuses_a_wrong_entry_before_sending(run_script, tmp_path):
    # Port 9 (discard) on localhost is closed: an error about it would mean a request went.
    code = """
import sys
from stepwatch.__main__ import main
for argv in (["--param", "a=1", "--", "x"], ["--template", "demo", "--", "x"], []):
    print(main(["launch", "--url", "http://127.0.0.1:9", "--queue", "q", *argv]))
"""
    proc = run_script(code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["2", "2", "2"]
    errors = proc.stderr.splitlines()
    assert errors == [
        "stepwatch launch: error: entry.params: --param needs --template",
        "stepwatch launch: error: entry: give either --template or a program after --, not both",
        "stepwatch launch: error: entry: give --template NAME or a program after --",
    ]


# -- against a real relay with a launch config, and a real agent ----------------------------
#: The job the ``tiny`` template runs: a real trainer on the SDK. It saves a checkpoint
#: every 4 steps, dies with status 3 at ``--fail-at`` on a first attempt, and resumes
#: through its load handler on a retry (``STEPWATCH_RESUME_FROM``).
TINY = """
import argparse, json, os, sys, time
import stepwatch
from stepwatch import emit_batch_end, emit_checkpoint_saved, emit_training_end, emit_training_start

p = argparse.ArgumentParser()
p.add_argument("--steps", type=int)
p.add_argument("--fail-at", type=int)
p.add_argument("--sleep", type=float)
a = p.parse_args()
out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ckpts", os.environ["STEPWATCH_RUN"])
os.makedirs(out, exist_ok=True)
state = {"step": 0}


def load(path):
    with open(path) as f:
        state["step"] = json.load(f)["step"]


stepwatch.on_command("load_checkpoint", load)
emit_training_start(total_batches=a.steps, config={"steps": a.steps})
while state["step"] < a.steps:
    state["step"] += 1
    s = state["step"]
    emit_batch_end(batch_idx=s - 1, loss=1.0 / s, step=s)
    if s % 4 == 0:
        path = os.path.join(out, f"step-{s}.json")
        with open(path, "w") as f:
            json.dump({"step": s}, f)
        emit_checkpoint_saved(checkpoint_path=path, step=s)
    if s == a.fail_at and not stepwatch.resume_from(claim=False):
        stepwatch.flush(10)
        sys.exit(3)
    time.sleep(a.sleep)
emit_training_end()
assert stepwatch.flush(10)
"""


def launch_toml(script: Path) -> str:
    argv = [
        sys.executable,
        str(script),
        "--steps={steps}",
        "--fail-at={fail_at}",
        "--sleep={sleep}",
    ]
    return f"""
[[queues]]
name = "local"
engine = "local"
description = "this machine"
lease_s = 10
cancel_grace_s = 3
limits = {{ gpus = 0 }}

[[templates]]
name = "tiny"
queue = "local"
description = "a tiny real trainer"
argv = {json.dumps(argv)}
params = [
  {{ name = "steps", kind = {{ type = "int", min = 1, max = 10000 }}, default = 5 }},
  {{ name = "fail_at", kind = {{ type = "int", min = 0 }}, default = 0 }},
  {{ name = "sleep", kind = {{ type = "float", min = 0.0, max = 5.0 }}, default = 0.0 }},
]
"""


@pytest.fixture
def launch_relay(tmp_path):
    """A relay with a ``local`` queue and the ``tiny`` template (``--launch``)."""
    script = tmp_path / "tiny.py"
    script.write_text(TINY)
    config = tmp_path / "launch.toml"
    config.write_text(launch_toml(script))
    r = Relay(tmp_path / "data")
    r.extra = ["--launch", str(config)]
    r.start()
    yield r
    r.stop()


@pytest.fixture
def agent(launch_relay, tmp_path):
    """A real ``stepwatch agent`` on the local engine; jobs get the SDK from source."""
    proc = subprocess.Popen(
        [
            str(relay_binary()),
            "agent",
            "--queue",
            "local",
            "--engine",
            "local",
            "--url",
            launch_relay.url,
            "--name",
            "py-agent",
            "--state-dir",
            str(tmp_path / "agent"),
            "--tick-ms",
            "200",
        ],
        env=trainer_env(tmp_path),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        q = next(q for q in stepwatch.queues(url=launch_relay.url) if q["name"] == "local")
        if any(a["alive"] for a in q["agents"]):
            break
        time.sleep(0.1)
    else:
        proc.kill()
        pytest.fail("the agent never showed up alive")
    yield proc
    proc.kill()
    proc.wait(10)


def cli(relay, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = trainer_env(Path(relay.data_dir).parent)
    env.pop("STEPWATCH_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "stepwatch", *args[:1], "--url", relay.url, *args[1:]],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_launch_records_the_job_and_warns_without_an_agent(launch_relay):
    url = launch_relay.url
    tiny = next(t for t in stepwatch.templates(url=url) if t["name"] == "tiny")
    assert tiny["queue"] == "local" and [p["name"] for p in tiny["params"]][0] == "steps"
    local = next(q for q in stepwatch.queues(url=url) if q["name"] == "local")
    assert local["engine"] == "local" and local["may_submit"]
    with pytest.warns(LaunchWarning, match="no live agent serves queue"):
        job = stepwatch.launch(
            queue="local",
            template="tiny",
            params={"steps": 3},
            name="py launch",
            resources={"cpus": 1},
            priority=7,
            max_retries=1,
            url=url,
        )
    assert job.status == "queued" and job.run and job.id in job.run
    assert job.url == f"{url}/#/runs/{job.run}"
    view = job.refresh().state
    assert view["job"] == job.id and view["queue"] == "local" and view["position"] == 1
    assert view["spec"]["name"] == "py launch" and view["spec"]["priority"] == 7
    assert view["spec"]["entry"] == {"template": "tiny", "params": {"steps": 3}}
    assert view["spec"]["resources"] == {"cpus": 1} and view["retries_left"] == 1
    assert view["launch"]["argv"][1:] == [
        str(Path(launch_relay.data_dir).parent / "tiny.py"),
        "--steps=3",
        "--fail-at=0",
        "--sleep=0.0",
    ]
    listed = stepwatch.jobs(queue="local", url=url)
    assert [j.id for j in listed] == [job.id]
    assert stepwatch.jobs(queue="local", status="running", url=url) == []
    assert job.cancel().status == "cancelled"  # a queued job: at once
    assert stepwatch.get_job(job.id, url=url).status == "cancelled"
    assert job.wait(timeout=5) == "cancelled"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"params": {"steps": 0}}, "entry.params.steps"),
        ({"params": {"steps": "3"}}, "entry.params.steps"),
        ({"params": {"nope": 1}}, "entry.params.nope"),
        ({"resources": {"gpus": 2}}, "resources.gpus"),
        ({"queue": "no-such-queue"}, "queue"),
    ],
)
def test_a_refusal_names_the_field(launch_relay, kwargs, field):
    args = {"queue": "local", "template": "tiny", **kwargs}
    with pytest.raises(LaunchError) as e:
        stepwatch.launch(**args, url=launch_relay.url)
    assert e.value.field == field, e.value
    assert e.value.status in (400, 404)
    assert stepwatch.jobs(url=launch_relay.url) == []


def test_the_command_line_types_params_by_the_template_before_submitting(launch_relay):
    for param, says in (
        ("steps=abc", "entry.params.steps: 'abc' is not an integer"),
        ("steps=0", "entry.params.steps: must be an integer between 1 and 10000"),
        ("sleep=9", "entry.params.sleep: must be a finite number between 0.0 and 5.0"),
        ("step=3", "entry.params.step: template 'tiny' has no parameter 'step'"),
    ):
        proc = cli(
            launch_relay, "launch", "--queue", "local", "--template", "tiny", "--param", param
        )
        assert proc.returncode == 2, proc.stderr
        assert says in proc.stderr
    proc = cli(launch_relay, "launch", "--queue", "local", "--template", "nope")
    assert proc.returncode == 2 and "no template 'nope' (the relay has: tiny)" in proc.stderr
    assert stepwatch.jobs(url=launch_relay.url) == []  # nothing was submitted
    proc = cli(
        launch_relay,
        "launch",
        "--queue",
        "local",
        "--template",
        "tiny",
        "--param",
        "steps=2",
        "--param",
        "sleep=0.5",
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    answer = json.loads(proc.stdout)
    assert "no live agent serves queue" in proc.stderr and answer["warnings"]
    view = stepwatch.get_job(answer["job"], url=launch_relay.url).state
    assert view["spec"]["entry"]["params"] == {"steps": 2, "sleep": 0.5}
    assert answer["url"] == f"{launch_relay.url}/#/runs/{answer['run']}"


def test_wait_exit_codes_and_the_jobs_table_with_a_real_agent(launch_relay, agent):
    ok = cli(
        launch_relay,
        "launch",
        "--queue",
        "local",
        "--template",
        "tiny",
        "--param",
        "steps=3",
        "--name",
        "good",
        "--wait",
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    lines = ok.stdout.splitlines()
    job_id = lines[0].split()[1]
    assert lines[0].startswith(f"job {job_id} queued")
    run = lines[1].split()[1]
    assert lines[2] == f"{launch_relay.url}/#/runs/{run}"
    assert f"job {job_id}: succeeded" in ok.stderr
    state = launch_relay.get(f"/api/runs/{run}")
    assert state["status"] == "completed" and state["step"] == 3  # the trainer really ran
    bad = cli(
        launch_relay,
        "launch",
        "--queue",
        "local",
        "--template",
        "tiny",
        "--param",
        "fail_at=2",
        "--name",
        "bad",
        "--wait",
        "--json",
    )
    assert bad.returncode == 1, bad.stdout + bad.stderr
    first, last = (json.loads(line) for line in bad.stdout.splitlines())
    assert last["job"] == first["job"] and last["status"] == "failed" and last["exit_code"] == 3
    table = cli(launch_relay, "jobs", "--queue", "local")
    assert table.returncode == 0, table.stderr
    rows = [line.split() for line in table.stdout.splitlines()]
    assert rows[0][:5] == ["JOB", "QUEUE", "STATUS", "RUN", "NAME"]
    assert {(r[0], r[2], r[4]) for r in rows[1:]} == {
        (job_id, "succeeded", "good"),
        (first["job"], "failed", "bad"),
    }


def test_cancel_from_the_command_line_stops_a_running_job(launch_relay, agent):
    job = stepwatch.launch(
        queue="local", template="tiny", params={"steps": 10000, "sleep": 0.05}, url=launch_relay.url
    )
    assert job.wait(timeout=60, until=("running",)) == "running"
    launch_relay.wait_for(job.run, lambda s: s["step"] >= 3)
    proc = cli(launch_relay, "cancel", job.id)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"job {job.id} ")
    assert job.wait(timeout=60) == "cancelled"
    state = launch_relay.wait_for(job.run, lambda s: s["status"] == "stopped")
    assert state["step"] < 10000  # the dashboard's stop ended the loop


def test_a_retried_job_resumes_from_its_runs_last_checkpoint(launch_relay, agent):
    """Items 4 and 7 together: attempt 1 dies at step 6 (last checkpoint at step 4), the
    relay requeues it with STEPWATCH_RESUME_FROM, attempt 2 loads it and goes on."""
    job = stepwatch.launch(
        queue="local",
        template="tiny",
        params={"steps": 10, "fail_at": 6},
        max_retries=1,
        url=launch_relay.url,
        wait=True,
        timeout=120,
    )
    assert job.status == "succeeded", job.state
    assert job.state["attempts"] == 2 and job.state["retries_left"] == 0
    ckpt = str(Path(launch_relay.data_dir).parent / "ckpts" / job.run / "step-4.json")
    assert job.state["resume_from"] == ckpt
    events = launch_relay.get(f"/api/runs/{job.run}/events?limit=1000&event=batch_end")
    assert [e["step"] for e in events] == [*range(1, 7), *range(5, 11)]
    loaded = launch_relay.get(f"/api/runs/{job.run}/events?limit=1000&event=checkpoint_loaded")
    assert [e["checkpoint_path"] for e in loaded] == [ckpt]
    assert launch_relay.get(f"/api/runs/{job.run}")["status"] == "completed"
