"""One entry point from a user's `--model` string to config, params and tokenizer.

Accepts the embedded default's name ("smollm2"), a GGUF file, or a Hugging Face directory
(config.json + safetensors). No hub: a name that is neither is a one-line error.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax.numpy as jnp
from absl import logging

from models.config import ModelConfig
from models.embedded import DEFAULT_MODEL_NAME, default_gguf_path
from models.hf_checkpoint import params_from_hf, read_hf_dir
from models.transformer import ModelParams
from specjax.errors import SpecjaxError

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


@dataclasses.dataclass
class Model:
    """A loaded target or draft. `tokenizer` is a transformers tokenizer (None if the dir has none)."""

    config: ModelConfig
    params: ModelParams
    tokenizer: object | None
    source: str

    @property
    def has_chat_template(self) -> bool:
        return getattr(self.tokenizer, "chat_template", None) is not None

    @property
    def eos_ids(self) -> tuple[int, ...]:
        """EOS ids from the config and the tokenizer (instruct models end turns with their own)."""
        ids = list(self.config.eos_token_ids)
        eos = getattr(self.tokenizer, "eos_token_id", None)
        if eos is not None and eos not in ids:
            ids.append(eos)
        return tuple(ids)


def resolve(spec: str | None) -> Path:
    """The file or directory a `--model` string names."""
    if spec in (None, "", DEFAULT_MODEL_NAME):
        return default_gguf_path()
    path = Path(spec).expanduser()
    if not path.exists():
        raise SpecjaxError(
            f"model not found: {spec} (give a GGUF file, a Hugging Face directory with "
            f"config.json + safetensors, or {DEFAULT_MODEL_NAME!r})"
        )
    return path


def load_model(spec: str | None = None, dtype: str = "float32", tokenizer: bool = True) -> Model:
    """Loads a model by name or path; every bad input raises SpecjaxError with one line."""
    if dtype not in DTYPES:
        raise SpecjaxError(f"unknown dtype {dtype!r} (choose from {', '.join(DTYPES)})")
    path = resolve(spec)
    if path.is_dir():
        hf_config, tensors = read_hf_dir(path)
    else:
        from models.gguf_checkpoint import read_gguf

        hf_config, tensors = read_gguf(path)
    config = ModelConfig.from_hf(hf_config)
    logging.info("loaded %s: %s, %.1fM params", path, config.model_type, config.num_params / 1e6)
    params = params_from_hf(config, tensors, DTYPES[dtype])
    tok = _load_tokenizer(path) if tokenizer else None
    return Model(config=config, params=params, tokenizer=tok, source=str(path))


def _load_tokenizer(path: Path):
    if not path.is_dir():
        from models.gguf_checkpoint import load_gguf_tokenizer

        return load_gguf_tokenizer(path)
    if not any((path / f).is_file() for f in ("tokenizer.json", "tokenizer.model", "vocab.json")):
        return None
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(path))
    except (OSError, ValueError) as e:
        raise SpecjaxError(
            f"cannot load the tokenizer of {path}: {str(e).splitlines()[0]}"
        ) from None
