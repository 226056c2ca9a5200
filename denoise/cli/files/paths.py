"""Files on disk: writing one atomically, checking one exists before reading it, hashing one."""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from pathlib import Path
from typing import Callable

from ..errors import InputError
from ..signals import check as check_signals, deferred

_umask_lock = threading.Lock()


def current_umask() -> int:
    """The process's umask, read without changing it where Linux says it (``Umask:`` in /proc/self/status);
    elsewhere set and restored at once, under a lock so that two threads asking never leave it at 0."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _umask_lock:
        mask = os.umask(0o077)  # the window leaves files private, never world-writable
        os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode ``open`` gives a new file: ``0o666`` less the umask."""
    return 0o666 & ~current_umask()


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, fsync it, then rename it over ``path``.

    A crash at any point leaves either the old file or none, never a half-written one; a signal
    (``denoise.cli.signals``) leaves no temporary file either. ``path`` gets the mode a plain ``open`` would give it
    (``0o666`` less the umask), not the private ``0o600`` of the temporary file.
    """
    path = Path(path)
    if path.is_dir():
        raise InputError(path, "is a directory; expected an output file path")
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise InputError(directory, "output directory does not exist")
    tmp = None
    try:
        with deferred():  # a signal waits until the temporary file is known to the cleanup below
            fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
            os.close(fd)
            tmp = Path(tmp_name)
        write(tmp)
        with open(tmp, "rb+") as handle:  # ``write`` may have replaced the file: set the mode of the one renamed
            os.fchmod(handle.fileno(), file_mode())
            os.fsync(handle.fileno())
        check_signals()  # a signal whose ``Interrupted`` was swallowed on its way stops the rename still
        os.replace(tmp, path)
    except BaseException:
        if tmp is not None:
            with deferred():
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
