"""Configurations for training SPRINTER's acceptance verifier (`train_heads.sprinter`): a
logistic classifier on a draft model's hidden states, labelled by the target. The data are the
heads' self-distilled answers (`make_data`); the target's hidden states in them (`--hidden`) give
its p without running it again."""

from __future__ import annotations

import dataclasses

from configs.draft_lm import TINY_TARGET_NAME
from configs.train_loop import TINY_HEAD_LOOP, TrainLoop
from models.errors import SpecjaxError


@dataclasses.dataclass(frozen=True)
class SprinterTrain(TrainLoop):
    """A TrainLoop plus what defines the verifier.

    Attributes:
    target: the model whose answers and hidden states the data holds ("smollm2", a path, or
      "tiny-random").
    draft: the draft model the verifier judges: "" (the draft shipped for the target), "self:N",
      a trained draft directory or a checkpoint.
    temperatures: comma-separated sampling temperatures, one classifier each (decoding uses the
      one nearest its temperature). At 0 the label is "the draft's argmax is the target's"; above
      0 it is the chance that a draw x from the draft's q has q(x) <= p(x) (the paper's label,
      averaged over x instead of sampled once).
    with_token: the variant that also reads the candidate token's embedding (labelled on one
      drawn candidate per position above temperature 0).
    """

    target: str = "smollm2"
    draft: str = ""
    temperatures: str = "0.0,0.7"
    with_token: bool = False

    def temperature_list(self) -> list[float]:
        try:
            temps = [float(t) for t in self.temperatures.split(",") if t.strip()]
        except ValueError:
            raise SpecjaxError(
                f"--temperatures must be comma-separated numbers, got {self.temperatures!r}"
            ) from None
        return temps

    def validate(self) -> None:
        super().validate()
        temps = self.temperature_list()
        if not temps or any(t < 0 for t in temps) or len(set(temps)) != len(temps):
            raise SpecjaxError(
                f"--temperatures must be distinct numbers >= 0, got {self.temperatures!r}"
            )


# The verifier is F + 1 numbers per temperature, so the loop is short: large batches of single
# positions, the released code's Adam lr 5e-4 (cosine here, 5 % warmup), no weight decay.
SPRINTER_LOOP = dict(
    batch_size=4096,
    lr=5e-4,
    weight_decay=0.0,
    clip_norm=10.0,
)

tiny_sprinter = SprinterTrain(
    **{
        **TINY_HEAD_LOOP,
        **SPRINTER_LOOP,
        "batch_size": 64,
        "lr": 1e-2,
    },
    target=TINY_TARGET_NAME,
    draft="self:1",
    out_dir="runs/tiny_sprinter",
)

smollm2_sprinter = SprinterTrain(
    **SPRINTER_LOOP,
    target="smollm2",
    data_dir="data/selfdistill_hidden",
    out_dir="runs/smollm2_sprinter",
    seq_len=512,
    steps=1500,
    warmup_steps=75,
    eval_every=100,
    save_every=100,
    log_every=20,
    eval_examples=64,
)
