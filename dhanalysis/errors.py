"""The project's own error type.

A `DHError` is a mistake the user can fix (a missing file, a wrong flag, a mismatched checkpoint). The CLI prints it
as one line, ``dhanalysis: error: ...``, and exits with code 2; any other exception keeps its traceback because it is
a bug, not a user error.
"""


class DHError(Exception):
    """A user-facing error whose message says what is wrong and how to fix it, in one line."""
