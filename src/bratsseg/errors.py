"""The one exception type for user errors (bad files, bad values, bad options)."""

from __future__ import annotations

from pathlib import Path


class BratsSegError(Exception):
    """A problem with the user's input: the message names the file or value and the problem.

    The CLI prints ``str(error)`` as one line and exits non-zero, without a traceback.
    """

    def __init__(self, message: str, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else None
        if self.path is not None and str(self.path) not in message:
            message = f"{self.path}: {message}"
        super().__init__(message)
