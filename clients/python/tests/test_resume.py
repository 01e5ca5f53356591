"""Resuming a retried job (``STEPWATCH_RESUME_FROM``): real trainer processes under a real
relay. The first attempt saves checkpoints; the second, run as the agent runs a retry (same
``STEPWATCH_RUN``, the variable set), loads the checkpoint at its first control point and
the run's global step goes on from the checkpoint's. Unset, nothing is loaded."""

from __future__ import annotations

import json
from pathlib import Path

from test_integrations import HF_TRAINER, LIGHTNING, OFFLINE, events, lightning_env, need

PLAIN = """
import json, os, sys
import stepwatch
from stepwatch import (
    WebUIHooks, emit_batch_end, emit_checkpoint_saved, emit_training_end, emit_training_start,
    training_emitter,
)

TOTAL = int(os.environ["TOTAL"])
FAIL_AT = int(os.environ.get("FAIL_AT", "0"))
MODE = os.environ.get("MODE", "handler")
OUT = os.environ["OUT"]
state = {"step": 0}
calls = []
hooks = WebUIHooks().attach(training_emitter)


def load(path):
    calls.append(path)
    if MODE == "bad-handler":
        raise ValueError("corrupt checkpoint")
    with open(path) as f:
        state["step"] = json.load(f)["step"]


if MODE != "no-handler":
    stepwatch.on_command("load_checkpoint", load)
if MODE == "self":
    ckpt = stepwatch.resume_from()
    if ckpt:
        with open(ckpt) as f:
            state["step"] = json.load(f)["step"]
print("RESUME_FROM", stepwatch.resume_from(claim=False), flush=True)
emit_training_start(total_batches=TOTAL)
while state["step"] < TOTAL:
    state["step"] += 1
    step = state["step"]
    emit_batch_end(batch_idx=step - 1, loss=1.0 / step, step=step)
    if step % 5 == 0:
        path = os.path.join(OUT, f"ckpt-{step}.json")
        with open(path, "w") as f:
            json.dump({"step": step}, f)
        emit_checkpoint_saved(checkpoint_path=path, step=step)
    if step == FAIL_AT:
        stepwatch.flush(10)
        sys.exit(3)  # the attempt dies: the relay would retry the job
emit_training_end()
assert stepwatch.flush(10)
print("CALLS", json.dumps(calls))
print("HOOKS_STEP", hooks.get_current_state()["step"])
"""


def plain_env(relay, tmp_path: Path, run: str, **extra: str) -> dict:
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    return {"STEPWATCH_URL": relay.url, "STEPWATCH_RUN": run, "OUT": str(out), **extra}


def steps(relay, run: str) -> list[int]:
    return [e["step"] for e in events(relay, run, "batch_end")]


def output(proc, key: str) -> str:
    return next(line.split(" ", 1)[1] for line in proc.stdout.splitlines() if line.startswith(key))


def first_attempt(relay, run_script, tmp_path: Path, run: str) -> str:
    """Runs to step 12 and dies; returns the last checkpoint's path (step 10)."""
    proc = run_script(PLAIN, env=plain_env(relay, tmp_path, run, TOTAL="20", FAIL_AT="12"))
    assert proc.returncode == 3, proc.stderr
    assert output(proc, "RESUME_FROM") == "None"
    relay.wait_for(run, lambda s: s["step"] == 12)
    state = relay.get(f"/api/runs/{run}")
    return state["checkpoints"][-1]["path"]


def test_a_retry_loads_the_checkpoint_with_the_handler_and_the_step_goes_on(
    relay, run_script, tmp_path
):
    ckpt = first_attempt(relay, run_script, tmp_path, "plain-retry")
    assert ckpt.endswith("ckpt-10.json")
    env = plain_env(relay, tmp_path, "plain-retry", TOTAL="20", STEPWATCH_RESUME_FROM=ckpt)
    proc = run_script(PLAIN, env=env)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(output(proc, "CALLS")) == [ckpt]  # once, at training_start
    assert output(proc, "HOOKS_STEP") == "20"
    state = relay.wait_for("plain-retry", lambda s: s["status"] == "completed")
    assert state["step"] == 20
    # Attempt 1: 1..12; attempt 2 goes on from the checkpoint's step 10, not from 1.
    assert steps(relay, "plain-retry") == [*range(1, 13), *range(11, 21)]
    loaded = events(relay, "plain-retry", "checkpoint_loaded")
    assert [(e["checkpoint_path"], e["resumed"], e["at"]) for e in loaded] == [
        (ckpt, True, "training_start")
    ]
    starts = events(relay, "plain-retry", "training_start", "checkpoint_loaded", "batch_end")
    second = [e["event"] for e in starts[13:16]]
    assert second == ["training_start", "checkpoint_loaded", "batch_end"]


