"""Configurations for training a small draft LM for two-model speculative decoding.

`smollm2_draft` is the real run (SmolLM2-135M-Instruct target, a 2-layer draft started from the
target's first two layers). `tiny_test` trains against a tiny random target that needs no files,
for tests and CPU smoke runs.
"""

from __future__ import annotations

import dataclasses

from configs.train_loop import TrainLoop
from models.config import ModelConfig
from models.errors import SpecjaxError

TINY_TARGET_NAME = "tiny-random"
# A random Llama small enough to train in seconds on CPU (D width, L layers, Q/K heads, H head dim).
TINY_TARGET = ModelConfig(
    model_type="llama", V=128, D=32, L=4, F=64, Q=4, K=2, H=8, max_positions=256
)


@dataclasses.dataclass(frozen=True)
class DraftLMTrain(TrainLoop):
    """A TrainLoop plus what defines the draft.

    Attributes:
    target: the model to distill: "smollm2" (embedded), a GGUF/HF path, or "tiny-random".
    draft_layers: depth of the draft; width, heads and vocab are the target's.
    init_from_target_layers: start from the target's first `draft_layers` layers and final norm
      (a truncated target is a far better start than random: DESIGN "Performance model").
    draft_vocab: keep only the head columns of this many most frequent answer tokens (0: the
      full vocabulary); see train_heads/draft_lm.py.
    """

    target: str = "smollm2"
    draft_layers: int = 2
    init_from_target_layers: bool = True
    draft_vocab: int = 0

    def validate(self) -> None:
        super().validate()
        if self.draft_vocab < 0:
            raise SpecjaxError(
                f"--draft_vocab must be >= 0 (0: full vocabulary), got {self.draft_vocab}"
            )


# The real run for the embedded default, sized for one 2-core CPU: the target's own answers that
# ship with the project (train_heads/answers/smollm2-135m-instruct: chat, 204,404 answer tokens, and
# cpython, 410,172; the draft LM reads tokens only, so no data pass is needed), 1200 steps of
# 8 x 384 tokens (42 minutes on 2 cores). The draft shipped in models/drafts came from this recipe
# (2026-12-06); the one before it read the chat answers alone for 700 steps. On a TPU/GPU raise
# steps and batch_size: nothing else changes.
smollm2_draft = DraftLMTrain(
    target="smollm2",
    data_dir=(
        "train_heads/answers/smollm2-135m-instruct/chat,"
        "train_heads/answers/smollm2-135m-instruct/cpython"
    ),
    out_dir="runs/smollm2_draft",
    steps=1200,
    batch_size=8,
    seq_len=384,
    lr=5e-4,
    warmup_steps=40,
    eval_every=100,
    save_every=100,
    eval_examples=64,
    draft_vocab=8192,
)

tiny_test = DraftLMTrain(
    target=TINY_TARGET_NAME,
    draft_layers=1,
    data_dir="data/selfdistill_tiny",
    out_dir="runs/tiny_test",
    steps=40,
    batch_size=4,
    seq_len=48,
    lr=3e-3,
    warmup_steps=5,
    eval_every=20,
    save_every=20,
    log_every=5,
    eval_examples=4,
)
