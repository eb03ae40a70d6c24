"""Tiny random transformers models (the PyTorch reference) saved as HF directories, for tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

TINY = dict(vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=3)


def make_tiny_hf_model(model_type: str, out_dir: Path, seed: int = 0, **overrides):
    """Builds, saves (safetensors) and returns a tiny random transformers model in float32."""
    import torch
    import transformers

    torch.manual_seed(seed)
    if model_type == "gpt2":
        cfg = transformers.GPT2Config(
            vocab_size=97, n_embd=64, n_layer=3, n_head=4, n_positions=128, **overrides
        )
        model = transformers.GPT2LMHeadModel(cfg)
    else:
        kw = dict(TINY, num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=256)
        kw.update(overrides)
        cls = {
            "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM),
            "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM),
            "mistral": (transformers.MistralConfig, transformers.MistralForCausalLM),
        }[model_type]
        model = cls[1](cls[0](**kw))
    model = model.float().eval()
    # Random init leaves norms at 1 and biases at 0; perturb them so the test sees them.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or "ln_" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    model.save_pretrained(out_dir, safe_serialization=True)
    return model


def torch_logits(model, tokens: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return model(torch.as_tensor(tokens, dtype=torch.long)).logits.float().numpy()
