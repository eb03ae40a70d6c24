"""Configurations for training Medusa's heads (`train_heads.medusa_heads`, Medusa-1: the target
frozen). The data must carry the target's hidden states (`make_data --hidden`)."""

from __future__ import annotations

import dataclasses

from configs.draft_lm import TINY_TARGET_NAME
from configs.train_loop import SMOLLM2_HEAD_LOOP, TINY_HEAD_LOOP, TrainLoop
from models.errors import SpecjaxError


@dataclasses.dataclass(frozen=True)
class MedusaTrain(TrainLoop):
    """A TrainLoop plus what defines the heads.

    Attributes:
    target: the model whose hidden states the data holds: "smollm2", a GGUF/HF path, or
      "tiny-random".
    num_heads: K; head k predicts token t+2+k.
    head_vocab: keep only this many most frequent answer tokens as head columns (0: all).
    decay: head k's loss weight is decay**k (Medusa-2's 0.8; 1.0 is a plain sum).
    tree_ranks: ranks per head whose held-out accuracy is measured for the tree builder.
    """

    target: str = "smollm2"
    num_heads: int = 4
    head_vocab: int = 0
    decay: float = 0.8
    tree_ranks: int = 10

    def validate(self) -> None:
        super().validate()
        if self.num_heads < 1 or self.head_vocab < 0 or self.tree_ranks < 1:
            raise SpecjaxError("--num_heads and --tree_ranks must be >= 1, --head_vocab >= 0")
        if not 0 < self.decay <= 1:
            raise SpecjaxError(f"--decay must be in (0, 1], got {self.decay}")


tiny_medusa = MedusaTrain(
    target=TINY_TARGET_NAME,
    out_dir="runs/tiny_medusa",
    num_heads=3,
    tree_ranks=4,
    **TINY_HEAD_LOOP,
)


# The recipe for the embedded default, on the same data as smollm2_redrafter: K = 4 heads with
# 3072 columns each (8.4 M parameters, 17 MB in bfloat16, under the 20 MB the package ships), the
# original's optimizer settings (AdamW, lr 1e-3, cosine with 10 % warmup, no weight decay).
smollm2_medusa = MedusaTrain(
    target="smollm2",
    out_dir="runs/smollm2_medusa",
    steps=1000,
    warmup_steps=100,
    eval_every=100,
    save_every=100,
    num_heads=4,
    head_vocab=3072,
    **SMOLLM2_HEAD_LOOP,
)
