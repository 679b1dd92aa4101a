"""Atomic writes: a file or folder appears complete under its name or not at all, whatever interrupts the writer.

Every writer of the package goes through :func:`atomic_path` (files) or :func:`atomic_dir` (folders): the data is
written beside its destination under a hidden temporary name (``.NAME.<random>.tmp[.suffix]``), flushed to disk
and renamed over the destination; on any error the temporary is removed. :func:`remove_stale_temporaries` clears
what a killed process left behind.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def _temporary(path: Path, suffix: str = "") -> Path:
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp{suffix}")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink(missing_ok=True)


@contextmanager
def atomic_path(path: str | Path, suffix: str = "", exclusive: bool = False) -> Iterator[Path]:
    """Yield a temporary file path beside ``path``; when the block ends without error the file is fsynced and
    renamed onto ``path``. ``suffix`` (e.g. ``".nii.gz"``) lets writers that look at the extension see it.
    ``exclusive``: never replace a ``path`` that exists by then (another writer's): :class:`FileExistsError`."""
    path = Path(path)
    tmp = _temporary(path, suffix)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        if exclusive:
            _link_exclusive(tmp, path)
        else:
            os.replace(tmp, path)
    finally:
        _remove(tmp)


def _link_exclusive(tmp: Path, path: Path) -> None:
    """Give ``tmp`` the name ``path`` only if no file has it: a hard link is created or fails atomically. Where the
    file system has no hard links, a rename after a check (a window of microseconds instead of the whole write)."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise
    except OSError:
        if path.exists():
            raise FileExistsError(str(path)) from None
        os.replace(tmp, path)


def stale_temporaries(folder: str | Path, older_than_s: float) -> list[Path]:
    """The hidden temporaries in ``folder`` untouched for ``older_than_s`` seconds (a live writer touches its own
    within seconds): what a killed process left."""
    import time

    now = time.time()
    out = []
    for p in Path(folder).glob(".*.tmp*"):
        try:
            if now - p.lstat().st_mtime > older_than_s:
                out.append(p)
        except OSError:
            continue
    return sorted(out)


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a new empty temporary folder beside ``path``; when the block ends without error it replaces
    ``path`` (the old folder, if any, is moved aside first and then deleted)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary(path)
    tmp.mkdir()
    try:
        yield tmp
        old = _temporary(path, ".old")
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
        _remove(old)
    finally:
        _remove(tmp)


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | Path, text: str) -> None:
    write_bytes_atomic(path, text.encode())


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """Write JSON to ``path`` through a temporary file and a rename, so readers never see half a file."""
    write_text_atomic(path, json.dumps(obj, indent=1))


def remove_stale_temporaries(folder: str | Path) -> None:
    """Delete the hidden temporaries that an interrupted writer left in ``folder``."""
    for p in Path(folder).glob(".*.tmp*"):
        _remove(p)
