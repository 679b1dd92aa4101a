"""What every command module of the CLI shares: argument types and plain output."""

from __future__ import annotations

import argparse
import sys
from typing import Any


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


class _NoBar:
    """What :func:`progress` gives where stderr is not a terminal (tqdm would be silent there anyway)."""

    def update(self, n: int = 1) -> None:
        pass

    def reset(self, total: int | None = None) -> None:
        pass

    def close(self) -> None:
        pass


def progress(desc: str, total: int | None = None) -> Any:
    """A tqdm bar over cases on a terminal (silent when stderr is not one): ``update(n)``, ``reset(total=n)``,
    ``close()``. Off a terminal tqdm is not even imported (25 ms of a device's start-up)."""
    if not sys.stderr.isatty():
        return _NoBar()
    from tqdm import tqdm  # not tqdm.auto: it looks for IPython, 25 ms of every command's start-up

    return tqdm(total=total, desc=desc, unit="case", disable=None, file=sys.stderr)


def add_naming_args(p: argparse.ArgumentParser) -> None:
    """``--convention`` and ``--naming``: how the files of a case are named and labelled, where not BraTS's."""
    p.add_argument("--convention", choices=["brats2021", "brats2023", "msd"], help="override the naming's convention")
    p.add_argument(
        "--naming",
        metavar="SEP:FLAIR,T1,T1CE,T2[,SEG]",
        help="another collection's file naming, e.g. _:FLAIR,T1,T1GD,T2,segm (UPENN-GBM, UCSF-PDGM and nnU-Net "
        "raw datasets are recognised without it)",
    )
