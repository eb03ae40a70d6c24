"""Real pretrained models end to end: stories260K against llama2.c's published text, and the
embedded SmolLM2-135M-Instruct (Q4_1 GGUF) against transformers' PyTorch implementation.

Each model is loaded once per module. The transformers reference reads the same GGUF file, so both
sides hold identical dequantized weights and only float32 arithmetic differs.
"""

from __future__ import annotations

from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from models.cache import init_cache
from models.errors import SpecjaxError
from models.loading import Model, load_model
from models.transformer import causal_mask, forward
from specjax.chat import encode_prompt
from specjax.engine import GenerationResult, generate

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
CHECKPOINT = DATA / "stories260K.bin"
TOKENIZER = DATA / "tok512.bin"
STORIES_PROMPT_IDS = [1, 403, 407, 261, 378]  # "Once upon a time", BOS first
# Published by llama2.c: greedy continuation of "Once upon a time" by stories260K.
STORIES_CONTINUATION = (
    ", there was a little girl named Lily. She loved to play outside in the park. One day, she "
    "saw a big, red ball. She wanted to play with it, but it was too high."
)

SMOL_PROMPTS = (
    "Explain in three sentences why the sky is blue.",
    "Write a Python function that checks whether a number is prime.",
    "Translate to French: The cat sleeps on the warm windowsill.",
)
SMOL_NEW_TOKENS = 32
LOGITS_ATOL = 1e-3


# ---------------------------------------------------------------------------------------------
# stories260K (llama2.c), converted to an HF directory and loaded by specjax.


@pytest.fixture(scope="module")
def stories(tmp_path_factory: pytest.TempPathFactory) -> Model:
    if not (CHECKPOINT.is_file() and TOKENIZER.is_file()):
        pytest.skip(
            f"stories260K.bin / tok512.bin not found under {DATA} (reference data is CI-only)"
        )
    from models.llama2c import convert

    out = convert(CHECKPOINT, TOKENIZER, tmp_path_factory.mktemp("stories260K_hf"))
    return load_model(str(out))


@pytest.mark.slow
def test_stories260k_greedy_continues_with_the_published_text(stories: Model) -> None:
    result = generate(
        stories.config,
        stories.params,
        [STORIES_PROMPT_IDS],
        max_new_tokens=80,
        eos_ids=stories.eos_ids,
    )
    text = stories.tokenizer.decode(result.tokens[0], skip_special_tokens=True)
    assert text.startswith(STORIES_CONTINUATION), text


# ---------------------------------------------------------------------------------------------
# SmolLM2-135M-Instruct, the embedded default, against transformers reading the same GGUF.


@pytest.fixture(scope="module")
def smollm2() -> Model:
    try:
        return load_model("smollm2")
    except SpecjaxError as e:
        pytest.skip(f"embedded SmolLM2 unavailable: {e}")


