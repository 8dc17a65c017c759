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


class BadImages(DHError):
    """Images of a split are missing or do not decode. The message ends with the library's way to skip them,
    ``", or " + SKIP``, which a front end replaces with its own setting (the CLI: a flag, or nothing where the command
    has none). One string in, so the type survives torch's re-raise from a DataLoader worker."""

    SKIP = "open the split with skip_bad_images=True to skip them"

    @classmethod
    def with_fixes(cls, problem: str) -> "BadImages":
        """``problem`` (what is wrong and the fixes that need no option) followed by the library's skip remedy."""
        return cls(f"{problem}, or {cls.SKIP}")
