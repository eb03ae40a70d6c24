"""What every specjax command line shares: one-line errors with exit 2, quiet logging by default."""

from __future__ import annotations

import sys

from absl import flags, logging

from specjax.errors import SpecjaxError

FLAGS = flags.FLAGS


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
    return rest
