"""The method registry: settings become flags, factories build drafters, and a method registered
from outside the package (a file-local drafter class and one `register` call) is available to
`python -m specjax.decode` and `python -m specjax.bench` with no other edit."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from absl import flags

from models.errors import SpecjaxError
from specjax import methods
from tests.hf_reference import make_tiny_hf_model
from tests.test_bench import _word_tokenizer

ROOT = Path(__file__).resolve().parents[1]

# A whole method as a user would add one: a drafter, its settings, one register call.
TOY_METHOD = '''
import dataclasses

import jax.numpy as jnp

from specjax.candidates import Candidates, chain_parent
from specjax.methods import Method, register, setting


@dataclasses.dataclass(frozen=True)
class RepeatRootDrafter:
    """Proposes the root token `width` times (a chain): cheap, often wrong, always checked."""

    width: int = 2

    @property
    def block_size(self) -> int:
        return self.width + 1

    def init(self, params, prefill, cache_len):
        return jnp.zeros(prefill.length.shape, jnp.int32)

    def propose(self, params, state, ctx, keys, sampling):
        B = ctx.root.shape[0]
        tokens = jnp.repeat(ctx.root[:, None], self.width + 1, axis=1)
        return Candidates(tokens=tokens, parent=chain_parent(B, self.width + 1)), state + 1

    def update(self, params, state, verified):
        return state


@dataclasses.dataclass(frozen=True)
class ToySettings:
    width: int = setting(2, "toy_width", "toy: how many copies of the root to propose.")


register(Method("toy", "repeats the root", ToySettings, lambda i: (RepeatRootDrafter(i.settings.width), None)))
'''


def run_with_toy(tmp_path: Path, module: str, *args: str) -> subprocess.CompletedProcess:
    """Runs `python -m module args` with the toy method registered first."""
    (tmp_path / "toy_method.py").write_text(TOY_METHOD)
    code = f"import sys, runpy; sys.path.insert(0, {str(tmp_path)!r}); import toy_method; "
    code += (
        f"sys.argv = ['{module}', *sys.argv[1:]]; runpy.run_module('{module}', run_name='__main__')"
    )
    return subprocess.run(
        [sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True, timeout=600
    )


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tiny")
    make_tiny_hf_model("llama", out, seed=5)
    _word_tokenizer(out, vocab_size=97)
    return out


def test_a_method_registered_outside_is_a_decode_method_with_its_flags(tiny_model, tmp_path):
    common = [f"--model={tiny_model}", "--nochat", "--prompt=the cat sat on a mat", "--json"]
    common.append("--max_new_tokens=12")
    vanilla = run_with_toy(tmp_path, "specjax.decode", *common)
    toy = run_with_toy(tmp_path, "specjax.decode", *common, "--method=toy", "--toy_width=3")
    assert vanilla.returncode == 0, vanilla.stderr
    assert toy.returncode == 0, toy.stderr
    v, t = (json.loads(p.stdout.splitlines()[-1]) for p in (vanilla, toy))
    assert t["method"] == "toy" and t["lossless"] is True
    assert t["tokens"] == v["tokens"]  # exact acceptance: greedy is vanilla's
    assert t["drafted"] == 3 * t["target_calls"] - 3  # three drafts per step (not the prefill)
    bad = run_with_toy(tmp_path, "specjax.decode", *common, "--method=toy", "--toy_width=x")
    assert bad.returncode == 2 and "toy_width" in bad.stderr


def test_a_method_registered_outside_is_a_bench_row(tiny_model, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"category": "story", "prompt": "the cat sat on a mat"}) + "\n")
    out = tmp_path / "out"
    proc = run_with_toy(
        tmp_path,
        "specjax.bench",
        f"--model={tiny_model}",
        f"--prompts={prompts}",
        "--methods=vanilla,toy",
        "--toy_width=2",
        "--peers=",
        "--quick",
        f"--out={out}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads((out / "results.json").read_text())
    toy = [r for r in res["raw"] if r["method"] == "toy"]
    assert len(toy) == 1 and toy[0]["lossless"] and not toy[0]["mismatch"]
    assert toy[0]["drafted"] > 0
    assert "ToySettings(width=2)" in res["settings"]["toy"]["story"]


def test_settings_become_flags_once():
    fv = flags.FlagValues()
    methods.define_flags(fv)
    methods.define_flags(fv)  # idempotent: a later register only adds what is new
    for flag in ("gamma", "ngram_max", "ngram_tokens", "phrase_preset"):
        assert flag in fv
    fv(["prog", "--gamma=6", "--ngram_max=2"])
    assert methods.parse_gamma(methods.settings_from_flags("sd", fv).gamma) == 6
    assert methods.settings_from_flags("ngram", fv).max_ngram == 2


def test_unknown_setting_and_method_are_one_line_errors():
    import jax

    from models.config import ModelConfig
    from models.transformer import init_params

    config = ModelConfig("llama", V=32, D=16, L=2, F=32, Q=2, K=1, H=8, max_positions=64)
    params = init_params(config, jax.random.key(0))
    with pytest.raises(SpecjaxError, match="method ngram has no setting 'gamma'"):
        methods.make_drafter("ngram", config, params, gamma=3)
    with pytest.raises(SpecjaxError, match="unknown method 'beam'"):
        methods.make_drafter("beam", config, params)
    later = methods.Method("later", "not built", methods.NoSettings, None, available=False)
    methods.register(later)
    try:
        with pytest.raises(SpecjaxError, match="method later is not available yet"):
            methods.make_drafter("later", config, params)
    finally:
        del methods.REGISTRY["later"]


def test_phrase_methods_hold_one_settings_object():
    """The phrase drafters keep the PhraseDrafting they were built from: no copied fields that
    could disagree with the preset."""
    import jax

    from configs.phrase_drafting import phrase_drafting
    from models.config import ModelConfig
    from models.transformer import init_params

    config = ModelConfig("llama", V=32, D=16, L=2, F=32, Q=2, K=1, H=8, max_positions=64)
    params = init_params(config, jax.random.key(0))
    drafter, _ = methods.make_drafter("ouroboros", config, params, draft="self:1")
    assert drafter.phrase == phrase_drafting("chat") and drafter.gamma == 6
    look, _ = methods.make_drafter("lookahead", config, params, preset="code")
    assert look.phrase == phrase_drafting("code")
