"""Hyperparameters shared by every optax training run (draft LM now, learned heads later).

A frozen dataclass: hashable, printable, and each field doubles as a `--flag` of
`python -m train_heads.train`. `validate` is the boundary check that turns a bad value into one
SpecjaxError line before any array is built.
"""

from __future__ import annotations

import dataclasses

from models.errors import SpecjaxError

DTYPES = ("float32", "bfloat16")


@dataclasses.dataclass(frozen=True)
class TrainLoop:
    """Attributes:
    data_dir: where `python -m train_heads.make_data` wrote its shards; several directories
      are comma-separated ("data/a,data/b").
    out_dir: checkpoints/, metrics.jsonl and final/ go here.
    steps: optimizer steps in total (the cosine schedule ends there).
    batch_size, seq_len: examples per step and tokens per example (longer ones are cut).
    lr, warmup_steps, weight_decay, clip_norm: AdamW with linear warmup, cosine decay to 10 %,
      and global-norm clipping.
    eval_every, save_every, log_every: in steps; eval and save also run at the last step.
    eval_examples: held out from the data (a fixed, seeded split) for eval.
    max_to_keep: checkpoints kept on disk (orbax deletes the oldest).
    seed: data split, data order and fresh initialisation.
    dtype: "float32" or "bfloat16": the frozen target's and the forward's dtype (the optimizer
      keeps float32 master weights).
    """

    data_dir: str = "data/selfdistill"
    out_dir: str = "runs/draft_lm"
    steps: int = 1000
    batch_size: int = 16
    seq_len: int = 512
    lr: float = 3e-4
    warmup_steps: int = 50
    weight_decay: float = 0.01
    clip_norm: float = 1.0
    eval_every: int = 100
    save_every: int = 100
    log_every: int = 10
    eval_examples: int = 64
    max_to_keep: int = 3
    seed: int = 0
    dtype: str = "float32"

    def validate(self) -> None:
        """Raises SpecjaxError (one line) for the first bad value."""
        positive = ("steps", "batch_size", "eval_every", "save_every", "log_every", "max_to_keep")
        for name in positive:
            if getattr(self, name) < 1:
                raise SpecjaxError(f"--{name} must be >= 1, got {getattr(self, name)}")
        if self.seq_len < 2:
            raise SpecjaxError(f"--seq_len must be >= 2, got {self.seq_len}")
        if not self.lr > 0:
            raise SpecjaxError(f"--lr must be > 0, got {self.lr}")
        if not 0 <= self.warmup_steps < self.steps:
            raise SpecjaxError(
                f"--warmup_steps must be in [0, steps={self.steps}), got {self.warmup_steps}"
            )
        if self.weight_decay < 0 or self.clip_norm <= 0:
            raise SpecjaxError("--weight_decay must be >= 0 and --clip_norm > 0")
        if self.eval_examples < 1:
            raise SpecjaxError(f"--eval_examples must be >= 1, got {self.eval_examples}")
        if self.dtype not in DTYPES:
            raise SpecjaxError(f"unknown --dtype {self.dtype!r} (choose from {', '.join(DTYPES)})")


# The loop the hidden-state heads' smoke configs share: a few steps on the tiny random target's
# self-distilled data (`make_data --target=tiny-random --hidden`).
TINY_HEAD_LOOP = dict(
    data_dir="data/selfdistill_tiny_hidden",
    steps=60,
    batch_size=4,
    seq_len=48,
    lr=1e-2,
    warmup_steps=6,
    weight_decay=0.0,
    eval_every=30,
    save_every=30,
    log_every=10,
    eval_examples=4,
)

# And the loop their recipes for the embedded default share, on its data with hidden states: the
# original ReDrafter/Medusa optimizer settings (AdamW at lr 1e-3, no weight decay; each config
# sets its steps and 10 % warmup), 8 rows of up to 512 tokens, 64 held-out rows, on both answer
# sets with their hidden states (the shipped chat and cpython answers, README "Training").
SMOLLM2_HEAD_LOOP = dict(
    data_dir="data/selfdistill_hidden,data/selfdistill_hidden2",
    batch_size=8,
    seq_len=512,
    lr=1e-3,
    weight_decay=0.0,
    eval_examples=64,
)
