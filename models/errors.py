"""The one exception type users see.

Raised at the boundary (loading, argument checking), never inside jitted code; the CLIs turn it into
one line on stderr and exit code 2.
"""


class SpecjaxError(Exception):
    """A user-facing error whose message is one line that says what to fix."""
