"""One entry point from a user's `--model` string to config, params and tokenizer.

Accepts the embedded default's name ("smollm2"), a GGUF file, or a Hugging Face directory
(config.json + safetensors). No hub: a name that is neither is a one-line error.

A GGUF file is read once: its dequantised, dot-ready float32 params and its tokenizer are kept in
the derived-checkpoint cache (`models.derived_cache`), so later loads read those instead of the
file. Nothing here needs torch.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jax
import jax.numpy as jnp
from absl import logging

from models import derived_cache
from models.config import ModelConfig
from models.embedded import DEFAULT_MODEL_NAME, default_gguf_path
from models.errors import SpecjaxError
from models.hf_checkpoint import params_from_hf, read_hf_dir
from models.params_file import LAYOUT, load_params, save_params
from models.progress import phase
from models.transformer import ModelParams

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
# Cache kinds: the params' layout is part of the key, so a new layout never reads an old entry.
PARAMS_CACHE = f"gguf-params-{LAYOUT}"
TOKENIZER_CACHE = "gguf-tokenizer"
_PARAMS_FILE, _CONFIG_FILE = "params.safetensors", "config.json"


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
    if not path.is_dir():
        return _load_gguf(path, DTYPES[dtype], tokenizer)
    hf_config, tensors = read_hf_dir(path)
    config = ModelConfig.from_hf(hf_config)
    logging.info("loaded %s: %s, %.1fM params", path, config.model_type, config.num_params / 1e6)
    params = params_from_hf(config, tensors, DTYPES[dtype])
    tok = _load_hf_tokenizer(path) if tokenizer else None
    return Model(config=config, params=params, tokenizer=tok, source=str(path))


def _load_gguf(path: Path, dtype, want_tokenizer: bool) -> Model:
    """A GGUF model from the cache when it holds this file, else from the file (filling it)."""
    from models.gguf_checkpoint import check_magic, open_gguf

    check_magic(path)
    params_entry = derived_cache.lookup(PARAMS_CACHE, path)
    loaded = _cached_params(params_entry, dtype) if params_entry else None
    tok_entry = derived_cache.lookup(TOKENIZER_CACHE, path) if want_tokenizer else None
    tok = _cached_tokenizer(tok_entry) if tok_entry else None
    reader = None
    if loaded is None or (want_tokenizer and tok is None):
        with phase(f"reading {path.name} (later runs read the cache)"):
            reader = open_gguf(path)
    if loaded is None:
        loaded = _params_from_gguf(path, reader, dtype)
    if want_tokenizer and tok is None:
        tok = _tokenizer_from_gguf(path, reader)
    config, params = loaded
    logging.info("loaded %s: %s, %.1fM params", path, config.model_type, config.num_params / 1e6)
    return Model(config=config, params=params, tokenizer=tok, source=str(path))


def _cached_params(entry: Path, dtype) -> tuple[ModelConfig, ModelParams] | None:
    try:
        config = ModelConfig.from_dict(json.loads((entry / _CONFIG_FILE).read_text()))
        with phase("loading the cached weights"):
            return config, load_params(entry / _PARAMS_FILE, config, dtype)
    except (SpecjaxError, OSError, ValueError, TypeError, KeyError) as e:  # sealed, yet unusable
        logging.warning("cached params %s are unusable (%s); rebuilding them", entry, e)
        return None


def _params_from_gguf(path: Path, reader, dtype) -> tuple[ModelConfig, ModelParams]:
    from models.gguf_checkpoint import read_gguf

    with phase("dequantising the weights"):
        hf_config, tensors = read_gguf(path, reader)
        config = ModelConfig.from_hf(hf_config)
        params = params_from_hf(config, tensors, jnp.float32)
        del tensors

    def write(tmp: Path) -> None:
        save_params(tmp / _PARAMS_FILE, params)
        (tmp / _CONFIG_FILE).write_text(json.dumps(config.to_dict(), indent=1))

    with phase("caching the weights"):
        derived_cache.store(PARAMS_CACHE, path, write)
    if dtype != jnp.float32:
        params = jax.tree.map(
            lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, params
        )
    return config, params


def _cached_tokenizer(entry: Path):
    from transformers import PreTrainedTokenizerFast

    try:
        return PreTrainedTokenizerFast.from_pretrained(str(entry))
    except Exception as e:  # sealed, yet unreadable by this transformers: rebuild it
        logging.warning("cached tokenizer %s is unusable (%s); rebuilding it", entry, e)
        return None


def _tokenizer_from_gguf(path: Path, reader):
    """Builds the tokenizer and caches it; returns what later loads will return."""
    from models.gguf_checkpoint import tokenizer_fields
    from models.gguf_tokenizer import tokenizer_from_gguf

    with phase("building the tokenizer"):
        tok = tokenizer_from_gguf(path, tokenizer_fields(reader))
    entry = derived_cache.store(TOKENIZER_CACHE, path, tok.save_pretrained)
    return (_cached_tokenizer(entry) if entry else None) or tok


def _load_hf_tokenizer(path: Path):
    if not any((path / f).is_file() for f in ("tokenizer.json", "tokenizer.model", "vocab.json")):
        return None
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(path))
    except (OSError, ValueError) as e:
        raise SpecjaxError(
            f"cannot load the tokenizer of {path}: {str(e).splitlines()[0]}"
        ) from None
