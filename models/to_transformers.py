"""Our params -> a transformers PyTorch model with the same weights (the inverse of `hf_checkpoint`).

The benchmark runs the peers a user would pick instead (transformers `generate`, with prompt lookup
or with `assistant_model`) on exactly the weights specjax runs, including drafts that exist only in
specjax (`self:N`, trained drafts sharing the target's embedding). Converting our stacked layout
back to HF names is the one way to hand those to transformers without a file round trip.
"""

from __future__ import annotations

import numpy as np

from models.config import ModelConfig
from models.transformer import ModelParams


def hf_config_dict(config: ModelConfig) -> dict:
    """The config.json fields transformers needs to rebuild this architecture."""
    c = config
    if c.is_gpt2:
        return dict(
            model_type="gpt2",
            vocab_size=c.V,
            n_embd=c.D,
            n_layer=c.L,
            n_head=c.Q,
            n_inner=c.F,
            n_positions=c.max_positions,
            layer_norm_epsilon=c.norm_eps,
            bos_token_id=c.bos_token_id,
            eos_token_id=list(c.eos_token_ids) or None,
        )
    out = dict(
        model_type=c.model_type,
        vocab_size=c.V,
        hidden_size=c.D,
        num_hidden_layers=c.L,
        intermediate_size=c.F,
        num_attention_heads=c.Q,
        num_key_value_heads=c.K,
        head_dim=c.H,
        rms_norm_eps=c.norm_eps,
        rope_theta=c.rope_theta,
        tie_word_embeddings=c.tie_word_embeddings,
        max_position_embeddings=c.max_positions,
        bos_token_id=c.bos_token_id,
        eos_token_id=list(c.eos_token_ids) or None,
    )
    if c.model_type == "llama":
        out["attention_bias"] = c.qkv_bias
    if c.rope_scaling is not None:
        s = c.rope_scaling
        out["rope_scaling"] = dict(
            rope_type=s.rope_type,
            factor=s.factor,
            low_freq_factor=s.low_freq_factor,
            high_freq_factor=s.high_freq_factor,
            original_max_position_embeddings=s.original_max_position_embeddings,
        )
    return out


def hf_state_dict(config: ModelConfig, params: ModelParams) -> dict[str, np.ndarray]:
    """HF-named float32 tensors in HF's [out, in] Linear layout."""
    p = {k: v for k, v in _numpy_tree(params).items()}
    lay = p["layers"]
    c = config
    out: dict[str, np.ndarray] = {}
    if c.is_gpt2:
        out["transformer.wte.weight"] = p["embed"]
        out["transformer.wpe.weight"] = p["pos_embed"]
        out["transformer.ln_f.weight"] = p["final_norm"]
        out["transformer.ln_f.bias"] = p["final_norm_bias"]
        names = dict(
            attn_norm="ln_1.weight",
            attn_norm_bias="ln_1.bias",
            wqkv="attn.c_attn.weight",
            bqkv="attn.c_attn.bias",
            wo="attn.c_proj.weight",
            bo="attn.c_proj.bias",
            mlp_norm="ln_2.weight",
            mlp_norm_bias="ln_2.bias",
            w_in="mlp.c_fc.weight",
            b_in="mlp.c_fc.bias",
            w_out="mlp.c_proj.weight",
            b_out="mlp.c_proj.bias",
        )
        for i in range(c.L):
            for ours, theirs in names.items():  # Conv1D keeps our [in, out] layout
                out[f"transformer.h.{i}.{theirs}"] = lay[ours][i]
        out["lm_head.weight"] = p["embed"]
        return out
    QH, KH, F = c.Q * c.H, c.K * c.H, c.F
    out["model.embed_tokens.weight"] = p["embed"]
    out["model.norm.weight"] = p["final_norm"]
    if p["head_token_ids"] is not None and c.tie_word_embeddings:
        # A frequent-token draft head is the tied head's columns: transformers gets the full one
        # (it drafts over the whole vocabulary; our drafter only over the head's tokens).
        out["lm_head.weight"] = p["embed"]
    elif p["head_token_ids"] is not None:
        full = np.zeros((c.V, c.D), np.float32)
        full[p["head_token_ids"].astype(np.int64)] = p["lm_head"].T
        out["lm_head.weight"] = full
    else:
        out["lm_head.weight"] = p["embed"] if p["lm_head"] is None else p["lm_head"].T
    for i in range(c.L):
        pre = f"model.layers.{i}."
        wqkv = lay["wqkv"][i].T  # [(Q+2K)H, D]
        out[pre + "self_attn.q_proj.weight"] = wqkv[:QH]
        out[pre + "self_attn.k_proj.weight"] = wqkv[QH : QH + KH]
        out[pre + "self_attn.v_proj.weight"] = wqkv[QH + KH :]
        if lay["bqkv"] is not None:
            b = lay["bqkv"][i]
            out[pre + "self_attn.q_proj.bias"] = b[:QH]
            out[pre + "self_attn.k_proj.bias"] = b[QH : QH + KH]
            out[pre + "self_attn.v_proj.bias"] = b[QH + KH :]
        out[pre + "self_attn.o_proj.weight"] = lay["wo"][i].T
        w_in = lay["w_in"][i].T  # [2F, D]
        out[pre + "mlp.gate_proj.weight"] = w_in[:F]
        out[pre + "mlp.up_proj.weight"] = w_in[F:]
        out[pre + "mlp.down_proj.weight"] = lay["w_out"][i].T
        out[pre + "input_layernorm.weight"] = lay["attn_norm"][i]
        out[pre + "post_attention_layernorm.weight"] = lay["mlp_norm"][i]
    return out


def to_transformers(config: ModelConfig, params: ModelParams):
    """A float32, eval-mode transformers CausalLM holding exactly these weights."""
    import torch
    import transformers

    hf = hf_config_dict(config)
    model_type = hf.pop("model_type")
    hf_cfg = transformers.AutoConfig.for_model(model_type, **hf)
    model = transformers.AutoModelForCausalLM.from_config(hf_cfg, dtype=torch.float32)
    state = {
        k: torch.from_numpy(np.array(v, dtype=np.float32))
        for k, v in hf_state_dict(config, params).items()
    }
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if k != "lm_head.weight"]
    if missing or result.unexpected_keys:
        raise ValueError(f"conversion to transformers left {missing or result.unexpected_keys}")
    if config.tie_word_embeddings:
        model.tie_weights()
    return model.eval()


def _numpy_tree(params: ModelParams) -> dict:
    """Fields of the params as float32 numpy (layers as a dict of stacked arrays)."""

    def arr(x):
        return None if x is None else np.asarray(x, dtype=np.float32)

    fields = {f: getattr(params, f) for f in params.__dataclass_fields__}
    out = {k: arr(v) for k, v in fields.items() if k != "layers"}
    lay = params.layers
    out["layers"] = {f: arr(getattr(lay, f)) for f in lay.__dataclass_fields__}
    return out
