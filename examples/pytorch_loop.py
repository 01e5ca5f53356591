"""A plain PyTorch training script instrumented with Stepwatch: the seed's 10-15 lines.

    cargo xtask run                      # relay + dashboard on http://127.0.0.1:8080
    pip install torch                    # any build; CPU is fine
    PYTHONPATH=clients/python/src python examples/pytorch_loop.py

Open http://127.0.0.1:8080 and click the run. The script has the usual shape: a train()
function with the batch loop, an epoch loop that validates and saves the best model, Ctrl-C
to end training early, then a test of the best model. Nothing in it checks for a Stop:

- **Stop** from the dashboard arrives as Ctrl-C does, a ``KeyboardInterrupt`` at the next
  ``emit_batch_end`` (or ``emit_epoch_start``), so the ``except KeyboardInterrupt`` below
  runs and the best model saved so far is tested. ``stepwatch.control_point()`` in
  evaluate() lets a Stop cut validation short too (a Stop there interrupts once: the final
  test pass, after it, runs in full).
- To finish the epoch instead (validate, save, then end), add
  ``if stepwatch.should_stop(): break`` at the end of the epoch loop: a loop that checks
  is left to end itself.
- **Load** beside a checkpoint loads it into the model (``load_checkpoint`` below, which
  reads both a ``state_dict`` and a whole saved module).
"""

import pickle
import time

import torch
from torch import nn

import stepwatch
from stepwatch import (
    emit_batch_end,
    emit_checkpoint_saved,
    emit_epoch_end,
    emit_epoch_start,
    emit_training_end,
    emit_training_start,
)

stepwatch.connect(run=time.strftime("mlp-%Y%m%d-%H%M%S"))  # STEPWATCH_URL, else :8080

torch.manual_seed(0)
x = torch.randn(4096, 32)
y = (x[:, :4].sum(dim=1, keepdim=True) > 0).float()
x_val, y_val = x[:512] + 0.1 * torch.randn(512, 32), y[:512]
model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 1))
opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=10 * 64)
loss_fn = nn.BCEWithLogitsLoss()

epochs, batch_size = 10, 64
batches = len(x) // batch_size
best_path = "/tmp/mlp_best.pt"
step = 0


def load_checkpoint(path):
    try:  # torch.save(model.state_dict(), path): tensors only, read with the safe default
        ckpt = torch.load(path, map_location="cpu")
    except pickle.UnpicklingError:  # torch.save(model, path): a whole pickled module, which
        # PyTorch >= 2.6 refuses by default (weights_only=True); load it only if you trust it
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    model.load_state_dict(ckpt.state_dict() if isinstance(ckpt, torch.nn.Module) else ckpt)


stepwatch.on_command("load_checkpoint", load_checkpoint)


def train(epoch):
    global step
    model.train()
    total = 0.0
    for batch_idx in range(batches):
        xb = x[batch_idx * batch_size : (batch_idx + 1) * batch_size]
        yb = y[batch_idx * batch_size : (batch_idx + 1) * batch_size]
        loss = loss_fn(model(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        step += 1
        total += loss.item()
        emit_batch_end(
            batch_idx=batch_idx, loss=loss.item(), lr=sched.get_last_lr()[0], epoch=epoch
        )
        time.sleep(0.01)  # so the live chart is fun to watch
    return total / batches


def evaluate(xs, ys):
    model.eval()
    total = 0.0
    with torch.no_grad():
        for i in range(0, len(xs), batch_size):
            total += loss_fn(model(xs[i : i + batch_size]), ys[i : i + batch_size]).item()
            time.sleep(0.01)
            stepwatch.control_point()  # a Stop may end validation here too
    return total / (len(xs) // batch_size)


emit_training_start(
    total_epochs=epochs,
    total_batches=batches,
    config={"lr": 3e-3, "batch_size": batch_size},
)
best = None
try:
    for epoch in range(1, epochs + 1):
        emit_epoch_start(epoch=epoch, total_epochs=epochs)
        avg = train(epoch)
        val_loss = evaluate(x_val, y_val)
        emit_epoch_end(epoch=epoch, metrics={"avg_loss": avg, "val_loss": val_loss})
        if best is None or val_loss < best:
            best = val_loss
            torch.save(model.state_dict(), best_path)
            emit_checkpoint_saved(checkpoint_path=best_path, epoch=epoch, step=step)
except KeyboardInterrupt:
    print("Exiting from training early")

if best is not None:
    load_checkpoint(best_path)
    print(f"best model: validation loss {evaluate(x_val, y_val):.4f}")
emit_training_end()