def test_a_script_that_loads_itself_is_not_loaded_twice(relay, run_script, tmp_path):
    ckpt = first_attempt(relay, run_script, tmp_path, "self-retry")
    env = plain_env(
        relay, tmp_path, "self-retry", TOTAL="15", MODE="self", STEPWATCH_RESUME_FROM=ckpt
    )
    proc = run_script(PLAIN, env=env)
    assert proc.returncode == 0, proc.stderr
    assert output(proc, "RESUME_FROM") == ckpt
    assert json.loads(output(proc, "CALLS")) == []  # resume_from() took it
    relay.wait_for("self-retry", lambda s: s["status"] == "completed")
    assert steps(relay, "self-retry")[12:] == list(range(11, 16))
    assert events(relay, "self-retry", "checkpoint_loaded") == []


def test_unset_nothing_is_loaded(relay, run_script, tmp_path):
    proc = run_script(PLAIN, env=plain_env(relay, tmp_path, "fresh", TOTAL="6"))
    assert proc.returncode == 0, proc.stderr
    assert output(proc, "RESUME_FROM") == "None"
    assert json.loads(output(proc, "CALLS")) == []
    relay.wait_for("fresh", lambda s: s["status"] == "completed")
    assert steps(relay, "fresh") == [1, 2, 3, 4, 5, 6]
    assert events(relay, "fresh", "checkpoint_loaded") == []


