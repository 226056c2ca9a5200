"""Files on disk: writing one atomically, checking one exists before reading it, hashing one."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Callable

from ..errors import InputError


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, fsync it, then rename it over ``path``.

    A crash at any point leaves either the old file or none, never a half-written one.
    """
    path = Path(path)
    if path.is_dir():
        raise InputError(path, "is a directory; expected an output file path")
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise InputError(directory, "output directory does not exist")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise

def check_input_path(path: str | Path) -> Path:
    """Return ``path`` as a Path if it is an existing regular file, else raise InputError."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "no such file")
    if not path.is_file():
        raise InputError(path, "is not a regular file")
    return path

def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
