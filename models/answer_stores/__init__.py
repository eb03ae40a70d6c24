"""Answer stores shipped inside the package (`models.answer_store`), found by their target.

`--answer_store=shipped` uses the store here whose recorded target fingerprint matches the loaded
target. The default target's was built by `python -m train_heads.answer_store` from the three
answer sets in `train_heads/answers/smollm2-135m-instruct/` (README, Performance).
"""

from __future__ import annotations

from pathlib import Path

STORES_DIR = Path(__file__).resolve().parent


def shipped_answer_store_for(config, params) -> Path | None:
    """The shipped answer store made for this target, or None."""
    from models.answer_store import CONFIG_FILE
    from models.fingerprint import dir_trained_for

    return dir_trained_for(STORES_DIR, CONFIG_FILE, config, params)