def test_no_handler_warns_and_a_failing_handler_does_not_stop_training(relay, run_script, tmp_path):
    ckpt = first_attempt(relay, run_script, tmp_path, "no-handler")
    env = plain_env(
        relay, tmp_path, "no-handler", TOTAL="3", MODE="no-handler", STEPWATCH_RESUME_FROM=ckpt
    )
    proc = run_script(PLAIN, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "registers no load_checkpoint handler" in proc.stderr
    logs = [e["message"] for e in events(relay, "no-handler", "log")]
    assert any("stepwatch.resume_from()" in m for m in logs), logs
    assert events(relay, "no-handler", "checkpoint_loaded") == []

    env = plain_env(
        relay, tmp_path, "bad-handler", TOTAL="3", MODE="bad-handler", STEPWATCH_RESUME_FROM=ckpt
    )
    proc = run_script(PLAIN, env=env)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(output(proc, "CALLS")) == [ckpt]
    state = relay.wait_for("bad-handler", lambda s: s["status"] == "completed")
    errors = events(relay, "bad-handler", "error_occurred")
    assert [e["fatal"] for e in errors] == [False]
    assert "corrupt checkpoint" in errors[0]["message"] and ckpt in errors[0]["message"]
    assert state["step"] == 3  # started afresh, training went on


# -- frameworks -----------------------------------------------------------------------------
def test_hf_train_helper_resumes_from_the_checkpoint(relay, run_script, tmp_path):
    need("torch")
    need("transformers")
    out = tmp_path / "hf"
    env = {
        **OFFLINE,
        "HF_HOME": str(tmp_path / "hf-home"),
        "STEPWATCH_URL": relay.url,
        "RUN": "hf-resume",
        "OUT": str(out),
        "MAX_STEPS": "20",
        "SAVE_STEPS": "10",
    }
    code = HF_TRAINER.replace(
        "from stepwatch.integrations.huggingface import StepwatchCallback",
        "from stepwatch.integrations.huggingface import StepwatchCallback, train",
    ).replace("\ntrainer.train()\n", "\ntrain(trainer)\n")
    assert "\ntrain(trainer)\n" in code
    proc = run_script(code, env=env, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    relay.wait_for("hf-resume", lambda s: s["status"] == "completed")
    ckpt = str(out / "checkpoint-10")
    env = {**env, "MAX_STEPS": "30", "STEPWATCH_RESUME_FROM": ckpt}
    proc = run_script(code, env=env, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "STEPS 30" in proc.stdout
    relay.wait_for("hf-resume", lambda s: s["status"] == "completed" and s["step"] == 30)
    # Attempt 2 resumed at step 10: its first logged step is 15, not 5.
    assert [e["step"] for e in events(relay, "hf-resume", "batch_end")] == [
        5, 10, 15, 20, *[15, 20, 25, 30]
    ]  # fmt: skip
    loaded = events(relay, "hf-resume", "checkpoint_loaded")
    assert [(e["checkpoint_path"], e["step"]) for e in loaded] == [(ckpt, 10)]


def test_lightning_callback_resumes_a_fit_without_ckpt_path(relay, run_script, tmp_path):
    need("torch")
    need("lightning", "pytorch_lightning")
    env = lightning_env(relay, tmp_path, "callback", "pl-resume", MAX_STEPS="12")
    proc = run_script(LIGHTNING, env=env, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    state = relay.wait_for("pl-resume", lambda s: s["status"] == "completed")
    ckpt = state["checkpoints"][-1]
    assert ckpt["step"] == 10 and Path(ckpt["path"]).is_file()  # saved after validation
    env = {**env, "MAX_STEPS": "20", "STEPWATCH_RESUME_FROM": ckpt["path"]}
    proc = run_script(LIGHTNING, env=env, timeout=180)  # plain trainer.fit(model, ...)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "STEPS 20" in proc.stdout
    relay.wait_for("pl-resume", lambda s: s["status"] == "completed" and s["step"] == 20)
    got = [e["step"] for e in events(relay, "pl-resume", "batch_end")]
    assert got == [*range(1, 13), *range(11, 21)]  # attempt 2 from the checkpoint's step 10
    loaded = events(relay, "pl-resume", "checkpoint_loaded")
    assert [(e["checkpoint_path"], e["step"]) for e in loaded] == [(ckpt["path"], 10)]


def test_lightning_fit_helper_passes_the_checkpoint_as_ckpt_path(relay, run_script, tmp_path):
    need("torch")
    need("lightning", "pytorch_lightning")
    code = LIGHTNING.replace(
        "import StepwatchCallback, StepwatchLogger",
        "import StepwatchCallback, StepwatchLogger, fit",
    ).replace(
        "\ntrainer.fit(Regression(), train, val)\n", "\nfit(trainer, Regression(), train, val)\n"
    )
    assert "\nfit(trainer, Regression(), train, val)\n" in code
    env = lightning_env(relay, tmp_path, "callback", "pl-fit", MAX_STEPS="10")
    proc = run_script(code, env=env, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    state = relay.wait_for("pl-fit", lambda s: s["status"] == "completed")
    ckpt = state["checkpoints"][-1]["path"]
    env = {**env, "MAX_STEPS": "14", "STEPWATCH_RESUME_FROM": ckpt}
    proc = run_script(code, env=env, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Restoring states from the checkpoint path at " + ckpt in proc.stdout + proc.stderr
    relay.wait_for("pl-fit", lambda s: s["status"] == "completed" and s["step"] == 14)
    got = [e["step"] for e in events(relay, "pl-fit", "batch_end")]
    assert got == [*range(1, 11), *range(11, 15)]
    loaded = events(relay, "pl-fit", "checkpoint_loaded")
    assert [(e["checkpoint_path"], e["step"]) for e in loaded] == [(ckpt, 10)]


def test_frameworks_that_cannot_resume_say_so_and_train_from_the_start(relay, run_script, tmp_path):
    need("torch")
    need("transformers")
    need("lightning", "pytorch_lightning")
    missing = str(tmp_path / "gone" / "last.ckpt")
    env = {
        **OFFLINE,
        "HF_HOME": str(tmp_path / "hf-home"),
        "STEPWATCH_URL": relay.url,
        "RUN": "hf-plain",
        "OUT": str(tmp_path / "hf"),
        "MAX_STEPS": "5",
        "SAVE_STEPS": "100",
        "STEPWATCH_RESUME_FROM": missing,
    }
    proc = run_script(HF_TRAINER, env=env, timeout=180)  # trainer.train(), no handler
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "but the Trainer started from step 0" in proc.stderr
    relay.wait_for("hf-plain", lambda s: s["status"] == "completed")
    assert [e["step"] for e in events(relay, "hf-plain", "batch_end")] == [5]
    logs = [e["message"] for e in events(relay, "hf-plain", "log")]
    assert any("huggingface.train(trainer)" in m and missing in m for m in logs), logs

    env = lightning_env(
        relay, tmp_path, "callback", "pl-bad", MAX_STEPS="3", STEPWATCH_RESUME_FROM=missing
    )
    proc = run_script(LIGHTNING, env=env, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"could not resume from {missing}" in proc.stderr
    relay.wait_for("pl-bad", lambda s: s["status"] == "completed")
    assert [e["step"] for e in events(relay, "pl-bad", "batch_end")] == [1, 2, 3]
    assert events(relay, "pl-bad", "checkpoint_loaded") == []
