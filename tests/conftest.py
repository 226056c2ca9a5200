"""Shared test helpers: run the `denoise` CLI in-process and the paths of the fixtures."""

import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "fixtures"
TINY = FIXTURES / "tiny.npz"
FSDD = ROOT.parent / "shared" / "datasets" / "fsdd" / "recordings"


class Result:
    """Exit code, stdout and stderr of one CLI call; ``json`` parses stdout."""

    def __init__(self, code, out, err):
        self.code, self.out, self.err = code, out, err

    @property
    def json(self):
        return json.loads(self.out)


@pytest.fixture
def denoise(capsys, monkeypatch):
    """Call ``denoise ARGS...`` through the console entry point; returns a ``Result``."""
    from denoise.cli.main import main

    monkeypatch.syspath_prepend(str(FIXTURES))

    def call(*args) -> Result:
        capsys.readouterr()
        monkeypatch.setattr(sys, "argv", ["denoise", *map(str, args)])
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return call


def requires_fsdd():
    return pytest.mark.skipif(not FSDD.is_dir(), reason=f"FSDD recordings not found at {FSDD} (../shared/datasets)")


def cli_process(*args, env=None, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen):
    """Start the real console script ``python -m denoise.cli.main ARGS...`` in a subprocess (``env`` adds variables,
    ``popen`` are more arguments of ``subprocess.Popen``)."""
    return subprocess.Popen([sys.executable, "-m", "denoise.cli.main", *map(str, args)], cwd=ROOT, stdout=stdout,
                            stderr=stderr, text=True, env={**os.environ, "PYTHONPATH": str(FIXTURES), **(env or {})},
                            **popen)


@dataclass
class Measured:
    """One CLI process run to its end: exit code, stderr, wall seconds and peak resident memory in bytes."""

    code: int
    err: str
    seconds: float
    peak_bytes: int


def run_measured(*args, tmp_path: Path, env=None, timeout: float = 60) -> Measured:
    """Run ``denoise ARGS...`` in a subprocess, killed after ``timeout`` seconds; its peak RSS comes from
    ``wait4``'s resource usage of that one child."""
    err_file = tmp_path / f"stderr-{time.monotonic_ns()}.txt"
    with open(err_file, "w") as err:
        started = time.monotonic()
        process = cli_process(*args, env=env, stdout=subprocess.DEVNULL, stderr=err)
        killer = threading.Timer(timeout, process.kill)
        killer.start()
        _pid, status, usage = os.wait4(process.pid, 0)
        killer.cancel()
        process.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        seconds = time.monotonic() - started
    return Measured(process.returncode, err_file.read_text(), seconds, usage.ru_maxrss * 1024)
