"""Shared test helpers: run the `denoise` CLI in-process and the paths of the fixtures."""

import json
import sys
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
    from cli.main import main

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
