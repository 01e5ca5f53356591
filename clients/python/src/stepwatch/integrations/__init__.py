"""Optional framework integrations. None of them is imported here, and no framework is a
dependency of the SDK: each module imports its framework when you import the module.

- :mod:`stepwatch.integrations.huggingface`: ``StepwatchCallback`` for the Hugging Face
  ``transformers.Trainer`` (``pip install transformers``).
- :mod:`stepwatch.integrations.lightning`: ``StepwatchCallback`` and ``StepwatchLogger``
  for PyTorch Lightning (``pip install lightning``, or the older ``pytorch_lightning``).
- :mod:`stepwatch.tensorboard`: a ``SummaryWriter`` stand-in that needs no framework.
"""
