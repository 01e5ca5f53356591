"""A PyTorch Lightning fit reported to Stepwatch, with its logger and its callback.

    cargo xtask run                      # relay + dashboard on http://127.0.0.1:8080
    pip install torch lightning          # any build; CPU is fine
    PYTHONPATH=clients/python/src python examples/lightning_loop.py

``StepwatchLogger`` receives what the module logs with ``self.log`` and the
hyperparameters; ``StepwatchCallback`` adds every batch's loss and learning rate,
checkpoints, and obeys the dashboard (pause, resume, stop). Either works alone too.
"""

import os
import tempfile
import time

import torch
from torch import nn

try:
    import lightning.pytorch as pl
except ImportError:  # the older package name
    import pytorch_lightning as pl

from stepwatch.integrations.lightning import StepwatchCallback, StepwatchLogger


class Classifier(pl.LightningModule):
    def __init__(self, lr: float = 3e-3, hidden: int = 64) -> None:
        super().__init__()
        self.save_hyperparameters()  # becomes the run's config
        self.net = nn.Sequential(nn.Linear(32, hidden), nn.ReLU(), nn.Linear(hidden, 1))
        self.loss = nn.BCEWithLogitsLoss()

    def training_step(self, batch: tuple, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = self.loss(self.net(x), y)
        self.log("train_loss", loss, on_step=True, on_epoch=True)
        time.sleep(0.01)  # so the live chart is fun to watch
        return loss

    def validation_step(self, batch: tuple, batch_idx: int) -> None:
        x, y = batch
        logits = self.net(x)
        self.log("val_loss", self.loss(logits, y))
        self.log("val_acc", ((logits > 0).float() == y).float().mean())

    def configure_optimizers(self) -> dict:
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=self.trainer.max_epochs * 64)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


torch.manual_seed(0)
x = torch.randn(4096, 32)
y = (x[:, :4].sum(dim=1, keepdim=True) > 0).float()
train = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=64)
val = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x[:512], y[:512]), batch_size=256)

run = time.strftime("lightning-%Y%m%d-%H%M%S")
trainer = pl.Trainer(
    max_epochs=5,
    accelerator="cpu",
    default_root_dir=os.path.join(tempfile.gettempdir(), "stepwatch-examples"),
    logger=StepwatchLogger(run=run),  # url: STEPWATCH_URL or http://127.0.0.1:8080
    callbacks=[StepwatchCallback()],
    enable_progress_bar=False,
    log_every_n_steps=10,
)
trainer.fit(Classifier(), train, val)
