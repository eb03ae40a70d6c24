"""SPRINTER's decoding on tiny random models: the exact mode is lossless (greedy and a chi-square
test), the paper's rule has exactly the output distribution its rule implies (unchecked drafts
come from q), its edge cases reduce to two-model sd with gamma 1 or to K drafts per call, and a
verifier trained for another draft or a damaged one is one error line."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from models.acceptance_verifier import VerifierParams, acceptance_score, verifier_features
from models.cache import init_cache
from models.config import ModelConfig
from models.errors import SpecjaxError
from models.transformer import causal_mask, forward, init_params
from specjax.acceptance import ExactAcceptance, LastTokenAcceptance
from specjax.drafters.draft_model import self_draft
from specjax.drafters.sprinter import SprinterDrafter, SprinterParams
from specjax.engine import generate
from specjax.methods import make_drafter
from specjax.sampling import SamplingConfig, probabilities

TARGET = ModelConfig(model_type="llama", V=64, D=32, L=4, F=64, Q=4, K=2, H=8, max_positions=256)
PROMPTS = [[5, 6, 7, 8, 9, 5, 6, 7], [3, 4], [10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20]]


@pytest.fixture(scope="module")
def target():
    return init_params(TARGET, jax.random.key(0))


def _sprinter(
    config, params, bias=0.0, scale=0.0, layers=2, K=6, threshold=0.5, seed=7, draft=None
):
    """A SPRINTER drafter on the target's first `layers` layers (or `draft`: (config, params)),
    with a verifier whose scores are sigmoid(scale * random projection + bias)."""
    draft_config, draft = draft or self_draft(config, params, layers)
    w = scale * jax.random.normal(jax.random.key(seed), (1, draft_config.D))
    verifier = VerifierParams(w=w, b=jnp.full((1,), bias))
    drafter = SprinterDrafter(draft_config, max_draft=K, threshold=threshold)
    return drafter, SprinterParams(draft=draft, verifier=verifier)


@pytest.mark.parametrize(
    "prompts",
    [pytest.param(PROMPTS[2:], marks=pytest.mark.extended), PROMPTS],  # one row: the batch's twin
    ids=["one", "three_ragged"],
)
def test_exact_mode_greedy_equals_vanilla(prompts, target):
    vanilla = generate(TARGET, target, prompts, max_new_tokens=40)
    drafter, dparams = _sprinter(TARGET, target, bias=0.5, scale=3.0)
    r = generate(
        TARGET, target, prompts, max_new_tokens=40, drafter=drafter, draft_params=dparams,
        acceptance=ExactAcceptance(),
    )  # fmt: skip
    assert r.tokens == vanilla.tokens
    assert sum(r.target_calls) < sum(vanilla.target_calls)
    # The verifier really varied the draft lengths: some calls verified more than one draft.
    lengths = np.asarray(r.accept_lengths).sum(axis=0)
    assert lengths[2:].sum() > 0


@pytest.mark.parametrize("batch", [pytest.param(1, marks=pytest.mark.extended), 3])  # 1: a twin
def test_a_verifier_that_always_flags_is_sd_with_gamma_one(batch, target):
    prompts = PROMPTS[:batch]
    sd, sd_params = make_drafter("sd", TARGET, target, draft="self:2", gamma=1)
    ref = generate(TARGET, target, prompts, max_new_tokens=30, drafter=sd, draft_params=sd_params)
    for bias, K, threshold in ((-30.0, 6, 0.5), (0.0, 1, 0.0)):  # always flags; K = 1
        drafter, dparams = _sprinter(TARGET, target, bias=bias, K=K, threshold=threshold)
        r = generate(
            TARGET, target, prompts, max_new_tokens=30, drafter=drafter, draft_params=dparams,
            acceptance=LastTokenAcceptance(),
        )  # fmt: skip
        assert r.tokens == ref.tokens
        assert r.target_calls == ref.target_calls


def test_a_verifier_that_never_flags_drafts_k_tokens_per_target_call(target):
    """Every call drafts K tokens, except the last of a row, which stops where the token budget
    does (a call emits up to its drafts + 1)."""
    K, N = 5, 40
    drafter, dparams = _sprinter(TARGET, target, bias=30.0, K=K)
    r = generate(
        TARGET, target, PROMPTS, max_new_tokens=N, drafter=drafter, draft_params=dparams,
        acceptance=LastTokenAcceptance(),
    )  # fmt: skip
    for b in range(len(PROMPTS)):
        calls = r.target_calls[b] - 1  # the prefill is a target call too
        last_run = r.drafted[b] - K * (calls - 1)
        assert 1 <= last_run <= K
        assert len(r.tokens[b]) == N
        # Each full call keeps K - 1 unchecked drafts and emits K or K + 1 tokens.
        assert 1 + K * (calls - 1) < N <= 1 + (K + 1) * (calls - 1) + last_run + 1
    assert any(r.drafted[b] < K * (r.target_calls[b] - 1) for b in range(len(PROMPTS)))


def test_target_calls_count_only_calls_for_the_row(target):
    """In one batch, a row whose verifier never flags is called every K drafts while a row with
    a short prompt sharing the batch is called as often as its own drafts need: each row's count
    is its own (the same as when it runs alone)."""
    drafter, dparams = _sprinter(TARGET, target, bias=0.3, scale=4.0, K=4)
    kw = dict(max_new_tokens=30, drafter=drafter, draft_params=dparams)
    both = generate(TARGET, target, PROMPTS, **kw)
    for b, prompt in enumerate(PROMPTS):
        alone = generate(TARGET, target, [prompt], **kw)
        assert alone.tokens[0] == both.tokens[b]
        assert alone.target_calls[0] == both.target_calls[b]


SMALL_V = 8
SMALL = ModelConfig(model_type="llama", V=SMALL_V, D=16, L=2, F=32, Q=2, K=1, H=8, max_positions=64)
SMALL_DRAFT = ModelConfig(
    model_type="llama", V=SMALL_V, D=8, L=1, F=16, Q=1, K=1, H=8, max_positions=64
)


def _small_params():
    params = init_params(SMALL, jax.random.key(3))
    return params.replace(embed=params.embed * 0.15)  # flat logits: every token likely


def _dist(params, config, seq, sampling):
    cache = init_cache(config.L, 1, config.K, len(seq), config.H)
    logits, hidden, _ = jax.jit(forward, static_argnums=0)(
        config, params, jnp.asarray([seq]), jnp.arange(len(seq))[None], cache,
        causal_mask(1, len(seq)),
    )  # fmt: skip
    return np.asarray(probabilities(logits[0, -1], sampling), np.float64), hidden[0, -1]


def _first_two(drafter, dparams, params, acceptance, n):
    """The first two tokens of n seeded rows; the budget leaves the first run its full K drafts
    (a drafter stops drafting where the budget ends)."""
    sampling = SamplingConfig(temperature=1.0)
    prompt = [1, 2, 3, 4]
    r = generate(
        SMALL, params, [prompt] * n, max_new_tokens=2 + drafter.max_draft, sampling=sampling,
        seed=range(n),
        drafter=drafter, draft_params=dparams, acceptance=acceptance,
    )  # fmt: skip
    pairs = np.array([t[:2] for t in r.tokens])
    counts = np.bincount(pairs[:, 0] * SMALL_V + pairs[:, 1], minlength=SMALL_V**2)
    return r, counts, prompt, sampling


def test_exact_mode_sampled_first_two_tokens_follow_the_target():
    """40,000 seeded rows: with the exact rule the verifier only sets draft lengths, and the
    first two tokens are distributed as the target's."""
    params = _small_params()
    drafter, dparams = _sprinter(SMALL, params, bias=0.2, scale=2.0, layers=1, K=3)
    n = 40_000
    r, counts, prompt, sampling = _first_two(drafter, dparams, params, ExactAcceptance(), n)
    assert sum(r.accepted) > 0.05 * n
    p1, _ = _dist(params, SMALL, prompt, sampling)
    joint = np.stack([p1[a] * _dist(params, SMALL, prompt + [a], sampling)[0] for a in range(8)])
    assert stats.chisquare(counts, joint.reshape(-1) / joint.sum() * n).pvalue > 1e-3


