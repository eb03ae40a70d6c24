"""Configurations for training ReDrafter's recurrent head (`train_heads.recurrent_head`).

The recipe starts from the original's `cmd/train.sh`: AdamW at lr 1e-3, cosine decay with 10 %
warmup, no weight decay. The data must carry the target's hidden states (`make_data --hidden`).
"""

from __future__ import annotations

import dataclasses

from configs.draft_lm import TINY_TARGET_NAME
from configs.train_loop import SMOLLM2_HEAD_LOOP, TINY_HEAD_LOOP, TrainLoop
from models.errors import SpecjaxError


@dataclasses.dataclass(frozen=True)
class RecurrentHeadTrain(TrainLoop):
    """A TrainLoop plus what defines the head.

    Attributes:
    target: the model whose hidden states the data holds: "smollm2", a GGUF/HF path, or
      "tiny-random".
    draft_length: L, the RNN steps trained at once (step i predicts token t+2+i).
    num_res: residual blocks on [h, s].
    head_vocab: keep only this many most frequent answer tokens as head columns (0: all).
    kl_weight: weight of each step's soft cross-entropy against the target's top-k distribution
      (0: off, the original's hard labels alone; > 0 needs data made with `--topk`).
    """

    target: str = "smollm2"
    draft_length: int = 4
    num_res: int = 2
    head_vocab: int = 0
    kl_weight: float = 0.0

    def validate(self) -> None:
        super().validate()
        if self.draft_length < 1 or self.num_res < 0 or self.head_vocab < 0:
            raise SpecjaxError("--draft_length must be >= 1, --num_res and --head_vocab >= 0")
        if self.kl_weight < 0:
            raise SpecjaxError(f"--kl_weight must be >= 0, got {self.kl_weight}")


tiny_redrafter = RecurrentHeadTrain(
    target=TINY_TARGET_NAME,
    out_dir="runs/tiny_redrafter",
    draft_length=3,
    **TINY_HEAD_LOOP,
)


# The recipe for the embedded default. Its data: the shipped answers with their hidden states
# added, `make_data --from_data=train_heads/answers/smollm2-135m-instruct/chat --hidden
# --out=data/selfdistill_hidden` and the cpython answers the same way into data/selfdistill_hidden2
# (README "Training"; 603,757 scored tokens). The original's optimizer settings (AdamW, lr 1e-3,
# cosine with 10 % warmup, no weight decay), L = 5 trained steps (the bench sweeps L up to 5), and a
# 4096-token head, which keeps the saved head under 20 MB in bfloat16 (README "Training").
# seq_len 512 holds every example whole (prompts up to 320 tokens + 192); the rows are then cropped
# to their answers (`answer_windows`), so a step computes about 8 x 208 positions, and 1200 steps
# see the data about 3 times.
smollm2_redrafter = RecurrentHeadTrain(
    target="smollm2",
    out_dir="runs/smollm2_redrafter",
    steps=1200,
    warmup_steps=120,
    eval_every=100,
    save_every=100,
    draft_length=5,
    head_vocab=4096,
    **SMOLLM2_HEAD_LOOP,
)
