"""The project's own error type.

A `DHError` is a mistake the user can fix (a missing file, a wrong flag, a mismatched checkpoint). The CLI prints it
as one line, ``dhanalysis: error: ...``, and exits with code 2; any other exception keeps its traceback because it is
a bug, not a user error.
"""


class DHError(Exception):
    """A user-facing error whose message says what is wrong and how to fix it, in one line."""


class OutOfMemory(DHError):
    """Out of memory even at the smallest batch the automatic halving tries; ``batch_size`` is that floor, so a
    front end can name its own setting for it (the CLI: ``--batch-size``)."""

    def __init__(self, batch_size: int, message: str):
        super().__init__(message)
        self.batch_size = batch_size


class DeviceUnavailable(DHError):
    """A CUDA device was asked for where none is visible; ``device`` is what was asked for, so a front end can name
    its own setting for it (the CLI: ``--device``)."""

    def __init__(self, device: str, message: str):
        super().__init__(message)
        self.device = device
