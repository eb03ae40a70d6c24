"""Named configurations: `get_config(name)` returns a frozen dataclass (see each module)."""

from __future__ import annotations

from configs.ctc_draft import smollm2_ctc, tiny_ctc
from configs.draft_lm import smollm2_draft, tiny_test
from configs.medusa_heads import smollm2_medusa, tiny_medusa
from configs.recurrent_head import smollm2_redrafter, tiny_redrafter
from configs.sprinter import smollm2_sprinter, tiny_sprinter
from configs.train_loop import TrainLoop
from models.errors import SpecjaxError

CONFIGS = {
    "smollm2_draft": smollm2_draft,
    "tiny_test": tiny_test,
    "tiny_redrafter": tiny_redrafter,
    "smollm2_redrafter": smollm2_redrafter,
    "tiny_medusa": tiny_medusa,
    "smollm2_medusa": smollm2_medusa,
    "tiny_ctc": tiny_ctc,
    "smollm2_ctc": smollm2_ctc,
    "tiny_sprinter": tiny_sprinter,
    "smollm2_sprinter": smollm2_sprinter,
}


def get_config(name: str) -> TrainLoop:
    """The named config; an unknown name is a one-line SpecjaxError."""
    if name not in CONFIGS:
        raise SpecjaxError(f"unknown config {name!r} (choose from {', '.join(CONFIGS)})")
    return CONFIGS[name]
