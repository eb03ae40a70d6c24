"""Trained drafts shipped inside the package, found by the target they were trained for.

`sd` with no `--draft` uses the shipped draft whose recorded target fingerprint matches the loaded
target (today: a 2-layer draft for the embedded SmolLM2-135M-Instruct, made by
`python -m train_heads.train --config=smollm2_draft`). Each subdirectory is a
`models.draft_lm.save_draft` output.
"""

from __future__ import annotations

from pathlib import Path

DRAFTS_DIR = Path(__file__).resolve().parent


def shipped_draft_for(config, params) -> Path | None:
    """The shipped draft directory made for this target, or None."""
    from models.draft_lm import CONFIG_FILE
    from models.fingerprint import dir_trained_for

    return dir_trained_for(DRAFTS_DIR, CONFIG_FILE, config, params)
