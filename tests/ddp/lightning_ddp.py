"""A tiny Lightning fit under torchrun (strategy ddp, gloo, CPU) with the Stepwatch callback
and logger: the test expects one run reported once, with every rank in its world."""

import os
import tempfile

import lightning.pytorch as pl
import torch
from torch import nn

from stepwatch.integrations.lightning import StepwatchCallback, StepwatchLogger


class Tiny(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Linear(8, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.mse_loss(self.net(x), y)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)


x = torch.randn(512, 8)
data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, x[:, :1]), batch_size=16)
run = os.environ["DDP_TEST_RUN"]
pl.Trainer(
    max_steps=int(os.environ.get("DDP_STEPS", "30")),
    accelerator="cpu",
    devices=int(os.environ.get("LOCAL_WORLD_SIZE", "1")),
    strategy="ddp",
    default_root_dir=os.path.join(tempfile.gettempdir(), "stepwatch-ddp-lightning", run),
    logger=StepwatchLogger(run=run),
    callbacks=[StepwatchCallback()],
    enable_progress_bar=False,
    enable_checkpointing=False,
    log_every_n_steps=5,
).fit(Tiny(), data)
