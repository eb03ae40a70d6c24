"""Names the phase a command is in once it has taken more than a second, so a user is never left
staring at a silent terminal (loading, dequantising, writing a cache entry, compiling).

Library calls stay quiet unless a command line turns the notices on (`show_phases(True)`); the
phases are always logged at INFO with their durations.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Iterator

from absl import logging

_SHOW = False
_DELAY_S = 1.0


def show_phases(on: bool) -> None:
    """Turns the stderr notices on (the CLIs do) or off (the default for library use)."""
    global _SHOW
    _SHOW = on


@contextlib.contextmanager
def phase(label: str) -> Iterator[None]:
    """Prints `label ...` on stderr if the block is still running after a second, then its time."""
    start = time.perf_counter()
    announced = threading.Event()

    def announce() -> None:
        if _SHOW:
            print(f"{label} ...", end="", file=sys.stderr, flush=True)
            announced.set()

    timer = threading.Timer(_DELAY_S, announce)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        timer.join()
        seconds = time.perf_counter() - start
        if announced.is_set():
            print(f" {seconds:.1f} s", file=sys.stderr, flush=True)
        logging.info("%s: %.2f s", label, seconds)
