"""Framework integrations end to end: real trainers in subprocesses, a real relay.

The Hugging Face and Lightning tests need torch, transformers (+ accelerate) and
lightning; without them they are skipped, unless ``STEPWATCH_REQUIRE_FRAMEWORKS=1``,
which turns a missing framework into a failure. The SummaryWriter tests need nothing.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from types import ModuleType

import pytest
from conftest import trainer_env

#: Set in CI images that install the frameworks: skipping would hide a broken install.
REQUIRE = os.environ.get("STEPWATCH_REQUIRE_FRAMEWORKS") == "1"

#: No network for the frameworks, fewer threads, quieter output.
OFFLINE = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "WANDB_DISABLED": "true",
    "OMP_NUM_THREADS": "1",
    "PYTHONWARNINGS": "ignore",
}


def need(*modules: str) -> ModuleType:
    """The first of ``modules`` that imports. None does: skip, or fail when
    ``STEPWATCH_REQUIRE_FRAMEWORKS=1``."""
    errors = []
    for name in modules:
        try:
            return importlib.import_module(name)
        except ImportError as e:
            errors.append(f"{name}: {e}")
    why = "; ".join(errors)
    if REQUIRE:
        pytest.fail(f"STEPWATCH_REQUIRE_FRAMEWORKS=1 but not importable: {why}")
    pytest.skip(f"not installed: {why}")


def post(relay, run: str, body: dict) -> tuple[int, dict]:
    req = urllib.request.Request(
        f"{relay.url}/api/runs/{run}/commands",
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def events(relay, run: str, *names: str) -> list[dict]:
    query = f"?limit=10000&event={','.join(names)}" if names else "?limit=10000"
    return relay.get(f"/api/runs/{run}/events{query}")


def first_ack(relay, run: str, cid: str) -> str:
    """The message of the trainer's first answer to command ``cid``."""
    return next(
        e.get("message", "") for e in events(relay, run, "command_ack") if e["command_id"] == cid
    )


def command(state: dict, cid: str) -> dict:
    return next(c for c in state["commands"] if c["id"] == cid)


