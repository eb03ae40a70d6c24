"""What every specjax command line shares: one-line errors with exit 2, quiet logging by default,
phase notices for slow steps, and JAX's persistent compilation cache."""

from __future__ import annotations

import os
import sys

from absl import flags, logging

from models.derived_cache import cache_root
from models.errors import SpecjaxError
from models.progress import show_phases

FLAGS = flags.FLAGS
flags.DEFINE_bool(
    "compile_cache",
    True,
    "Keep compiled XLA programs in the specjax cache directory, so a second run skips most "
    "compilation (--nocompile_cache turns it off; JAX_COMPILATION_CACHE_DIR overrides the place).",
)


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def run_or_fail(argv: list[str], run, flag_example: str):
    """`run()`'s result; a stray positional argument or a SpecjaxError ends as one line, exit 2."""
    if len(argv) > 1:
        fail(f"unexpected argument {argv[1]!r} (flags look like {flag_example})")
    try:
        return run()
    except SpecjaxError as e:
        fail(str(e))


def parse_flags(argv: list[str]) -> list[str]:
    """absl parsing, but a bad flag is one line and exit 2, not a usage dump.

    `app.run` raises an unset --verbosity to INFO, which floods stderr with JAX's and our INFO
    lines; keep WARNING unless the user asks (--verbosity=0), so stderr is our status lines only.
    """
    try:
        rest = FLAGS(argv)
    except flags.Error as e:
        fail(str(e).splitlines()[0])
    if FLAGS["verbosity"].using_default_value:
        logging.set_verbosity(logging.WARNING)
        # transformers announces at import that torch is absent; a JAX user needs no torch.
        os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    show_phases(True)
    if FLAGS.compile_cache:
        enable_compilation_cache()
    return rest


def enable_compilation_cache() -> None:
    """JAX's persistent compilation cache under the specjax cache (or JAX_COMPILATION_CACHE_DIR).

    Every program is kept, however fast it compiled: the CLIs compile a handful of programs, and
    the decode loop's 1-2 s of compilation is most of a short run's wall time.
    """
    import jax

    if not jax.config.jax_compilation_cache_dir:
        jax.config.update("jax_compilation_cache_dir", str(cache_root() / "xla"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
