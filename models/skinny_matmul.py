"""Few-row matmuls on XLA:CPU that read each weight once: the CPU decode's verify forwards.

A speculative step runs the target over T = 2-16 tokens, and on a 2-core CPU XLA's matrix-matrix
dot made that cost 1.5-3 times a 1-token forward although it reads the same weights (DESIGN
"Performance model"). `skinny_matmul.cc` is a small AVX2/FMA kernel over weights pre-packed into
16-column panels; this module compiles it with the machine's C++ compiler on first use (cached
under specjax's cache directory, keyed by the source, the compiler and jaxlib's FFI headers),
registers it as an XLA FFI target and calls it from jitted code.

Where there is no compiler, no AVX2/FMA, or another backend, `available()` is False and the decode
keeps plain weights and XLA's dot: the kernel is a speed-up, never a requirement.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from flax import struct

from models.derived_cache import cache_root
from models.progress import phase

PANEL = 16  # columns per packed panel (the kernel's two AVX registers)
_SOURCE = Path(__file__).with_name("skinny_matmul.cc")
_TARGET = "specjax_skinny_matmul"
_SYMBOL = "SpecjaxSkinnyMatmul"
# SPECJAX_SKINNY_MATMUL=0 keeps XLA's dot (for comparisons, or a machine where the build misbehaves).
ENABLED = os.environ.get("SPECJAX_SKINNY_MATMUL", "1") != "0"


@struct.dataclass
class PackedWeight:
    """A [D, F] weight as panels [P, D, 16] (P = ceil(F / 16), padded columns zero)."""

    panels: jax.Array  # [P, D, 16] float32
    cols: int = struct.field(pytree_node=False)  # F

    @property
    def shape(self) -> tuple[int, int]:
        return (self.panels.shape[1], self.cols)


def pack(w_DF) -> PackedWeight:
    """The panel layout of a [D, F] float32 weight, made once outside jit (a copy of the weight)."""
    w = np.asarray(w_DF, np.float32)
    D, F = w.shape
    P = -(-F // PANEL)
    padded = np.zeros((D, P * PANEL), np.float32)
    padded[:, :F] = w
    panels = np.ascontiguousarray(padded.reshape(D, P, PANEL).transpose(1, 0, 2))
    return PackedWeight(panels=jnp.asarray(panels), cols=F)


def unpack(w: PackedWeight) -> np.ndarray:
    """The [D, F] weight a PackedWeight holds (the inverse of `pack`)."""
    panels = np.asarray(w.panels)
    P, D, _ = panels.shape
    return panels.transpose(1, 0, 2).reshape(D, P * PANEL)[:, : w.cols]


def _cpu_has_avx2_fma() -> bool:
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx2" in flags and " fma" in flags


def _compiler() -> str | None:
    for name in (os.environ.get("CXX"), "g++", "clang++", "c++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def kernel_dir() -> Path:
    """Where built kernels live: `$SPECJAX_KERNEL_CACHE`, else `kernels/` in specjax's cache. A
    kernel's file name carries a hash of its source, compiler, flags and jaxlib, so one directory
    may serve any number of caches (the test suite shares one across its processes)."""
    env = os.environ.get("SPECJAX_KERNEL_CACHE")
    return Path(env).expanduser() if env else cache_root() / "kernels"


def _build(cxx: str) -> Path:
    """The shared library for this source, compiler and jaxlib, built once per cache directory."""
    include = jax.ffi.include_dir()
    flags = ["-O3", "-mavx2", "-mfma", "-std=c++17", "-shared", "-fPIC"]
    version = subprocess.run([cxx, "--version"], capture_output=True, text=True).stdout
    ident = hashlib.sha256()
    for part in (_SOURCE.read_bytes(), version, include, jax.__version__, " ".join(flags)):
        ident.update(part if isinstance(part, bytes) else part.encode())
    out = kernel_dir() / f"skinny_matmul-{ident.hexdigest()[:16]}.so"
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    # Built under a temporary name and renamed into place: parallel first uses never see half a file.
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=out.parent)
    os.close(fd)
    cmd = [cxx, *flags, "-I", include, str(_SOURCE), "-o", tmp]
    with phase("building the CPU matmul kernel (once per machine)"):
        done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        os.unlink(tmp)
        raise RuntimeError(done.stderr.strip().splitlines()[-1] if done.stderr else "build failed")
    os.replace(tmp, out)
    return out


def source_digest() -> str:
    """A short hash of the kernel's source: caches of what the kernel's speed decides (the
    measured verify cost) are keyed by it, so an edited kernel is measured again."""
    return hashlib.sha256(_SOURCE.read_bytes()).hexdigest()[:16]


@functools.cache
def available() -> bool:
    """Whether the kernel is built and registered here (tried once per process)."""
    if not ENABLED or jax.default_backend() != "cpu" or not _cpu_has_avx2_fma():
        return False
    cxx = _compiler()
    if cxx is None:
        logging.info("no C++ compiler: CPU decode keeps XLA's dot for few-row matmuls")
        return False
    try:
        library = ctypes.cdll.LoadLibrary(str(_build(cxx)))
        handler = jax.ffi.pycapsule(getattr(library, _SYMBOL))
        jax.ffi.register_ffi_target(_TARGET, handler, platform="cpu")
    except (OSError, RuntimeError, AttributeError) as e:
        logging.warning("skinny matmul kernel unavailable (%s): keeping XLA's dot", e)
        return False
    return True


def matmul(x_ND: jax.Array, w: PackedWeight) -> jax.Array:
    """x_ND @ W as float32 [..., F] for x of shape [..., D]: the kernel on packed panels."""
    if not available():  # registers the target on first use in this process
        raise RuntimeError("the few-row matmul kernel is not available on this machine")
    *lead, D = x_ND.shape
    x = x_ND.reshape(-1, D).astype(jnp.float32)
    out = jax.ffi.ffi_call(
        _TARGET,
        jax.ShapeDtypeStruct((x.shape[0], w.cols), jnp.float32),
        vmap_method="sequential",
    )(x, w.panels)
    return out.reshape(*lead, w.cols)
