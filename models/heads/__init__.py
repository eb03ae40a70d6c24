"""Trained draft heads shipped inside the package, found by the target they were trained for.

`redrafter`, `medusa`, `ctc` and `sprinter` with no `--head` use the shipped head of their kind
whose recorded target fingerprint matches the loaded target (made by `python -m train_heads.train
--config=smollm2_redrafter` / `smollm2_medusa` / `smollm2_ctc` / `smollm2_sprinter`; SPRINTER's
verifier also records the draft it judges, the shipped draft). Each subdirectory is a
`models.head_file.save_head` output.
"""

from __future__ import annotations

from pathlib import Path

HEADS_DIR = Path(__file__).resolve().parent


def shipped_head_for(config, params, kind: str = "recurrent") -> Path | None:
    """The shipped head directory of this kind made for this target, or None."""
    from models.fingerprint import dir_trained_for
    from models.head_file import CONFIG_FILE

    return dir_trained_for(
        HEADS_DIR, CONFIG_FILE, config, params, accept=lambda meta: meta.get("kind") == kind
    )
