"""The speculative loop with every drafter (sd, ngram, ouroboros, lookahead): lossless greedy,
exact sampling, seeds, caches without stale entries (tiny random models)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from configs.phrase_drafting import phrase_drafting
from models.cache import init_cache
from models.config import ModelConfig
from models.errors import SpecjaxError
from models.loading import Model
from models.transformer import causal_mask, forward, init_params
from specjax.acceptance import ExactAcceptance, TypicalAcceptance
from specjax.engine import generate, stream
from specjax.methods import make_drafter
from specjax.sampling import SamplingConfig, probabilities

TARGET = ModelConfig(model_type="llama", V=64, D=32, L=4, F=64, Q=4, K=2, H=8, max_positions=256)
DRAFT = ModelConfig(
    model_type="qwen2", V=64, D=16, L=1, F=32, Q=2, K=1, H=8, qkv_bias=True, max_positions=256
)
PROMPTS = [[5, 6, 7, 8, 9, 5, 6, 7], [3, 4], [10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20]]


def extended_except(default, cases) -> list:
    """pytest parameters: the cases in `default` as they are, the others marked `extended`
    (a case is one value or a tuple of the test's arguments)."""
    return [
        case
        if case in default
        else pytest.param(
            *(case if isinstance(case, tuple) else (case,)), marks=pytest.mark.extended
        )
        for case in cases
    ]


METHODS = {
    "sd_other_model": ("sd", "other"),
    "sd_self_2": ("sd", "self:2"),
    "ngram": ("ngram", None),
    "ouroboros_self_2": ("ouroboros", "self:2"),
    "lookahead": ("lookahead", None),
}
# Small phrase settings so the tiny models exercise every part: window, guess set, branches.
PHRASE = phrase_drafting(
    "chat", gamma=4, window=6, ngram=4, guess_set=4, pool_capacity=6, buckets=64
)


@pytest.fixture(scope="module")
def target():
    return init_params(TARGET, jax.random.key(0))


@pytest.fixture(scope="module")
def draft_model():
    return Model(DRAFT, init_params(DRAFT, jax.random.key(1)), None, "tiny-draft")


def _drafter(name, target, draft_model, **kw):
    method, draft = METHODS[name]
    if method in ("ouroboros", "lookahead"):  # gamma is PHRASE's
        kw = {"phrase": PHRASE}
    elif method == "ngram":
        kw = {}
    return make_drafter(
        method, TARGET, target, draft=draft_model if draft == "other" else draft, **kw
    )


@pytest.mark.parametrize("name", list(METHODS))
@pytest.mark.parametrize(
    "batch",
    # one row: a twin of the ragged batch, whose rows each run the same step
    [pytest.param("one", marks=pytest.mark.extended), "three_ragged"],
)
def test_greedy_equals_vanilla(name, batch, target, draft_model):
    prompts = PROMPTS[2:] if batch == "one" else PROMPTS
    vanilla = generate(TARGET, target, prompts, max_new_tokens=40)
    drafter, dparams = _drafter(name, target, draft_model, gamma=4)
    spec = generate(
        TARGET, target, prompts, max_new_tokens=40, drafter=drafter, draft_params=dparams
    )
    assert spec.tokens == vanilla.tokens
    assert sum(spec.target_calls) < sum(vanilla.target_calls) or name.endswith("other_model")


# The policy is the drafter's neighbour, not its part: a chain drafter with a draft model and one
# without stay in the default suite, the rest are extended.
TYPICAL_DEFAULT = ("sd_self_2", "ngram")


@pytest.mark.parametrize("name", extended_except(TYPICAL_DEFAULT, METHODS))
def test_typical_acceptance_at_temperature_zero_equals_vanilla(name, target, draft_model):
    vanilla = generate(TARGET, target, PROMPTS, max_new_tokens=40)
    drafter, dparams = _drafter(name, target, draft_model, gamma=4)
    typical = generate(
        TARGET,
        target,
        PROMPTS,
        max_new_tokens=40,
        drafter=drafter,
        draft_params=dparams,
        acceptance=TypicalAcceptance(),
    )
    assert typical.tokens == vanilla.tokens


# `stream` runs generate's jitted step in chunks whatever the drafter: vanilla (both
# temperatures) and sd (sampled: its keys must fold the same way in chunks) stay in the default
# suite; the other drafters are extended (colab/quickstart.ipynb streams every method on the real
# model and checks vanilla's tokens).
STREAM_DEFAULT = {("vanilla", 0.0), ("vanilla", 1.0), ("sd_self_2", 1.0)}


@pytest.mark.parametrize(
    "name,temperature",
    extended_except(STREAM_DEFAULT, [(n, t) for n in ["vanilla", *METHODS] for t in (0.0, 1.0)]),
    ids=lambda v: {0.0: "greedy", 1.0: "sampled"}.get(v, v) if not isinstance(v, str) else v,
)
def test_stream_yields_exactly_the_tokens_of_generate(name, temperature, target, draft_model):
    drafter, dparams = (None, None)
    if name != "vanilla":
        drafter, dparams = _drafter(name, target, draft_model, gamma=3)
    kw = dict(
        max_new_tokens=33,
        sampling=SamplingConfig(temperature=temperature),
        seed=[1, 2, 3],
        drafter=drafter,
        draft_params=dparams,
    )
    fused = generate(TARGET, target, PROMPTS, **kw)
    chunks = stream(TARGET, target, PROMPTS, steps_per_chunk=3, **kw)
    pieces = list(chunks)
    assert len(pieces) > 2
    assert [sum((p[b] for p in pieces), []) for b in range(len(PROMPTS))] == fused.tokens
    assert chunks.result.tokens == fused.tokens
    assert chunks.result.target_calls == fused.target_calls


def test_self_draft_accepts_and_saves_target_calls(target, draft_model):
    drafter, dparams = _drafter("sd_self_2", target, draft_model, gamma=4)
    r = generate(TARGET, target, PROMPTS, max_new_tokens=40, drafter=drafter, draft_params=dparams)
    assert r.tau > 1.5 and r.acceptance_rate > 0.3


# A row's tokens depend on its own keys and state: sd (a draft cache per row) and ouroboros (a
# draft and a pool per row) stay in the default suite; ngram's state is its tokens and lookahead's
# pool is per row as ouroboros's is, so they are extended.
@pytest.mark.parametrize(
    "name",
    extended_except(
        {"sd_self_2", "ouroboros_self_2"}, ["sd_self_2", "ngram", "ouroboros_self_2", "lookahead"]
    ),
)
def test_same_seed_same_tokens_regardless_of_batch(name, target, draft_model):
    drafter, dparams = _drafter(name, target, draft_model, gamma=3)
    kw = dict(
        max_new_tokens=24,
        sampling=SamplingConfig(temperature=1.0),
        drafter=drafter,
        draft_params=dparams,
    )
    batch = generate(TARGET, target, PROMPTS, seed=5, **kw)
    again = generate(TARGET, target, PROMPTS, seed=5, **kw)
    alone = generate(TARGET, target, PROMPTS[2:], seed=5, **kw)
    assert batch.tokens == again.tokens
    assert batch.tokens[2] == alone.tokens[0]


# The engine's commit writes the target's cache whatever drafted: a draft model with its own cache
# (sd) and a tree of phrases (ouroboros) stay in the default suite, ngram and lookahead extended.
@pytest.mark.parametrize(
    "name",
    extended_except(
        {"sd_other_model", "ouroboros_self_2"},
        ["sd_other_model", "ngram", "ouroboros_self_2", "lookahead"],
    ),
)
def test_caches_after_a_run_hold_exactly_the_emitted_tokens(name, target, draft_model):
    """Every valid cache slot equals a fresh forward over prompt + emitted tokens."""
    drafter, dparams = _drafter(name, target, draft_model, gamma=4)
    r = generate(
        TARGET,
        target,
        PROMPTS,
        max_new_tokens=30,
        drafter=drafter,
        draft_params=dparams,
        keep_state=True,
    )
    cache = r.final_state.cache
    for b, prompt in enumerate(PROMPTS):
        n = int(cache.length[b])
        seq = (prompt + r.tokens[b])[:n]
        assert len(seq) == n  # never more cached tokens than committed ones
        fresh = init_cache(TARGET.L, 1, TARGET.K, n, TARGET.H)
        _, _, fresh = forward(
            TARGET, target, jnp.asarray([seq]), jnp.arange(n)[None], fresh, causal_mask(1, n)
        )
        np.testing.assert_allclose(cache.k[:, b, :, :n], fresh.k[:, 0], atol=1e-5)
        np.testing.assert_allclose(cache.v[:, b, :, :n], fresh.v[:, 0], atol=1e-5)


def test_draft_vocabulary_mismatch_is_one_line_error(target):
    import dataclasses

    other = dataclasses.replace(DRAFT, V=80)
    model = Model(other, init_params(other, jax.random.key(2)), None, "x")
    with pytest.raises(SpecjaxError, match="vocabulary"):
        make_drafter("sd", TARGET, target, draft=model)


SMALL_V = 8
SMALL = ModelConfig(model_type="llama", V=SMALL_V, D=16, L=2, F=32, Q=2, K=1, H=8, max_positions=64)
SMALL_DRAFT = ModelConfig(
    model_type="llama", V=SMALL_V, D=8, L=1, F=16, Q=1, K=1, H=8, max_positions=64
)


def _flat(params):
    """Smaller (tied) embeddings: logits of a few nats, so every token has real probability."""
    return params.replace(embed=params.embed * 0.15)


@pytest.mark.parametrize(
    "method",
    [
        "sd",
        # One-hot drafts through the same verify as the CTC test's collapsed trees below (a chain
        # is a tree): that test keeps the rule in the default suite.
        pytest.param("ngram", marks=pytest.mark.extended),
        pytest.param("ouroboros", marks=pytest.mark.extended),
        pytest.param("lookahead", marks=pytest.mark.extended),
    ],
)
def test_sampled_first_two_tokens_follow_the_target(method):
    """60,000 seeded rows through the whole engine (draft sampling, verify, commit) against the
    exact target distribution of the first two tokens."""
    assert _first_two_tokens_pvalue(method, ExactAcceptance(), check_accepted=True) > 1e-3


def test_typical_acceptance_that_accepts_nothing_samples_the_target():
    """With both thresholds above 1 no draft passes, so every emitted token is the target's own
    draw: the same chi-square test as the exact policy."""
    never = TypicalAcceptance(eps=1.5, alpha=1e9)
    assert _first_two_tokens_pvalue("sd", never, check_accepted=False) > 1e-3


@pytest.mark.extended  # trees under the one-hot rule: the CTC test's collapsed trees cover it
def test_sampled_first_two_tokens_follow_the_target_on_beam_trees():
    """ReDrafter's merged beam trees (an untrained head: deterministic drafts, some accepted by
    chance over 8 tokens) through the one-hot rule: 100,000 seeded rows."""
    assert _first_two_tokens_pvalue("redrafter", ExactAcceptance(), True, n=100_000) > 1e-3


@pytest.mark.extended  # as the beam-tree test
def test_sampled_first_two_tokens_follow_the_target_on_a_static_medusa_tree():
    """Medusa's heads (moved off their zero start) fill a static 2-deep tree; the one-hot rule
    keeps the first two tokens distributed as the target's: 100,000 seeded rows."""
    assert _first_two_tokens_pvalue("medusa", ExactAcceptance(), True, n=100_000) > 1e-3


def test_sampled_first_two_tokens_follow_the_target_on_collapsed_ctc_trees():
    """The CTC drafter's frames (an untrained module whose blank competes with the tokens) fill
    a static tree that the collapse rewrites; the one-hot rule keeps the first two tokens
    distributed as the target's: 60,000 seeded rows."""
    assert _first_two_tokens_pvalue("ctc", ExactAcceptance(), True) > 1e-3


def test_sampled_first_two_tokens_follow_the_target_with_a_lookup_branch():
    """Medusa's heads with a prompt-lookup chain sharing their block, fed by an answer store
    where the context has no match (the prompt holds half the vocabulary, so half the roots copy
    from it and half take the store's chain): chain and heads are both deterministic, and the
    one-hot rule keeps the first two tokens distributed as the target's: 60,000 seeded rows."""
    assert _first_two_tokens_pvalue("medusa_lookup", ExactAcceptance(), True) > 1e-3


def _first_two_tokens_pvalue(method: str, acceptance, check_accepted: bool, n=60_000) -> float:
    params = _flat(init_params(SMALL, jax.random.key(3)))
    sampling = SamplingConfig(temperature=1.0)
    prompt = list(range(SMALL_V)) * 2  # every root token has an earlier match to copy from
    if method == "sd":
        drafter, dparams = make_drafter("sd", SMALL, params, draft="self:1", gamma=3)
    elif method == "ngram":
        drafter, dparams = make_drafter("ngram", SMALL, params, max_ngram=2, num_tokens=3)
    elif method == "redrafter":
        from models.recurrent_head import init_head
        from specjax.drafters.redrafter import ReDrafterDrafter, ReDrafterParams

        head = init_head(jax.random.key(4), SMALL.D, SMALL_V)
        drafter = ReDrafterDrafter(width=3, length=2)
        dparams = ReDrafterParams(head=head, embed=params.embed)
    elif method == "medusa":
        from models.medusa_heads import init_heads
        from specjax.drafters.medusa import MedusaDrafter
        from specjax.static_tree import tree_from_paths

        dparams = init_heads(params, num_heads=2)
        dparams = dparams.replace(res_w=jax.random.normal(jax.random.key(5), dparams.res_w.shape))
        drafter = MedusaDrafter(tree_from_paths([(0,), (1,), (2,), (0, 0), (0, 1), (1, 0)]))
    elif method == "medusa_lookup":
        from models.medusa_heads import init_heads
        from specjax.drafters.lookup_branch import LookupBranch
        from specjax.drafters.medusa import MedusaDrafter
        from specjax.static_tree import tree_from_paths

        dparams = init_heads(params, num_heads=2)
        dparams = dparams.replace(res_w=jax.random.normal(jax.random.key(5), dparams.res_w.shape))
        from models.answer_store import build_answer_store
        from specjax.drafters.lookup_branch import BranchParams

        inner = MedusaDrafter(tree_from_paths([(0,), (1,), (0, 0), (0, 1)]))
        drafter = LookupBranch(inner, (1, 2, 3, 4), num_tokens=2)
        answers = np.random.default_rng(0).integers(0, SMALL_V, (4, 50)).tolist()
        store = jax.tree.map(jnp.asarray, build_answer_store(answers, SMALL_V, length=2))
        dparams = BranchParams(dparams, store)
        prompt = list(range(SMALL_V // 2))
    elif method == "ctc":
        from models.ctc_draft import attach, draft_config, init_ctc_head
        from specjax.drafters.ctc import CTCDrafter
        from specjax.static_tree import tree_from_paths

        head = init_ctc_head(SMALL, params, jax.random.key(6), scale=0.3)
        dparams = attach(head.replace(blank_b=jnp.full((1,), 1.0)), params)
        tree = tree_from_paths([(0,), (1,), (2,), (0, 0), (0, 1), (1, 0), (0, 0, 0)])
        drafter = CTCDrafter(draft_config(SMALL), tree)
    else:  # phrases from the prompt (every bigram of it is in the pool) and the Jacobi window
        phrase = phrase_drafting(
            "chat", gamma=2, window=3, ngram=3, guess_set=3, pool_capacity=4, buckets=SMALL_V
        )
        drafter, dparams = make_drafter(method, SMALL, params, draft="self:1", phrase=phrase)
    r = generate(
        SMALL,
        params,
        [prompt] * n,
        max_new_tokens=2,
        sampling=sampling,
        seed=range(n),
        drafter=drafter,
        draft_params=dparams,
        acceptance=acceptance,
    )
    assert sum(r.drafted) > 0.3 * n  # drafts were really tested
    if check_accepted:
        assert sum(r.accepted) > 0.003 * n
    else:
        assert sum(r.accepted) == 0
    pairs = np.array([t[:2] for t in r.tokens])
    counts = np.bincount(pairs[:, 0] * SMALL_V + pairs[:, 1], minlength=SMALL_V**2)

    fwd = jax.jit(forward, static_argnums=0)

    def dist(seq):
        cache = init_cache(SMALL.L, 1, SMALL.K, len(seq), SMALL.H)
        logits, _, _ = fwd(
            SMALL,
            params,
            jnp.asarray([seq]),
            jnp.arange(len(seq))[None],
            cache,
            causal_mask(1, len(seq)),
        )
        return np.asarray(probabilities(logits[0, -1], sampling), np.float64)

    p1 = dist(prompt)
    joint = np.stack([p1[a] * dist(prompt + [a]) for a in range(SMALL_V)]).reshape(-1)
    return stats.chisquare(counts, joint / joint.sum() * n).pvalue


def test_ouroboros_with_the_target_as_its_draft_accepts_every_trunk(target):
    """The draft is exactly the draft model's greedy output (lookahead on the draft, catch-up of
    its cache): with the target as the draft model, no trunk token is ever rejected, so every
    step emits at least gamma + 1 tokens until the budget."""
    itself = Model(TARGET, target, None, "target-as-draft")
    drafter, dparams = make_drafter("ouroboros", TARGET, target, draft=itself, phrase=PHRASE)
    n = 41
    r = generate(TARGET, target, PROMPTS, max_new_tokens=n, drafter=drafter, draft_params=dparams)
    assert r.tokens == generate(TARGET, target, PROMPTS, max_new_tokens=n).tokens
    steps = -(-(n - 1) // (PHRASE.gamma + 1))  # the first token comes from the prefill
    assert all(calls <= 1 + steps for calls in r.target_calls), r.target_calls