def start(script: Path, code: str, env: dict) -> subprocess.Popen:
    script.write_text(code)
    return subprocess.Popen(
        [sys.executable, str(script)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


# -- SummaryWriter (no framework) -----------------------------------------------------------
TENSORBOARD = """
import math, os, sys
from stepwatch.tensorboard import SummaryWriter

with SummaryWriter(os.path.join(os.environ["OUT"], "runs", "tb-shim")) as w:
    w.add_hparams({"lr": 0.01, "optimizer": "sgd", "layers": [2, 4]}, {"hparam/best": 0.5})
    for step in range(10):
        w.add_scalar("Loss/train", 1.0 / (step + 1), step)
        w.add_scalar("Loss/test", 2.0 / (step + 1), step)
        w.add_scalars("lr", {"group0": 0.01, "group1": 0.02}, step)
    w.add_scalar("Accuracy/test", float("nan"), 9)
    w.add_scalar("Loss/train", float("inf"), 10)
    w.add_text("notes", "hello from tensorboard", 10)
    w.add_histogram("weights", [1, 2, 3], 10)
    w.add_image("sample", object(), 10)  # no image: a warning, nothing sent
    w.add_embedding([[1.0]])  # accepted, ignored
    assert w.get_logdir().endswith("tb-shim")
    w.flush()
assert "torch" not in sys.modules, "the shim imported torch"
print("RUN", w.run)
"""


def test_summary_writer_switches_by_one_import(relay, run_script, tmp_path):
    # STEPWATCH_URL alone: the SDK connects at import under a made-up id, the writer
    # moves to the run named after log_dir before anything started.
    proc = run_script(TENSORBOARD, env={"STEPWATCH_URL": relay.url, "OUT": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    assert "RUN tb-shim" in proc.stdout
    state = relay.wait_for("tb-shim", lambda s: s["status"] == "completed")
    assert state["config"] == {"lr": 0.01, "optimizer": "sgd", "layers": [2, 4]}
    assert state["batch_count"] == 11 and state["step"] == 10
    assert state["best_loss"] == pytest.approx(0.1) and state["loss_non_finite"] is True
    assert state["metrics"]["Loss/test"] == pytest.approx(0.2)
    assert state["metrics"]["lr/group1"] == pytest.approx(0.02)
    # lr/group0, the first learning-rate tag, is the run's learning rate, not a metric.
    assert state["learning_rate"] == pytest.approx(0.01)
    assert "lr/group0" not in state["metrics"]
    assert state["metrics"]["hparam/best"] == 0.5
    batch_ends = events(relay, "tb-shim", "batch_end")
    # Logged after the loss, the rate rides on the next step's batch_end.
    assert "lr" not in batch_ends[0] and batch_ends[1]["lr"] == pytest.approx(0.01)
    # TensorBoard has no epochs: none invented.
    assert not any("epoch" in e for e in batch_ends)
    assert events(relay, "tb-shim", "epoch_start", "epoch_end") == []
    losses = [(e["step"], e["loss"]) for e in batch_ends]
    assert losses[:3] == [(0, 1.0), (1, 0.5), (2, pytest.approx(1 / 3))]
    assert losses[-1] == (10, "Infinity")
    updates = events(relay, "tb-shim", "metric_update")
    nan = [e for e in updates if e.get("name") == "Accuracy/test"]
    assert nan and nan[0]["value"] == "NaN" and nan[0]["step"] == 9
    assert not any(e.get("name", "").startswith("Loss/train") for e in updates)
    texts = events(relay, "tb-shim", "text_sample")
    assert [(e["name"], e["text"], e["step"]) for e in texts] == [
        ("notes", "hello from tensorboard", 10)
    ]
    (hist,) = events(relay, "tb-shim", "histogram")
    assert (hist["name"], hist["step"], sum(hist["counts"]), hist["max"]) == ("weights", 10, 3, 3)
    assert events(relay, "tb-shim", "image") == []
    assert len(events(relay, "tb-shim", "training_start")) == 1


@pytest.mark.parametrize(
    "tag",
    ["train/lr", "lr", "LR", "learning_rate", "lr-Adam", "lr-AdamW/pg1", "optim/Learning_Rate"],
)
def test_summary_writer_sends_lr_tags_as_the_runs_learning_rate(relay, run_script, tag):
    code = f"""
from stepwatch.tensorboard import SummaryWriter
with SummaryWriter("runs/tb-lr") as w:
    for step in range(5):
        w.add_scalar({tag!r}, 0.1 / (step + 1), step)        # before the loss: exact
        w.add_scalar("train/loss", 1.0 / (step + 1), step)
        w.add_scalar("lr-Adam/pg2", 0.5, step)               # another group: a metric
"""
    proc = run_script(code, env={"STEPWATCH_URL": relay.url})
    assert proc.returncode == 0, proc.stderr
    state = relay.wait_for("tb-lr", lambda s: s["status"] == "completed")
    assert state["learning_rate"] == pytest.approx(0.1 / 5)
    lrs = [(e["step"], e["lr"]) for e in events(relay, "tb-lr", "batch_end")]
    assert lrs == [(s, pytest.approx(0.1 / (s + 1))) for s in range(5)]
    assert tag not in state["metrics"]
    assert not any(e.get("name") == tag for e in events(relay, "tb-lr", "metric_update"))
    assert state["metrics"]["lr-Adam/pg2"] == 0.5
    assert state["batch_count"] == 5


def test_summary_writer_with_block_failure_ends_the_run_failed(relay, run_script):
    code = """
import stepwatch
from stepwatch.tensorboard import SummaryWriter
stepwatch.connect(run="tb-fail")
with SummaryWriter("runs/ignored-because-connected", comment="x") as w:
    w.add_scalar("loss", 1.0, 0)
    raise RuntimeError("diverged")
"""
    proc = run_script(code, env={"STEPWATCH_URL": relay.url})
    assert proc.returncode != 0 and "diverged" in proc.stderr
    state = relay.wait_for("tb-fail", lambda s: s["status"] == "failed")
    assert "RuntimeError: diverged" in state["last_error"]["message"]
    ends = events(relay, "tb-fail", "training_end")
    assert [e["status"] for e in ends] == ["failed"]


def test_missing_frameworks_name_the_pip_package(run_script):
    code = """
import sys
for name in ("transformers", "lightning", "pytorch_lightning"):
    sys.modules[name] = None  # import fails as if not installed
import stepwatch.integrations  # the package itself imports no framework
for module, needle in (("huggingface", "pip install transformers"),
                       ("lightning", "pip install lightning")):
    try:
        __import__("stepwatch.integrations." + module)
    except ImportError as e:
        assert needle in str(e), str(e)
        print("OK", module)
    else:
        raise SystemExit(module + " imported without its framework")
"""
    proc = run_script(code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["OK", "huggingface", "OK", "lightning"]


# -- Hugging Face Trainer -------------------------------------------------------------------
HF_TRAINER = """
import os, time
import torch
from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments
from stepwatch.integrations.huggingface import StepwatchCallback

torch.manual_seed(0)
torch.set_num_threads(1)
SLOW = float(os.environ.get("STEP_SLEEP", "0"))


class Tokens(torch.utils.data.Dataset):
    def __init__(self, n):
        g = torch.Generator().manual_seed(n)
        self.x = torch.randint(0, 64, (n, 8), generator=g)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        if SLOW:
            time.sleep(SLOW)
        return {"input_ids": self.x[i], "labels": self.x[i, 0] % 2}


config = BertConfig(
    vocab_size=64, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
    intermediate_size=32, max_position_embeddings=16, num_labels=2,
)
args = TrainingArguments(
    output_dir=os.environ["OUT"],
    max_steps=int(os.environ["MAX_STEPS"]),
    per_device_train_batch_size=8,
    per_device_eval_batch_size=16,
    learning_rate=1e-3,
    logging_steps=5,
    save_steps=int(os.environ["SAVE_STEPS"]),
    eval_strategy="steps",
    eval_steps=10,
    report_to=[],
    use_cpu=True,
    disable_tqdm=True,
    dataloader_num_workers=0,
    run_name="hf-tiny",
)
trainer = Trainer(
    model=BertForSequenceClassification(config),
    args=args,
    train_dataset=Tokens(64),
    eval_dataset=Tokens(16),
    callbacks=[StepwatchCallback(run=os.environ["RUN"])],
)
trainer.train()
print("STEPS", trainer.state.global_step)
"""


def test_hf_trainer_reports_a_run(relay, run_script, tmp_path):
    need("torch")
    need("transformers")
    out = tmp_path / "hf"
    env = {
        **OFFLINE,
        "HF_HOME": str(tmp_path / "hf-home"),
        "STEPWATCH_URL": relay.url,
        "RUN": "hf-run",
        "OUT": str(out),
        "MAX_STEPS": "20",
        "SAVE_STEPS": "10",
    }
    proc = run_script(HF_TRAINER, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    state = relay.wait_for("hf-run", lambda s: s["status"] == "completed")
    assert state["name"] == "hf-tiny"
    assert state["step"] == 20
    assert state["total_epochs"] == 3 and state["total_batches"] == 8  # 64 / 8 a epoch
    assert state["config"]["learning_rate"] == 1e-3
    assert state["config"]["max_steps"] == 20
    assert state["config"]["model_config"]["hidden_size"] == 16
    assert state["config"]["model_class"] == "BertForSequenceClassification"
    assert state["meta"]["transformers"]
    batches = events(relay, "hf-run", "batch_end")
    assert [e["step"] for e in batches] == [5, 10, 15, 20]
    assert [e["epoch"] for e in batches] == [1, 2, 2, 3]
    assert [e["batch_idx"] for e in batches] == [4, 1, 6, 3]
    assert all(isinstance(e["loss"], float) and e["lr"] > 0 for e in batches)
    assert all("grad_norm" in e["metrics"] for e in batches)
    assert state["learning_rate"] == batches[-1]["lr"]
    epochs = events(relay, "hf-run", "epoch_start", "epoch_end")
    assert [(e["event"], e["epoch"]) for e in epochs] == [
        ("epoch_start", 1),
        ("epoch_end", 1),
        ("epoch_start", 2),
        ("epoch_end", 2),
        ("epoch_start", 3),
        ("epoch_end", 3),
    ]
    assert "eval_loss" in state["metrics"] and "train_runtime" in state["metrics"]
    ckpts = state["checkpoints"]
    assert [c["path"] for c in ckpts] == [str(out / "checkpoint-10"), str(out / "checkpoint-20")]
    assert [c["step"] for c in ckpts] == [10, 20]
    assert all(Path(c["path"]).is_dir() and c["size_bytes"] > 1000 for c in ckpts)
    assert "eval_loss" in ckpts[0]["metrics"]
    assert len(events(relay, "hf-run", "training_start")) == 1


def test_hf_trainer_stops_from_the_dashboard(relay, tmp_path):
    need("torch")
    need("transformers")
    out = tmp_path / "hf"
    env = trainer_env(
        tmp_path,
        **OFFLINE,
        HF_HOME=str(tmp_path / "hf-home"),
        STEPWATCH_URL=relay.url,
        RUN="hf-stop",
        OUT=str(out),
        MAX_STEPS="100000",
        SAVE_STEPS="100000",
        STEP_SLEEP="0.002",
    )
    proc = start(tmp_path / "trainer.py", HF_TRAINER, env)
    try:
        relay.wait_for("hf-stop", lambda s: s["step"] >= 10, timeout=60)
        status, body = post(relay, "hf-stop", {"command": "stop"})
        assert status == 202, body
        out_text, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err[-3000:]
        state = relay.wait_for("hf-stop", lambda s: s["status"] == "stopped")
        assert command(state, body["command_id"])["status"] == "done"
        assert first_ack(relay, "hf-stop", body["command_id"]) == (
            "stop accepted; the Hugging Face trainer stops cleanly after this step"
        )
        stopped_at = int(out_text.split("STEPS")[1])
        assert 10 <= stopped_at < 1000
        # The stop saved a checkpoint of where training ended.
        assert state["checkpoints"][-1]["path"] == str(out / f"checkpoint-{stopped_at}")
        assert (out / f"checkpoint-{stopped_at}").is_dir()
    finally:
        proc.kill()


# -- PyTorch Lightning ----------------------------------------------------------------------
LIGHTNING = """
import os, time
import torch
try:
    import lightning.pytorch as pl
except ImportError:
    import pytorch_lightning as pl
from stepwatch.integrations.lightning import StepwatchCallback, StepwatchLogger

torch.manual_seed(0)
torch.set_num_threads(1)
MODE = os.environ["MODE"]
FAIL_AT = int(os.environ.get("FAIL_AT", "0"))
SLOW = float(os.environ.get("STEP_SLEEP", "0"))


class Regression(pl.LightningModule):
    def __init__(self, lr=0.05, hidden=8):
        super().__init__()
        self.save_hyperparameters()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(4, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 1)
        )

    def training_step(self, batch, batch_idx):
        if FAIL_AT and self.global_step == FAIL_AT:
            raise RuntimeError("exploded at step %d" % self.global_step)
        if SLOW:
            time.sleep(SLOW)
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.net(x), y)
        self.log("train_loss", loss, on_step=True, on_epoch=True)
        if isinstance(self.logger, StepwatchLogger):  # TensorBoard-style code keeps working
            step = self.global_step
            self.logger.experiment.add_scalar("custom/step", float(step), step)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", torch.nn.functional.mse_loss(self.net(x), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


x = torch.randn(64, 4)
data = torch.utils.data.TensorDataset(x, x.sum(1, keepdim=True))
train = torch.utils.data.DataLoader(data, batch_size=8)
val = torch.utils.data.DataLoader(data, batch_size=32)
run = os.environ["RUN"]
trainer = pl.Trainer(
    max_steps=int(os.environ["MAX_STEPS"]),
    accelerator="cpu",
    devices=1,
    enable_progress_bar=False,
    enable_model_summary=False,
    enable_checkpointing=True,
    default_root_dir=os.environ["OUT"],
    log_every_n_steps=5,
    val_check_interval=10,
    check_val_every_n_epoch=None,
    logger=StepwatchLogger(run=run) if "logger" in MODE else False,
    callbacks=[StepwatchCallback(run=run)] if "callback" in MODE else [],
)
trainer.fit(Regression(), train, val)
print("STEPS", trainer.global_step)
"""


def lightning_env(relay, tmp_path: Path, mode: str, run: str, **extra: str) -> dict:
    return {
        **OFFLINE,
        "STEPWATCH_URL": relay.url,
        "MODE": mode,
        "RUN": run,
        "OUT": str(tmp_path / "pl"),
        "MAX_STEPS": "20",
        **extra,
    }


def test_lightning_callback_reports_a_fit(relay, run_script, tmp_path):
    need("torch")
    need("lightning", "pytorch_lightning")
    env = lightning_env(relay, tmp_path, "callback", "pl-cb")
    proc = run_script(LIGHTNING, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    state = relay.wait_for("pl-cb", lambda s: s["status"] == "completed")
    assert state["step"] == 20 and state["batch_count"] == 20
    assert state["total_epochs"] == 3 and state["total_batches"] == 8
    assert state["config"]["lr"] == 0.05 and state["config"]["hidden"] == 8
    assert state["config"]["trainer"]["max_steps"] == 20
    assert state["config"]["optimizer"] == "SGD"
    assert state["learning_rate"] == 0.05
    batches = events(relay, "pl-cb", "batch_end")
    assert [e["step"] for e in batches] == list(range(1, 21))
    assert [e["batch_idx"] for e in batches[:9]] == [0, 1, 2, 3, 4, 5, 6, 7, 0]
    assert batches[8]["epoch"] == 2
    assert all(isinstance(e["loss"], float) for e in batches)
    vals = [e for e in events(relay, "pl-cb", "metric_update") if "val_loss" in e["metrics"]]
    assert [e["step"] for e in vals] == [10, 20]  # not the sanity check
    ends = events(relay, "pl-cb", "epoch_end")
    assert [e["epoch"] for e in ends] == [1, 2, 3]
    assert "avg_loss" in ends[0]["metrics"] and "train_loss_epoch" in ends[0]["metrics"]
    ckpts = state["checkpoints"]
    assert ckpts and ckpts[-1]["step"] == 20
    assert all(c["size_bytes"] > 0 for c in ckpts)
    assert Path(ckpts[-1]["path"]).is_file()  # save_top_k=1 removed the older ones


def test_lightning_logger_alone_reports_what_lightning_logs(relay, run_script, tmp_path):
    need("torch")
    need("lightning", "pytorch_lightning")
    env = lightning_env(relay, tmp_path, "logger", "pl-log")
    proc = run_script(LIGHTNING, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    state = relay.wait_for("pl-log", lambda s: s["status"] == "completed")
    assert state["config"]["lr"] == 0.05 and state["config"]["model_class"] == "Regression"
    batches = events(relay, "pl-log", "batch_end")
    assert len(batches) == 4  # every log_every_n_steps=5
    assert all(isinstance(e["loss"], float) for e in batches)
    assert "val_loss" in state["metrics"] and "train_loss_epoch" in state["metrics"]
    assert state["metrics"]["custom/step"] == 19  # via logger.experiment.add_scalar
    # The run id is the logger's version, so checkpoints land under it.
    ckpts = state["checkpoints"]
    assert ckpts and all("/stepwatch/pl-log/checkpoints/" in c["path"] for c in ckpts)
    assert ckpts[-1]["step"] == 20


def test_lightning_callback_and_logger_stop_from_the_dashboard(relay, tmp_path):
    need("torch")
    need("lightning", "pytorch_lightning")
    env = trainer_env(
        tmp_path,
        **lightning_env(
            relay, tmp_path, "callback+logger", "pl-stop", MAX_STEPS="100000", STEP_SLEEP="0.005"
        ),
    )
    proc = start(tmp_path / "trainer.py", LIGHTNING, env)
    try:
        relay.wait_for("pl-stop", lambda s: s["step"] >= 10, timeout=60)
        status, body = post(relay, "pl-stop", {"command": "stop"})
        assert status == 202, body
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err[-3000:]
        state = relay.wait_for("pl-stop", lambda s: s["status"] == "stopped")
        assert command(state, body["command_id"])["status"] == "done"
        assert first_ack(relay, "pl-stop", body["command_id"]) == (
            "stop accepted; the Lightning trainer stops cleanly after this step"
        )
        stopped_at = int(out.split("STEPS")[1])
        assert 10 <= stopped_at < 1000
        # Callback and logger together: one run start, one end, batches once each.
        assert len(events(relay, "pl-stop", "training_start")) == 1
        assert [e["status"] for e in events(relay, "pl-stop", "training_end")] == ["stopped"]
        steps = [e["step"] for e in events(relay, "pl-stop", "batch_end")]
        assert steps == list(range(1, stopped_at + 1))
        assert state["config"]["lr"] == 0.05 and state["config"]["trainer"]
    finally:
        proc.kill()


def test_lightning_logger_alone_is_stopped_as_by_ctrl_c(relay, tmp_path):
    # No callback to set trainer.should_stop: the Stop arrives as KeyboardInterrupt at the
    # logger's next batch_end, and Lightning shuts down as it does for Ctrl-C.
    need("torch")
    need("lightning", "pytorch_lightning")
    env = trainer_env(
        tmp_path,
        **lightning_env(
            relay, tmp_path, "logger", "pl-log-stop", MAX_STEPS="100000", STEP_SLEEP="0.005"
        ),
    )
    proc = start(tmp_path / "trainer.py", LIGHTNING, env)
    try:
        relay.wait_for("pl-log-stop", lambda s: s["step"] >= 10, timeout=60)
        status, body = post(relay, "pl-log-stop", {"command": "stop"})
        assert status == 202, body
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert "Detected KeyboardInterrupt" in out + err
    assert "STEPS" not in out  # Lightning ends the process after its graceful shutdown
    state = relay.wait_for("pl-log-stop", lambda s: s["status"] == "stopped")
    assert command(state, body["command_id"])["status"] == "done"
    assert state["last_error"] is None
    assert [e["status"] for e in events(relay, "pl-log-stop", "training_end")] == ["stopped"]
    messages = [
        e.get("message")
        for e in events(relay, "pl-log-stop", "command_ack")
        if e.get("command_id") == body["command_id"]
    ]
    assert messages[1].startswith("interrupting the loop at step ")


def test_lightning_exception_ends_the_run_failed(relay, run_script, tmp_path):
    need("torch")
    need("lightning", "pytorch_lightning")
    env = lightning_env(relay, tmp_path, "callback+logger", "pl-fail", FAIL_AT="3")
    proc = run_script(LIGHTNING, env=env, timeout=120)
    assert proc.returncode != 0 and "exploded at step 3" in proc.stderr
    state = relay.wait_for("pl-fail", lambda s: s["status"] == "failed")
    assert "RuntimeError: exploded at step 3" in state["last_error"]["message"]
    assert state["last_error"]["fatal"] is True
    assert [e["status"] for e in events(relay, "pl-fail", "training_end")] == ["failed"]
    assert len(events(relay, "pl-fail", "error_occurred")) == 1
    assert state["step"] == 3