def test_paper_rule_keeps_unflagged_drafts_from_q_and_its_error_is_the_bound():
    """The paper's rule, 60,000 rows: after the first token a, the draft's guess b passes the
    verifier or not (a deterministic score of the draft's state); passed, it is kept unchecked,
    so b ~ q_a; flagged, it is checked, so b ~ p_a. The observed pairs follow exactly that
    mixture, and their total-variation distance from the target's equals the paper's bound
    sum_a p(a) [passed_a] TV(p_a, q_a) (eta_FP times TV(p, q), with every pass counted)."""
    params = _small_params()
    draft_config = SMALL_DRAFT
    draft = init_params(SMALL_DRAFT, jax.random.key(4))
    draft = draft.replace(lm_head=draft.lm_head * 0.3)  # another model: q far from p
    drafter, dparams = _sprinter(SMALL, params, scale=6.0, K=3, draft=(draft_config, draft))
    n = 60_000
    r, counts, prompt, sampling = _first_two(drafter, dparams, params, LastTokenAcceptance(), n)
    p1, _ = _dist(params, SMALL, prompt, sampling)
    predicted, target_joint, bound, passed_any = [], [], 0.0, 0
    for a in range(SMALL_V):
        p_a, _ = _dist(params, SMALL, prompt + [a], sampling)
        q_a, h_a = _dist(draft, draft_config, prompt + [a], sampling)
        score = float(acceptance_score(dparams.verifier, verifier_features(h_a[None], None))[0, 0])
        passed = score >= drafter.threshold
        passed_any += passed
        predicted.append(p1[a] * (q_a if passed else p_a))
        target_joint.append(p1[a] * p_a)
        bound += p1[a] * passed * 0.5 * np.abs(p_a - q_a).sum()
    predicted, target_joint = np.concatenate(predicted), np.concatenate(target_joint)
    assert 0 < passed_any < SMALL_V  # both cases occur
    assert stats.chisquare(counts, predicted / predicted.sum() * n).pvalue > 1e-3
    tv = 0.5 * np.abs(counts / n - target_joint).sum()
    print(f"TV(output, target) {tv:.4f}, bound {bound:.4f}")
    assert bound > 0.05  # approximate indeed
    assert abs(tv - bound) < 0.03  # and as far off as the bound says (sampling noise aside)


