"""A plain PyTorch training loop instrumented with Stepwatch: the seed's 10-15 lines.

    cargo xtask run                      # relay + dashboard on http://127.0.0.1:8080
    pip install torch                    # any build; CPU is fine
    PYTHONPATH=clients/python/src python examples/pytorch_loop.py

Open http://127.0.0.1:8080 and click the run.
"""

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

stepwatch.connect("http://127.0.0.1:8080", run=time.strftime("mlp-%Y%m%d-%H%M%S"))

torch.manual_seed(0)
x = torch.randn(4096, 32)
y = (x[:, :4].sum(dim=1, keepdim=True) > 0).float()
model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 1))
opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=10 * 64)
loss_fn = nn.BCEWithLogitsLoss()

epochs, batch_size = 10, 64
batches = len(x) // batch_size
emit_training_start(
    total_epochs=epochs,
    total_batches=batches,
    config={"lr": 3e-3, "batch_size": batch_size},
)
step = 0
for epoch in range(1, epochs + 1):
    emit_epoch_start(epoch=epoch, total_epochs=epochs)
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
            batch_idx=batch_idx,
            loss=loss.item(),
            lr=sched.get_last_lr()[0],
            epoch=epoch,
        )
        time.sleep(0.01)  # so the live chart is fun to watch
    emit_epoch_end(epoch=epoch, metrics={"avg_loss": total / batches})
    path = f"/tmp/mlp_epoch{epoch}.pt"
    torch.save(model.state_dict(), path)
    emit_checkpoint_saved(checkpoint_path=path, epoch=epoch, step=step)
emit_training_end()
