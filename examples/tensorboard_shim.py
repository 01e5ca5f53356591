"""TensorBoard-style logging sent to Stepwatch: change one import, nothing else.

    cargo xtask run                      # relay + dashboard on http://127.0.0.1:8080
    PYTHONPATH=clients/python/src python examples/tensorboard_shim.py

No framework needed: the "training" is simulated. In a real script only the import
changes; ``add_text``, ``add_image(s)`` and ``add_histogram`` reach the run's Samples
panel, and calls the shim does not know keep working (ignored).
"""

import math
import random
import time

# from torch.utils.tensorboard import SummaryWriter
from stepwatch.tensorboard import SummaryWriter

random.seed(0)
hparams = {"lr": 3e-4, "batch_size": 32, "optimizer": "adamw"}

# The run id is the log_dir's last part (or STEPWATCH_RUN).
with SummaryWriter(time.strftime("runs/tb-%Y%m%d-%H%M%S")) as writer:
    writer.add_hparams(hparams, {})  # first call: the run's config
    writer.add_text("notes", "simulated run, started from examples/tensorboard_shim.py")
    best = math.inf
    for step in range(1, 601):
        lr = hparams["lr"] * 0.5 * (1 + math.cos(math.pi * step / 600))
        loss = 2.5 * math.exp(-step / 200) + 0.3 + random.gauss(0, 0.05)
        writer.add_scalar("Loss/train", loss, step)  # the run's loss chart
        writer.add_scalar("lr", lr, step)
        if step % 100 == 0:
            val = loss + 0.1 + random.gauss(0, 0.02)
            writer.add_scalar("Loss/val", val, step)
            writer.add_scalars("accuracy", {"train": 1 - loss / 3, "val": 1 - val / 3}, step)
            writer.add_histogram("weights", [random.random() for _ in range(100)], step)
            best = min(best, val)
        time.sleep(0.01)  # so the live chart is fun to watch
    writer.add_hparams(hparams, {"hparam/best_val_loss": best})