def test_a_verifier_for_another_draft_or_a_damaged_one_is_one_error_line(target, tmp_path):
    from models.fingerprint import draft_fingerprint
    from models.head_file import WEIGHTS_FILE, save_head

    draft_config, draft = self_draft(TARGET, target, 1)
    verifier = VerifierParams(w=jnp.zeros((1, TARGET.D)), b=jnp.zeros((1,)))
    extra = {
        "draft_fingerprint": draft_fingerprint(draft_config, draft),
        "temperatures": [0.0],
        "with_token": False,
    }
    path = save_head(tmp_path / "v", verifier, TARGET, target, extra=extra)
    drafter, _ = make_drafter("sprinter", TARGET, target, draft="self:1", head=str(path))
    assert drafter.max_draft == 20 and drafter.threshold == 0.5
    with pytest.raises(SpecjaxError, match="another draft model"):
        make_drafter("sprinter", TARGET, target, draft="self:2", head=str(path))
    for bad, match in ((dict(threshold=1.5), "threshold"), (dict(max_draft=0), "max_draft")):
        with pytest.raises(SpecjaxError, match=match):
            make_drafter("sprinter", TARGET, target, draft="self:1", head=str(path), **bad)
    weights = path / WEIGHTS_FILE
    weights.write_bytes(weights.read_bytes()[:40])
    with pytest.raises(SpecjaxError, match="corrupt or truncated"):
        make_drafter("sprinter", TARGET, target, draft="self:1", head=str(path))
