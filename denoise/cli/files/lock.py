"""Advisory locks: a work directory or output file in use by one denoise process is refused to another.

The lock is an ``flock`` on a lock file (``DIR/.denoise.lock`` in a work directory, ``.NAME.lock`` beside
an output file) that holds the holder's pid and command, which the refusal names. The kernel drops an
flock when its process ends, however it ends, so the lock file of a dead process (``kill -9``, a lost
machine) is simply taken over. A command declares what it writes with ``writes``, and ``lock_outputs`` wires
the locks once into every such command: two ``denoise run`` in one work directory never interleave their stages.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import os
import shlex
import sys
from pathlib import Path
from typing import Iterator

from ..distributed import main_process
from ..errors import BusyError
from ..signals import deferred

LOCK_NAME = ".denoise.lock"


def writes(**outputs: bool):
    """Declare the parameters of a command that name what it writes (parameter name -> whether it is a
    directory): ``lock_outputs`` holds their locks while the command runs."""
    def declare(command):
        command.writes = outputs
        return command
    return declare


def lock_path(path: Path, directory: bool) -> Path:
    """Where the lock of a work directory or of an output file lives."""
    return path / LOCK_NAME if directory else path.with_name(f".{path.name}.lock")


@contextlib.contextmanager
def hold(path: str | Path, *, directory: bool, command: str) -> Iterator[None]:
    """Within the block, this process holds the lock of ``path``; raises BusyError at once if another
    live process holds it. A work directory is created if needed (and removed again if it stays empty);
    an output file whose directory does not exist is not locked: the command itself reports that."""
    path = Path(path)
    created = directory and not path.exists()
    if directory:
        path.mkdir(parents=True, exist_ok=True)
    elif not path.parent.is_dir():
        yield
        return
    lock, descriptor = lock_path(path, directory), None
    try:
        with deferred():  # a signal waits until the lock is taken and recorded: no lock file without its holder
            descriptor = _acquire(path, lock)
            os.ftruncate(descriptor, 0)
            os.write(descriptor, json.dumps({"pid": os.getpid(), "command": command}).encode())
        yield
    finally:
        with deferred():  # and until it is released and its file removed
            if descriptor is not None:
                lock.unlink(missing_ok=True)  # before the flock is dropped: a waiting process then locks a new file
                os.close(descriptor)
            if created:
                with contextlib.suppress(OSError):
                    path.rmdir()


def _acquire(path: Path, lock: Path) -> int:
    """An open descriptor of ``lock`` holding its flock (retried if its holder removed the file meanwhile)."""
    while True:
        descriptor = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(descriptor)
            os.close(descriptor)
            raise BusyError(path, f"in use by another denoise process ({holder}); wait for it to end or stop "
                                  f"it (a lock whose process has ended is taken over)") from None
        with contextlib.suppress(FileNotFoundError):
            if os.stat(lock).st_ino == os.fstat(descriptor).st_ino:
                return descriptor
        os.close(descriptor)  # locked a file its holder had just removed: lock the current one


def _holder(descriptor: int) -> str:
    """``pid N: COMMAND`` from a lock file's record (``pid unknown`` while its holder is still writing it)."""
    try:
        record = json.loads(os.pread(descriptor, 1 << 16, 0))
        return f"pid {int(record['pid'])}: {record['command']}"
    except (ValueError, KeyError, TypeError):
        return "pid unknown"


def lock_outputs(command) -> None:
    """Make every command of a click command tree hold the locks of the outputs it declares (``writes``)
    while it runs."""
    for subcommand in getattr(command, "commands", {}).values():
        lock_outputs(subcommand)
    outputs = getattr(command.callback, "writes", None)
    if outputs:
        command.callback = functools.partial(_locked, command.callback, outputs)


def _locked(callback, outputs: dict[str, bool], **params):
    if not main_process():  # the ranks of one torchrun launch share its outputs: rank 0 holds their locks
        return callback(**params)
    line = shlex.join(["denoise", *sys.argv[1:]])
    with contextlib.ExitStack() as locks:
        for name, directory in outputs.items():
            if params.get(name) is not None:
                locks.enter_context(hold(params[name], directory=directory, command=line))
        return callback(**params)
