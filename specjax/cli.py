"""What every specjax command line shares: one-line errors with exit 2, quiet logging by default,
phase notices for slow steps, JAX's persistent compilation cache, and joining a multi-process run
(`specjax.multihost`) before anything else touches JAX."""

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

flags.DEFINE_bool(
    "distributed",
    False,
    "Join a multi-process JAX run (jax.distributed.initialize) before any computation. On a Cloud "
    "TPU VM slice this flag alone does it (run the same command on every worker); elsewhere also "
    "give --coordinator_address, --num_processes and --process_id, or JAX_COORDINATOR_ADDRESS, "
    "JAX_NUM_PROCESSES and JAX_PROCESS_ID.",
)
flags.DEFINE_string(
    "coordinator_address",
    "",
    "host:port of process 0's coordinator for a multi-process run (implies --distributed).",
)
flags.DEFINE_integer("num_processes", None, "Processes in a multi-process run.")
flags.DEFINE_integer("process_id", None, "This process's index in a multi-process run.")


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
    if FLAGS.compile_cache:
        enable_compilation_cache()
    from specjax.multihost import initialize_from_flags, is_primary

    try:
        initialize_from_flags(FLAGS)
    except SpecjaxError as e:
        fail(str(e))
    show_phases(is_primary())  # one process's phase notices are enough
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
