"""Drafters: one small file per method, registered here.

A drafter is a frozen (hashable) dataclass, a static argument of the jitted loop, with
`block_size` (T: root + draft slots) and three pure methods:
  init(params, prompt_BP, prompt_len_B, cache_len) -> state
  propose(params, state, ctx: DraftContext, keys_B, sampling) -> (Candidates, state)
  update(params, state, verified: Verified) -> state
Its arrays (`params`, e.g. draft-model weights) travel separately as a traced pytree.
"""

from __future__ import annotations

from typing import Any

from models.config import ModelConfig
from models.transformer import ModelParams
from specjax.drafters.draft_model import DraftModelDrafter, self_draft
from specjax.drafters.ngram import NgramDrafter
from specjax.errors import SpecjaxError

# Every method the CLI knows; the ones built so far are AVAILABLE_METHODS.
METHODS = (
    "vanilla",
    "sd",
    "ngram",
    "ouroboros",
    "lookahead",
    "redrafter",
    "ctc",
    "medusa",
    "sprinter",
)
AVAILABLE_METHODS = ("vanilla", "sd", "ngram")
SPECULATIVE_METHODS = ("sd", "ngram")


def parse_self_draft(spec: str, target_layers: int) -> int:
    """`self:N` -> N, checked against the target's depth."""
    try:
        n = int(spec.split(":", 1)[1])
    except ValueError:
        raise SpecjaxError(f"--draft={spec}: expected self:N with an integer N") from None
    if not 1 <= n < target_layers:
        raise SpecjaxError(f"--draft={spec}: N must be in [1, {target_layers - 1}]")
    return n


def make_drafter(
    method: str,
    config: ModelConfig,
    params: ModelParams,
    *,
    draft: Any = None,
    gamma: int = 4,
    max_ngram: int = 3,
    num_tokens: int = 10,
    dtype: str = "float32",
) -> tuple[Any, Any]:
    """(drafter, draft_params) for a method; (None, None) for vanilla.

    `draft` (for sd) is None (the shipped trained draft for this target, see `models.drafts`),
    "self:N", a directory written by `train_heads.draft_lm.save_draft`, a
    path or name for `models.loading.load_model`, or a loaded `Model`. Its vocabulary must be the
    target's.
    """
    if method == "vanilla":
        return None, None
    if method == "ngram":
        if max_ngram < 1 or num_tokens < 1:
            raise SpecjaxError("ngram needs max_ngram >= 1 and num_tokens >= 1")
        return NgramDrafter(max_ngram=max_ngram, num_tokens=num_tokens), None
    if method == "sd":
        if gamma < 1:
            raise SpecjaxError(f"gamma must be >= 1, got {gamma}")
        if draft is None or draft == "":
            from models.drafts import shipped_draft_for

            shipped = shipped_draft_for(config, params)
            if shipped is None:
                raise SpecjaxError(
                    "--method=sd needs --draft for this target (no shipped draft matches it): a "
                    "checkpoint with the target's vocabulary, a trained draft directory, or self:N"
                )
            draft = str(shipped)
        if isinstance(draft, str) and draft.startswith("self:"):
            draft_config, draft_params = self_draft(
                config, params, parse_self_draft(draft, config.L)
            )
        else:
            if isinstance(draft, str):
                from models.loading import Model, load_model
                from train_heads.draft_lm import is_draft_dir, load_draft

                if is_draft_dir(draft):  # a trained draft: layers only, embedding from the target
                    draft = load_draft(draft, Model(config, params, None, "target"))
                else:
                    draft = load_model(draft, dtype, tokenizer=False)
            draft_config, draft_params = draft.config, draft.params
        if draft_config.V != config.V:
            raise SpecjaxError(
                f"draft vocabulary ({draft_config.V} tokens) differs from the target's ({config.V})"
            )
        return DraftModelDrafter(config=draft_config, gamma=gamma), draft_params
    raise SpecjaxError(f"method {method} is not available yet")
