"""The seed's trainer, no framework needed: a simulated loss, emitted exactly as the seed does.

STEPWATCH_URL=http://127.0.0.1:8080 PYTHONPATH=clients/python/src python examples/seed_trainer.py
"""

import math
import random
import time

from stepwatch import (
    emit_batch_end,
    emit_checkpoint_saved,
    emit_epoch_end,
    emit_epoch_start,
    emit_training_end,
    emit_training_start,
)

total_epochs, total_batches = 10, 500
emit_training_start(total_epochs=total_epochs)
step = 0
for epoch in range(1, total_epochs + 1):
    emit_epoch_start(epoch=epoch, total_epochs=total_epochs)
    losses = []
    for batch_idx in range(total_batches):
        step += 1
        loss = 2.0 + 3.0 * math.exp(-step / 1500) + random.uniform(-0.1, 0.1)
        lr = 1e-4 * 0.5 * (1 + math.cos(math.pi * step / (total_epochs * total_batches)))
        losses.append(loss)
        emit_batch_end(batch_idx=batch_idx, loss=loss, lr=lr)
        time.sleep(0.005)
    emit_epoch_end(epoch=epoch, metrics={"avg_loss": sum(losses) / len(losses)})
    emit_checkpoint_saved(checkpoint_path=f"./epoch{epoch}_step{step}.pt", epoch=epoch, step=step)
emit_training_end()