@pytest.fixture(scope="module")
def hf_smollm2(smollm2: Model):
    """transformers' model from the same GGUF, with EOS off so it always runs the full budget."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.set_num_threads(2)
    path = Path(smollm2.source)
    model = transformers.AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, dtype=torch.float32
    ).eval()
    model.generation_config.eos_token_id = None
    return model


@pytest.fixture(scope="module")
def smol_prompt_ids(smollm2: Model) -> list[list[int]]:
    """The three prompts with the chat template applied (as `--chat` would)."""
    return [encode_prompt(smollm2.tokenizer, p, chat=True) for p in SMOL_PROMPTS]


def _greedy(model: Model, prompts: list[list[int]]) -> GenerationResult:
    # No EOS: both sides must produce exactly SMOL_NEW_TOKENS tokens.
    return generate(model.config, model.params, prompts, max_new_tokens=SMOL_NEW_TOKENS, eos_ids=())


@pytest.fixture(scope="module")
def smol_alone(smollm2: Model, smol_prompt_ids: list[list[int]]) -> list[list[int]]:
    return [_greedy(smollm2, [p]).tokens[0] for p in smol_prompt_ids]


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(SMOL_PROMPTS)))
def test_smollm2_greedy_tokens_match_transformers(
    index: int, hf_smollm2, smol_prompt_ids: list[list[int]], smol_alone: list[list[int]]
) -> None:
    import torch

    ids = torch.tensor([smol_prompt_ids[index]])
    with torch.no_grad():
        out = hf_smollm2.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=SMOL_NEW_TOKENS,
            do_sample=False,
        )
    expected = out[0, ids.shape[1] :].tolist()
    assert len(expected) == SMOL_NEW_TOKENS
    assert smol_alone[index] == expected


@pytest.mark.slow
def test_smollm2_first_token_logits_match_transformers(
    smollm2: Model, hf_smollm2, smol_prompt_ids: list[list[int]]
) -> None:
    import torch

    c = smollm2.config
    worst = 0.0
    for ids in smol_prompt_ids:
        T = len(ids)
        cache = init_cache(c.L, 1, c.K, T, c.H)
        logits, _, _ = forward(
            c, smollm2.params, jnp.asarray([ids]), jnp.arange(T)[None], cache, causal_mask(1, T)
        )
        with torch.no_grad():
            expected = hf_smollm2(torch.tensor([ids])).logits[0, -1].numpy()
        worst = max(worst, float(np.max(np.abs(np.asarray(logits[0, -1]) - expected))))
    assert worst < LOGITS_ATOL, f"max |logit difference| {worst:.2e}"


@pytest.mark.slow
def test_smollm2_ragged_batch_equals_each_prompt_alone(
    smollm2: Model, smol_prompt_ids: list[list[int]], smol_alone: list[list[int]]
) -> None:
    assert len({len(p) for p in smol_prompt_ids}) > 1  # the batch is ragged
    assert _greedy(smollm2, smol_prompt_ids).tokens == smol_alone


@pytest.fixture(scope="module")
def smol_vanilla64(smollm2: Model, smol_prompt_ids: list[list[int]]) -> list[list[int]]:
    from specjax.engine import generate

    kw = dict(max_new_tokens=64, eos_ids=smollm2.eos_ids)
    return generate(smollm2.config, smollm2.params, smol_prompt_ids, **kw).tokens


@pytest.mark.slow
@pytest.mark.parametrize(
    "method,draft,rows",
    [
        # self:20, the target's own first layers as its draft: a plumbing baseline beside the
        # shipped draft's sd row, which covers the same path.
        pytest.param("sd", "self:20", 3, marks=pytest.mark.extended),
        ("sd", None, 3),
        ("ngram", None, 3),
        ("ouroboros", None, 3),
        pytest.param("ouroboros", None, 1, marks=pytest.mark.extended),
        # Lookahead's pool works as ouroboros's (both B3 rows above and below); its tiny-model
        # greedy == vanilla and the quickstart notebook's real-model run stay in the default suite.
        pytest.param("lookahead", None, 3, marks=pytest.mark.extended),
        ("redrafter", None, 3),
        pytest.param("redrafter", None, 1, marks=pytest.mark.extended),
        ("medusa", "auto", 3),
        pytest.param("medusa", "mc_sim_7b_63", 1, marks=pytest.mark.extended),
        ("ctc", "auto", 3),
        # and with a prompt-lookup branch of 3 sharing the module's tree, fed by the shipped
        # answer store where the context has no match (`--lookup=3 --answer_store=shipped`)
        ("ctc", "auto,lookup=3,store=shipped", 3),
        pytest.param("ctc", "mc_sim_7b_63", 1, marks=pytest.mark.extended),
        ("sprinter", None, 3),
    ],
    ids=[
        "self20",
        "shipped",
        "ngram",
        "ouroboros_B3",
        "ouroboros_B1",
        "lookahead_B3",
        "redrafter_B3",
        "redrafter_B1",
        "medusa_auto_B3",
        "medusa_mc_sim_B1",
        "ctc_auto_B3",
        "ctc_auto_lookup3_store_B3",
        "ctc_mc_sim_B1",
        "sprinter_exact_B3",
    ],  # fmt: skip
)
def test_smollm2_speculative_greedy_equals_vanilla(
    smollm2: Model,
    smol_prompt_ids: list[list[int]],
    smol_vanilla64: list[list[int]],
    method: str,
    draft: str | None,
    rows: int,
) -> None:
    """Lossless on the real default model: ragged prompts, 64 tokens (32 for the phrase methods,
    whose steps cost more on CPU; a greedy prefix is still a full check), EOS honoured. draft None
    is the trained draft shipped in models/drafts for this target; redrafter and medusa use the
    heads shipped in models/heads, and so does ctc (redrafter at the CPU's default beam shape;
    for medusa and ctc `draft` names the tree, the lookup branch and its answer store; sprinter runs the shipped draft with the shipped
    verifier under the exact rule, `generate`'s default)."""
    from configs.phrase_drafting import phrase_drafting
    from specjax.engine import generate
    from specjax.methods import make_drafter

    phrase = phrase_drafting("cpu") if method in ("ouroboros", "lookahead") else None
    extra = {"phrase": phrase} if phrase is not None else {"gamma": 4} if method == "sd" else {}
    if method in ("medusa", "ctc"):  # draft: the tree, a lookup branch's length, an answer store
        draft, _, store = draft.partition(",store=")
        tree, _, lookup = draft.partition(",lookup=")
        extra, draft = {"tree": tree, "lookup": int(lookup or 0), "answer_store": store}, None
    drafter, dparams = make_drafter(method, smollm2.config, smollm2.params, draft=draft, **extra)
    n = 32 if phrase is not None else 64
    spec = generate(
        smollm2.config,
        smollm2.params,
        smol_prompt_ids[:rows],
        max_new_tokens=n,
        eos_ids=smollm2.eos_ids,
        drafter=drafter,
        draft_params=dparams,
    )
    assert spec.tokens == [t[:n] for t in smol_vanilla64[:rows]]
    assert sum(spec.accepted) > 0
    if method == "sd":  # greedy sd's steps follow from the draft's teacher-forced agreement
        from train_heads.draft_agreement import agreement_mask, greedy_sd_steps

        for row, answer in enumerate(spec.tokens):
            agree = agreement_mask(drafter.config, dparams, smol_prompt_ids[row], answer)
            assert spec.target_calls[row] == 1 + greedy_sd_steps(agree, 4)
    if method in ("redrafter", "medusa"):  # and a tree head's from its teacher-forced trees
        from train_heads.draft_agreement import greedy_tree_steps, tree_runs

        for row, answer in enumerate(spec.tokens):
            c, p = smollm2.config, smollm2.params
            runs = tree_runs(drafter, dparams, c, p, smol_prompt_ids[row], answer)
            assert spec.target_calls[row] == 1 + greedy_tree_steps(runs)
