"""A fingerprint that names a target model by its weights, not its file.

Data shards and trained drafts record it, so a draft trained for one target is never silently
paired with another (a draft shares the target's embedding and head, DESIGN "The methods"). The
hash is taken over bfloat16-rounded embedding rows, so the same target loaded in float32 or
bfloat16 has the same fingerprint.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import jax
import ml_dtypes
import numpy as np

from models.config import ModelConfig
from models.errors import SpecjaxError
from models.transformer import ModelParams

FINGERPRINT_ROWS = 64  # embedding rows hashed, spread evenly over the vocabulary


def target_fingerprint(config: ModelConfig, params: ModelParams) -> dict:
    """Shapes plus a sha256 of a spread of embedding rows: identifies the weights, not the file.

    The depth is left out, so a draft (the target's embedding on fewer layers) has its target's
    fingerprint.
    """
    V = config.V
    rows = np.linspace(0, V - 1, num=min(FINGERPRINT_ROWS, V)).astype(np.int64)
    sample = np.asarray(jax.device_get(params.embed[rows]).astype(np.float32))
    digest = hashlib.sha256(sample.astype(ml_dtypes.bfloat16).view(np.uint16).tobytes())
    return {
        "model_type": config.model_type,
        "V": config.V,
        "D": config.D,
        "tie_word_embeddings": config.tie_word_embeddings,
        "embed_sha256": digest.hexdigest()[:16],
    }


def check_fingerprint(recorded: dict, config: ModelConfig, params: ModelParams, what: str) -> None:
    """Raises one SpecjaxError line when `what` was made for a different target."""
    actual = target_fingerprint(config, params)
    if recorded != actual:
        diff = [k for k in sorted(set(recorded) | set(actual)) if recorded.get(k) != actual.get(k)]
        raise SpecjaxError(
            f"{what} was made for a different target (mismatch in {', '.join(diff)}: "
            f"recorded {[recorded.get(k) for k in diff]}, this target {[actual.get(k) for k in diff]})"
        )


def dir_trained_for(
    root: Path, config_file: str, config: ModelConfig, params: ModelParams, accept=None
):
    """The first subdirectory of `root` whose `config_file` records this target's fingerprint
    (under "target" / "fingerprint") and, with `accept`, whose config it accepts, or None: how
    shipped drafts and heads find their target."""
    import json

    actual = None
    for d in sorted(p for p in root.iterdir() if (p / config_file).is_file()):
        try:
            meta = json.loads((d / config_file).read_text())
            recorded = meta["target"]["fingerprint"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if accept is not None and not accept(meta):
            continue
        if recorded.get("V") != config.V or recorded.get("D") != config.D:
            continue  # cheap check before hashing the embedding
        actual = actual or target_fingerprint(config, params)
        if recorded == actual:
            return d
    return None


def draft_fingerprint(config: ModelConfig, params: ModelParams) -> dict:
    """Names a draft model by its own weights: a trained draft shares its target's embedding (so
    `target_fingerprint` cannot tell two drafts apart), so this hashes its layers, final norm and
    head columns instead. What SPRINTER's verifier records: it reads this draft's hidden states."""
    h = hashlib.sha256()
    leaves = [params.layers, params.final_norm, params.lm_head, params.head_token_ids]
    for leaf in jax.tree.leaves(leaves):
        flat = np.asarray(jax.device_get(leaf)).reshape(-1)
        sample = flat[:: max(1, flat.size // 4096)].astype(np.float32)
        h.update(sample.astype(ml_dtypes.bfloat16).view(np.uint16).tobytes())
    return {"L": config.L, "D": config.D, "V": config.V, "weights_sha256": h.hexdigest()[:16]}
