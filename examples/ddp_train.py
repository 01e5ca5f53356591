"""Distributed data parallel on CPU (gloo), instrumented with Stepwatch like any script.

    torchrun --nproc_per_node=2 examples/ddp_train.py          # STEPWATCH_URL, else :8080

Every rank runs this same file and makes the same calls; Stepwatch makes the ranks one
run (named alike on every rank from torchrun's environment), sends the training events
from rank 0 only, and system samples, logs and errors from every rank. Pause, Stop and
Load from the dashboard act on every rank at the same step. Options (environment):
``DDP_STEPS`` (default 400), ``DDP_STEP_S`` (sleep per step, default 0.01),
``DDP_CKPT`` (where rank 0 saves the final checkpoint, default /tmp/ddp_final.pt),
``DDP_BACKEND`` (default gloo on CPU; ``nccl`` trains on ``cuda:LOCAL_RANK``).
"""

import logging
import os
import time

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

import stepwatch
from stepwatch import (
    emit_batch_end,
    emit_checkpoint_saved,
    emit_training_end,
    emit_training_start,
)

backend = os.environ.get("DDP_BACKEND", "gloo")
dist.init_process_group(backend)
rank, world = dist.get_rank(), dist.get_world_size()
device = torch.device(f"cuda:{os.environ.get('LOCAL_RANK', '0')}" if backend == "nccl" else "cpu")
stepwatch.connect()  # every rank: one run, from torchrun's environment
logging.warning("rank %d of %d ready", rank, world)  # in the run's log, tagged with the rank

steps = int(os.environ.get("DDP_STEPS", "400"))
pause_s = float(os.environ.get("DDP_STEP_S", "0.01"))
ckpt = os.environ.get("DDP_CKPT", "/tmp/ddp_final.pt")

torch.manual_seed(rank)
net = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 1)).to(device)
model = DDP(net, device_ids=[device.index] if device.type == "cuda" else None)
opt = torch.optim.SGD(model.parameters(), lr=0.05)


def load_checkpoint(path):
    model.module.load_state_dict(torch.load(path, map_location=device))


stepwatch.on_command("load_checkpoint", load_checkpoint)

emit_training_start(total_batches=steps, config={"world_size": world, "lr": 0.05})
step = 0
try:
    for step in range(1, steps + 1):
        x = torch.randn(64, 16, device=device)
        y = x[:, :1] * 2.0
        loss = nn.functional.mse_loss(model(x), y)
        opt.zero_grad()
        loss.backward()  # gradients all-reduced across the ranks
        opt.step()
        time.sleep(pause_s)
        emit_batch_end(batch_idx=step - 1, step=step, loss=loss.item())
        if stepwatch.should_stop():
            break
finally:
    if rank == 0:
        torch.save(model.module.state_dict(), ckpt)
        emit_checkpoint_saved(checkpoint_path=ckpt, step=step)
emit_training_end(status="stopped" if stepwatch.should_stop() else "completed")
dist.destroy_process_group()
