"""Configurations for training the CTC drafter's module (`train_heads.ctc_draft`; the target
frozen). The data must carry the target's hidden states (`make_data --hidden`)."""

from __future__ import annotations

import dataclasses

from configs.draft_lm import TINY_TARGET_NAME
from configs.train_loop import SMOLLM2_HEAD_LOOP, TINY_HEAD_LOOP, TrainLoop
from models.errors import SpecjaxError


@dataclasses.dataclass(frozen=True)
class CTCTrain(TrainLoop):
    """A TrainLoop plus what defines the module and its loss.

    Attributes:
    target: the model whose hidden states the data holds: "smollm2", a GGUF/HF path, or
      "tiny-random".
    head_vocab: keep only this many most frequent answer tokens as LM-head columns (0: all).
    ctc_weight: c_w, the CTC term's weight (0.01, the released code's default; 0 trains the
      EAGLE-1 drafter, which then drafts without blanks or collapse).
    frames: frames drafted per step, the tree's depth (`chain_rank_accuracy` measures this many).
    tree_ranks: ranks per frame whose held-out accuracy is measured for the tree builder.
    rollout_frames: frames trained per position on the module's own features (1: frame 1 alone,
      the released code's loss; up to `frames`: EAGLE-3's training-time test,
      `train_heads.ctc_draft.rollout_features`).
    token_init: how fc's token rows start: "small" (random at the layers' 0.02) or "matched"
      (the token's embedding projected at the hidden state's scale, `init_ctc_head`).
    """

    target: str = "smollm2"
    head_vocab: int = 0
    ctc_weight: float = 0.01
    frames: int = 4
    tree_ranks: int = 10
    rollout_frames: int = 1
    token_init: str = "small"

    def validate(self) -> None:
        super().validate()
        if self.head_vocab < 0 or self.frames < 1 or self.tree_ranks < 1:
            raise SpecjaxError("--frames and --tree_ranks must be >= 1, --head_vocab >= 0")
        if not 1 <= self.rollout_frames <= self.frames:
            raise SpecjaxError(
                f"--rollout_frames must be in [1, frames={self.frames}], got {self.rollout_frames}"
            )
        if self.token_init not in ("small", "matched"):
            raise SpecjaxError(f"--token_init must be small or matched, got {self.token_init!r}")
        if not self.ctc_weight >= 0:
            raise SpecjaxError(f"--ctc_weight must be >= 0, got {self.ctc_weight}")


tiny_ctc = CTCTrain(
    target=TINY_TARGET_NAME,
    out_dir="runs/tiny_ctc",
    frames=3,
    tree_ranks=4,
    **TINY_HEAD_LOOP,
)


# The recipe for the embedded default, on the same data as the other heads: 4096 head columns
# (the module itself is 4.2 M parameters, 8.5 MB in bfloat16; the embedding and the head columns
# are the target's), AdamW at lr 1e-3 with cosine decay and 10 % warmup (the released code's
# 3e-5 is for 800k steps at batch 1; this budget is 600 steps of 8 rows), no weight decay, and
# every frame trained on the module's own features (rollout_frames = frames = 4: drafted as at
# inference, frames 2-4 went from right 0.25, 0.17, 0.13 of the time to 0.50, 0.54, 0.58).
# Rows of up to 288 tokens cost about half of 512 and cut 0.05 % of the chat answers' tokens
# (0.4 % of the cpython set's). The shipped module was trained on the chat answers alone
# (`--data_dir=data/selfdistill_hidden`; README "Training a draft").
smollm2_ctc = CTCTrain(
    target="smollm2",
    out_dir="runs/smollm2_ctc",
    steps=600,
    warmup_steps=60,
    eval_every=100,
    save_every=100,
    head_vocab=4096,
    rollout_frames=4,
    **{**SMOLLM2_HEAD_LOOP, "seq_len": 288},
)
