"""Launching from Python: ``stepwatch.launch`` / ``Job`` and ``python -m stepwatch launch``.

The pure parts (the JobSpec sent, parameters typed by a template) are checked here
directly; the rest against a real relay with a launch config and a real agent."""

from __future__ import annotations

import pytest

from stepwatch import LaunchError
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
