"""What every command's flags share, below every floor so that an analysis module may define its own command: argparse
types that refuse a value out of range while the command line is parsed, the flag-named form of the library's value
checks, and the line naming what a command wrote. Torch-free (argparse only).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from dhanalysis.errors import DHError


# ------------------------------------------------------------------------------------------------ flag types
# argparse ``type=`` converters that refuse a value out of range while the command line is parsed, before any work:
# argparse words the refusal as one line naming the flag (``argument --iterations: must be an integer >= 1, got 0``).
def _integer(text: str, low: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got '{text}'") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {value}")
    return value


def _number(text: str, low: float, low_open: bool, high: float | None = None) -> float:
    import math

    wanted = (f"a number in [{low:g}, {high:g}]" if high is not None
              else f"a finite number {'>' if low_open else '>='} {low:g}")
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {wanted}, got '{text}'") from None
    above = value > low if low_open else value >= low
    if not (math.isfinite(value) and above and (high is None or value <= high)):
        raise argparse.ArgumentTypeError(f"must be {wanted}, got {text}")
    return value


def positive_int(text: str) -> int:
    """A count that must be at least 1 (iterations, images, batch sizes, processes)."""
    return _integer(text, 1)


def non_negative_int(text: str) -> int:
    """A count where 0 means none or off (workers, depth)."""
    return _integer(text, 0)


def positive_float(text: str) -> float:
    """A finite number above 0 (a learning rate)."""
    return _number(text, 0.0, low_open=True)


def fraction(text: str) -> float:
    """A number in [0, 1] (a probability, a threshold)."""
    return _number(text, 0.0, low_open=False, high=1.0)


def at_least(low: int):
    """A type for an integer flag with its own floor (e.g. a batch that needs several images)."""

    def convert(text: str) -> int:
        return _integer(text, low)

    return convert


# ------------------------------------------------------------------------------------------------ flags -> values
def check_at_least(args: argparse.Namespace, **minimums: int) -> None:
    """``--flag must be at least N``: the flag-named form of the library's value checks, before anything runs."""
    for dest, low in minimums.items():
        value = getattr(args, dest, None)
        if value is not None and value < low:
            raise DHError(f"--{dest.replace('_', '-')} must be at least {low}, got {value}")


def flag_error(flag: str, check, *values: Any) -> Any:
    """``check(*values)``, with a `DHError` it raises prefixed by the flag the values came from."""
    try:
        return check(*values)
    except DHError as exc:
        raise DHError(f"{flag}: {exc}") from None



def print_written(paths: list[Path]) -> None:
    print(f"wrote {', '.join(str(p) for p in paths)}")
