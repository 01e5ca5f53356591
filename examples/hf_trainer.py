"""A Hugging Face ``Trainer`` run reported to Stepwatch: one callback, nothing else changes.

    cargo xtask run                      # relay + dashboard on http://127.0.0.1:8080
    pip install torch transformers accelerate   # any build; CPU is fine
    PYTHONPATH=clients/python/src python examples/hf_trainer.py

The model is a tiny BERT built from a config (nothing is downloaded) that learns whether
a sequence's first token is even. Stop it from the dashboard's Stop button: the Trainer
saves a checkpoint and ends, and the run shows as stopped.
"""

import os
import tempfile
import time

import torch
from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments

from stepwatch.integrations.huggingface import StepwatchCallback

torch.manual_seed(0)


class EvenFirstToken(torch.utils.data.Dataset):
    """Random token sequences; the label is whether the first token is even."""

    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.tokens = torch.randint(0, 128, (n, 16), generator=g)

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.tokens[i], "labels": int(self.tokens[i, 0]) % 2}


config = BertConfig(
    vocab_size=128,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=64,
    max_position_embeddings=32,
    num_labels=2,
)
run = time.strftime("hf-bert-%Y%m%d-%H%M%S")
args = TrainingArguments(
    output_dir=os.path.join(tempfile.gettempdir(), "stepwatch-examples", run),
    run_name=run,
    num_train_epochs=3,
    per_device_train_batch_size=16,
    per_device_eval_batch_size=64,
    learning_rate=2e-3,
    warmup_steps=20,
    logging_steps=5,
    eval_strategy="steps",
    eval_steps=50,
    save_steps=100,
    save_total_limit=2,
    report_to=[],  # Stepwatch is the callback below
    use_cpu=True,
    disable_tqdm=True,
)
trainer = Trainer(
    model=BertForSequenceClassification(config),
    args=args,
    train_dataset=EvenFirstToken(2048, seed=1),
    eval_dataset=EvenFirstToken(256, seed=2),
    callbacks=[StepwatchCallback(run=run)],  # url: STEPWATCH_URL or http://127.0.0.1:8080
)
trainer.train()
