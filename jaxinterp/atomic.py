"""Writing files and directories whole or not at all: readers (and a resumed run) see the old or the new, never half.

Every writer in jaxinterp goes through `atomic_path`: write into the temporary sibling it yields, and on leaving the
``with`` block the result replaces ``path`` in one rename (fsynced, so it survives a power cut as well as a kill).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np

__all__ = ["TMP_SUFFIX", "atomic_path", "write_bytes", "write_json", "write_npy", "write_npz", "write_text"]

TMP_SUFFIX = ".partial"
"""Suffix of the temporary siblings; a leftover one is an interrupted write and is replaced on the next try."""


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | Path, *, directory: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary sibling of ``path`` to write (a file, or a directory made empty with ``directory``);
    on success it replaces ``path`` whole, on an exception it is removed and ``path`` is left as it was."""
    path = Path(path)
    tmp = path.with_name(path.name + TMP_SUFFIX)
    shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)
    if directory:
        tmp.mkdir(parents=True)
    else:
        tmp.parent.mkdir(parents=True, exist_ok=True)
    try:
        yield tmp
        for written in [*tmp.rglob("*"), tmp] if directory else [tmp]:
            if written.is_file():
                _fsync(written)
        if directory and path.exists():
            # A directory cannot be renamed over a non-empty one: move the old aside first, drop it after.
            old = path.with_name(path.name + ".old")
            shutil.rmtree(old, ignore_errors=True)
            path.rename(old)
            tmp.rename(path)
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)
        _fsync(path.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)
        raise


def write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json(path: str | Path, payload) -> Path:
    """``payload`` as indented JSON, whole or not at all."""
    return write_text(path, json.dumps(payload, indent=1) + "\n")


def write_npy(path: str | Path, array) -> Path:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, np.asarray(array), allow_pickle=False)
    return Path(path)


def write_npz(path: str | Path, **arrays) -> Path:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)
    return Path(path)
