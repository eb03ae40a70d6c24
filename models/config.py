"""Static model configuration, parsed from a Hugging Face `config.json` dict.

Dimension legend used across specjax (README "Contributing"):
B batch, T new tokens in one forward, S cache slots, L layers, D model width, F MLP width,
Q query heads, K kv heads, G = Q // K query heads per kv head, H head dim, V vocab.

The config is a frozen dataclass so it is hashable and can be a static argument of `jax.jit`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from models.errors import SpecjaxError

# model_type values (config.json) that share the Llama block: RMSNorm, RoPE, SwiGLU, GQA.
LLAMA_LIKE = ("llama", "mistral", "qwen2")
SUPPORTED_MODEL_TYPES = (*LLAMA_LIKE, "gpt2")


@dataclasses.dataclass(frozen=True)
class RopeScaling:
    """Llama 3 frequency-dependent RoPE scaling (`rope_type: llama3`); linear scaling as factor only."""

    rope_type: str = "default"
    factor: float = 1.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position_embeddings: int = 8192


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Everything the forward needs that is not an array.

    Attributes:
      model_type: "llama", "mistral", "qwen2" (one Llama block) or "gpt2".
      V, D, L, F: vocab size, width, layers, MLP width.
      Q, K, H: query heads, kv heads, head dim.
    """

    model_type: str
    V: int
    D: int
    L: int
    F: int
    Q: int
    K: int
    H: int
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    rope_scaling: RopeScaling | None = None
    tie_word_embeddings: bool = False
    qkv_bias: bool = False
    max_positions: int = 2048
    bos_token_id: int | None = None
    eos_token_ids: tuple[int, ...] = ()

    @property
    def G(self) -> int:
        return self.Q // self.K

    @property
    def is_gpt2(self) -> bool:
        return self.model_type == "gpt2"

    @property
    def num_params(self) -> int:
        """Parameter count of the layers, embedding and head (biases and norms included)."""
        qkv = self.D * (self.Q + 2 * self.K) * self.H
        mlp = self.D * self.F * (2 if self.is_gpt2 else 3)
        per_layer = qkv + self.Q * self.H * self.D + mlp + 4 * self.D
        head = 0 if self.tie_word_embeddings else self.V * self.D
        pos = self.max_positions * self.D if self.is_gpt2 else 0
        return self.L * per_layer + self.V * self.D + head + pos + 2 * self.D

    def to_dict(self) -> dict[str, Any]:
        """JSON-able fields (for saved drafts and the weights cache); `from_dict` inverts it."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        d = dict(d)
        if d.get("rope_scaling") is not None:
            d["rope_scaling"] = RopeScaling(**d["rope_scaling"])
        d["eos_token_ids"] = tuple(d.get("eos_token_ids", ()))
        return cls(**d)

    @classmethod
    def from_hf(cls, hf: dict[str, Any]) -> ModelConfig:
        """Parses a config.json dict; an unknown architecture is a one-line SpecjaxError."""
        model_type = hf.get("model_type")
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise SpecjaxError(
                f"unknown architecture {model_type!r} (supported: {', '.join(SUPPORTED_MODEL_TYPES)})"
            )
        try:
            eos = hf.get("eos_token_id")
            eos_ids = (
                tuple(eos) if isinstance(eos, (list, tuple)) else (() if eos is None else (eos,))
            )
            if model_type == "gpt2":
                D, Q = hf["n_embd"], hf["n_head"]
                return cls(
                    model_type="gpt2",
                    V=hf["vocab_size"],
                    D=D,
                    L=hf["n_layer"],
                    F=hf.get("n_inner") or 4 * D,
                    Q=Q,
                    K=Q,
                    H=D // Q,
                    norm_eps=hf.get("layer_norm_epsilon", 1e-5),
                    tie_word_embeddings=hf.get("tie_word_embeddings", True),
                    qkv_bias=True,
                    max_positions=hf["n_positions"],
                    bos_token_id=hf.get("bos_token_id"),
                    eos_token_ids=eos_ids,
                )
            D, Q = hf["hidden_size"], hf["num_attention_heads"]
            rope_params = hf.get("rope_scaling") or hf.get("rope_parameters") or {}
            rope_theta = hf.get("rope_theta", rope_params.get("rope_theta", 10000.0))
            rope_type = rope_params.get("rope_type", rope_params.get("type", "default"))
            scaling = None
            if rope_type == "llama3":
                scaling = RopeScaling(
                    rope_type="llama3",
                    factor=float(rope_params["factor"]),
                    low_freq_factor=float(rope_params["low_freq_factor"]),
                    high_freq_factor=float(rope_params["high_freq_factor"]),
                    original_max_position_embeddings=int(
                        rope_params["original_max_position_embeddings"]
                    ),
                )
            elif rope_type == "linear":
                scaling = RopeScaling(rope_type="linear", factor=float(rope_params["factor"]))
            elif rope_type not in ("default", None):
                raise SpecjaxError(f"unsupported rope scaling type {rope_type!r}")
            return cls(
                model_type=model_type,
                V=hf["vocab_size"],
                D=D,
                L=hf["num_hidden_layers"],
                F=hf["intermediate_size"],
                Q=Q,
                K=hf.get("num_key_value_heads") or Q,
                H=hf.get("head_dim") or D // Q,
                norm_eps=hf.get("rms_norm_eps", 1e-6),
                rope_theta=float(rope_theta),
                rope_scaling=scaling,
                tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
                qkv_bias=model_type == "qwen2" or bool(hf.get("attention_bias", False)),
                max_positions=hf.get("max_position_embeddings", 2048),
                bos_token_id=hf.get("bos_token_id"),
                eos_token_ids=eos_ids,
            )
        except KeyError as e:
            raise SpecjaxError(
                f"config.json for {model_type} lacks the field {e.args[0]!r}"
            ) from None
