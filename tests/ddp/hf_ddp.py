"""A tiny Hugging Face Trainer under torchrun (DDP, gloo, CPU) with the Stepwatch callback:
the test expects one run reported once, with every rank in its world."""

import os
import tempfile

import torch
from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments

from stepwatch.integrations.huggingface import StepwatchCallback


class Tokens(torch.utils.data.Dataset):
    def __init__(self, n: int) -> None:
        g = torch.Generator().manual_seed(1)
        self.tokens = torch.randint(0, 64, (n, 8), generator=g)

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.tokens[i], "labels": int(self.tokens[i, 0]) % 2}


config = BertConfig(
    vocab_size=64,
    hidden_size=16,
    num_hidden_layers=1,
    num_attention_heads=2,
    intermediate_size=32,
    max_position_embeddings=16,
    num_labels=2,
)
run = os.environ["DDP_TEST_RUN"]
args = TrainingArguments(
    output_dir=os.path.join(tempfile.gettempdir(), "stepwatch-ddp-hf", run),
    run_name=run,
    max_steps=int(os.environ.get("DDP_STEPS", "30")),
    per_device_train_batch_size=8,
    logging_steps=5,
    save_strategy="no",
    report_to=[],
    use_cpu=True,
    disable_tqdm=True,
)
Trainer(
    model=BertForSequenceClassification(config),
    args=args,
    train_dataset=Tokens(512),
    callbacks=[StepwatchCallback(run=run)],
).train()
