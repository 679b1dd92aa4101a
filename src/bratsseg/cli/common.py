"""What every command module of the CLI shares: argument types and plain output."""

from __future__ import annotations

import argparse
import sys


def say(text: str) -> None:
    """One plain line of progress on stderr (stdout keeps the results)."""
    print(text, file=sys.stderr, flush=True)


def threads_arg(text: str) -> int:
    """``--threads``: a whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value
