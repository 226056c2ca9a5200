"""What an output records of how it was made, and whether a re-run may reuse it instead of redoing it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from unlearn_core import __version__

from ..errors import InputError
from .checkpoint import read_metadata
from .paths import file_sha256
from .stage_files import load_npz


def provenance(kind: str, options: dict, inputs: dict[str, str | Path | None], results: dict | None = None) -> dict:
    """The ``meta`` record of an output: file kind, tool version, command, the options that shaped it,
    the sha256 of each input file, and ``results`` derived while making it (not compared on re-runs)."""
    return {
        "kind": kind,
        "results": results or {},
        "tool": "denoise",
        "version": __version__,
        "command": sys.argv[1:2],
        "options": options,
        "inputs": {name: {"path": str(p), "sha256": file_sha256(p)} for name, p in inputs.items() if p is not None},
    }


def is_current(out: Path, kind: str, options: dict, inputs: dict[str, Path | None]) -> bool:
    """True if ``out`` exists, is complete, and was made with these options from these exact input files."""
    if not Path(out).is_file():
        return False
    try:
        meta = read_metadata(out).get("provenance", {}) if kind == "checkpoint" else load_npz(out, kind)[1]
    except InputError:
        return False
    if meta.get("options") != json.loads(json.dumps(options)):
        return False
    want = {name: file_sha256(p) for name, p in inputs.items() if p is not None}
    return want == {name: entry.get("sha256") for name, entry in meta.get("inputs", {}).items()}


def skipped(out: Path) -> dict:
    """The summary a stage returns when ``is_current`` let it skip its work."""
    return {"out": str(out), "skipped": True}
