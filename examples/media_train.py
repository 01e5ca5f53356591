"""Media in a small PyTorch loop: reconstructions as images, a text sample, gradient and
weight histograms. A tiny convolutional autoencoder learns synthetic 16x16 shapes on
the CPU in about 15 s.

    cargo xtask run                      # relay + dashboard on http://127.0.0.1:8080
    PYTHONPATH=clients/python/src python examples/media_train.py

Open the run in the dashboard: the loss chart, the ``reconstructions`` images (input
above, output below, every ``MEDIA_IMAGE_EVERY`` steps), the ``samples`` text (a
prompt and its completion), and the ``gradients/…`` and ``parameters/…`` histograms
that ``stepwatch.watch(model, log="all", every=10)`` sends.

Options (environment): ``MEDIA_STEPS`` (default 300), ``MEDIA_IMAGE_EVERY`` (25),
``MEDIA_STEP_S`` (extra seconds per step, default 0.03), ``STEPWATCH_URL`` /
``STEPWATCH_RUN`` as for every script.
"""

import os
import time

import torch
from torch import nn

import stepwatch

steps = int(os.environ.get("MEDIA_STEPS", "300"))
image_every = int(os.environ.get("MEDIA_IMAGE_EVERY", "25"))
pause_s = float(os.environ.get("MEDIA_STEP_S", "0.03"))

stepwatch.connect(run=os.environ.get("STEPWATCH_RUN") or time.strftime("media-%Y%m%d-%H%M%S"))
torch.manual_seed(0)
torch.set_num_threads(1)  # a model this small runs fastest on one thread (no spinning)


def shapes(n: int) -> torch.Tensor:
    """``n`` 16x16 gray images: a bright square or disc at a random place and size."""
    yy, xx = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
    cx, cy = torch.randint(4, 12, (2, n, 1, 1)).float()
    r = torch.randint(2, 5, (n, 1, 1)).float()
    disc = ((xx - cx) ** 2 + (yy - cy) ** 2 <= r**2).float()
    square = (((xx - cx).abs() <= r) & ((yy - cy).abs() <= r)).float()
    pick = torch.rand(n, 1, 1) < 0.5
    return torch.where(pick, disc, square).unsqueeze(1)  # N, 1, 16, 16


model = nn.Sequential(
    nn.Conv2d(1, 8, 3, stride=2, padding=1),  # 8x8
    nn.ReLU(),
    nn.Conv2d(8, 16, 3, stride=2, padding=1),  # 4x4
    nn.ReLU(),
    nn.ConvTranspose2d(16, 8, 4, stride=2, padding=1),  # 8x8
    nn.ReLU(),
    nn.ConvTranspose2d(8, 1, 4, stride=2, padding=1),  # 16x16
    nn.Sigmoid(),
)
opt = torch.optim.Adam(model.parameters(), lr=3e-3)
loss_fn = nn.BCELoss()
stepwatch.watch(model, log="all", every=10)
fixed = shapes(8)  # the same inputs each time, so the images show progress

stepwatch.emit_training_start(
    total_epochs=1,
    total_batches=steps,
    config={"model": "conv autoencoder", "lr": 3e-3, "batch_size": 32, "steps": steps},
)
try:
    for step in range(1, steps + 1):
        x = shapes(32)
        loss = loss_fn(model(x), x)
        opt.zero_grad()
        loss.backward()
        opt.step()
        stepwatch.emit_batch_end(batch_idx=step - 1, loss=loss.item(), lr=3e-3, epoch=1)
        if step % image_every == 0 or step == 1:
            with torch.no_grad():
                out = model(fixed)
            # inputs in the top row, reconstructions below: one 1x32x128 CHW tensor
            grid = torch.cat([torch.cat(list(fixed), 2), torch.cat(list(out), 2)], 1)
            stepwatch.log_image("reconstructions", grid, caption=f"step {step}: input / output")
            err = (out - fixed).abs().mean().item()
            stepwatch.log_text(
                "samples",
                prompt=f"How well does the autoencoder reconstruct at step {step}?",
                completion=f"Mean absolute error {err:.4f}, loss {loss.item():.4f}.",
            )
        time.sleep(pause_s)
except KeyboardInterrupt:  # a Stop from the dashboard, or Ctrl-C
    print("stopped early")
stepwatch.emit_training_end()
