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
from specjax.drafters.lookahead import LookaheadDrafter, LookaheadParams
from specjax.drafters.ngram import NgramDrafter
from specjax.drafters.ouroboros import OuroborosDrafter, OuroborosParams
from specjax.errors import SpecjaxError
from specjax.phrase_pool import PhrasePool, load_pool, merge_rows

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
AVAILABLE_METHODS = ("vanilla", "sd", "ngram", "ouroboros", "lookahead")
SPECULATIVE_METHODS = ("sd", "ngram", "ouroboros", "lookahead")


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
    phrase: Any = None,
    pool: Any = None,
) -> tuple[Any, Any]:
    """(drafter, draft_params) for a method; (None, None) for vanilla.

    `draft` (sd, ouroboros) is None (the shipped trained draft for this target, see
    `models.drafts`), "self:N", a directory written by `train_heads.draft_lm.save_draft`, a path or
    name for `models.loading.load_model`, or a loaded `Model`. Its vocabulary must be the target's.
    `phrase` (ouroboros, lookahead) is a `configs.phrase_drafting.PhraseDrafting` (default: the
    "chat" preset; ouroboros then takes its gamma from it) and `pool` a warm `PhrasePool` or the
    path of a saved one.
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
        draft_config, draft_params = _resolve_draft(draft, config, params, dtype, method)
        return DraftModelDrafter(config=draft_config, gamma=gamma), draft_params
    if method in ("ouroboros", "lookahead"):
        from configs.phrase_drafting import phrase_drafting

        phrase = phrase if phrase is not None else phrase_drafting("chat")
        phrase.validate()
        shape = dict(
            window=phrase.window,
            ngram=phrase.ngram,
            guess_set=phrase.guess_set,
            pool_capacity=phrase.pool_capacity,
            buckets=phrase.buckets,
        )
        warm = _resolve_pool(pool, (phrase.buckets, phrase.pool_capacity, phrase.ngram - 1))
        if method == "lookahead":
            return LookaheadDrafter(**shape), LookaheadParams(pool=warm)
        draft_config, draft_params = _resolve_draft(draft, config, params, dtype, method)
        drafter = OuroborosDrafter(
            config=draft_config, gamma=phrase.gamma, topk_suffixes=phrase.topk_suffixes, **shape
        )
        return drafter, OuroborosParams(draft=draft_params, pool=warm)
    raise SpecjaxError(f"method {method} is not available yet")


def _resolve_pool(pool: Any, shape: tuple[int, int, int]):
    """None, a PhrasePool of the drafter's shape, or the path of a saved pool."""
    if pool is None or isinstance(pool, PhrasePool):
        if pool is not None and (pool.num_buckets, pool.capacity, pool.phrase_len) != shape:
            raise SpecjaxError(
                f"phrase pool of shape {(pool.num_buckets, pool.capacity, pool.phrase_len)} does "
                f"not fit the drafter's {shape} (buckets, pool_capacity, ngram - 1)"
            )
        return pool
    return load_pool(pool, *shape)


def _resolve_draft(draft: Any, config: ModelConfig, params: ModelParams, dtype: str, method: str):
    """(draft config, draft params) from any of the `draft` forms make_drafter accepts."""
    if draft is None or draft == "":
        from models.drafts import shipped_draft_for

        shipped = shipped_draft_for(config, params)
        if shipped is None:
            raise SpecjaxError(
                f"--method={method} needs --draft for this target (no shipped draft matches it): "
                "a checkpoint with the target's vocabulary, a trained draft directory, or self:N"
            )
        draft = str(shipped)
    if isinstance(draft, str) and draft.startswith("self:"):
        draft_config, draft_params = self_draft(config, params, parse_self_draft(draft, config.L))
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
    return draft_config, draft_params


def pool_after(result) -> PhrasePool:
    """The phrase pool to carry into the next call (warm start): the rows' pools of a
    `generate(..., keep_state=True)` run with a phrase drafter, merged into one."""
    state = result.final_state
    pool = getattr(getattr(state, "draft_state", None), "pool", None)
    if pool is None:
        raise SpecjaxError(
            "pool_after needs generate(..., keep_state=True) with ouroboros/lookahead"
        )
    return merge_rows(pool)
