"""What an output records of how it was made, and whether a re-run may reuse it instead of redoing it."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from denoise.core import __version__

from ..data.source import READING
from ..errors import InputError
from .checkpoint import read_metadata
from .paths import file_sha256
from .stage_files import load_npz


def provenance(kind: str, options: dict, inputs: dict[str, str | Path | None], results: dict | None = None) -> dict:
    """The ``meta`` record of an output: file kind, tool version, command, the options that shaped it,
    the sha256 of each input file, and ``results`` derived while making it (not compared on re-runs), with
    ``skipped_files`` where ``--skip-unreadable`` dropped files of the data spec it was made from."""
    skipped = READING.skipped.get(options.get("data"))
    return {
        "kind": kind,
        "results": {**(results or {}), **({"skipped_files": skipped} if skipped else {})},
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
    given = {name: path for name, path in inputs.items() if path is not None}
    try:
        meta = read_metadata(out).get("provenance", {}) if kind == "checkpoint" else load_npz(out, kind)[1]
        if meta.get("options") != json.loads(json.dumps(options)) or set(given) != set(meta.get("inputs", {})):
            return False
        for name, path in given.items():
            check_made_from(out, meta, name, path)
    except InputError:
        return False
    return True


def _entry(meta: dict, name: str) -> dict | None:
    return meta.get("inputs", {}).get(name)


def recorded_input(meta: dict, name: str) -> tuple[Path, bool] | None:
    """``(path, unchanged)``: the file a ``meta`` record names as its input ``name``, and whether that file is
    still there byte for byte; None if the record names no such input."""
    entry = _entry(meta, name)
    if entry is None:
        return None
    path = Path(entry["path"])
    return path, path.is_file() and file_sha256(path) == entry.get("sha256")


def check_made_from(path: Path, meta: dict, name: str, source: Path, *, hint: str = "files from different runs?",
                    sha256: str | None = None) -> None:
    """Raise InputError naming ``path`` unless its ``meta`` records ``source`` as its input ``name``, byte for
    byte; ``hint`` ends the message. ``sha256``: the hash to compare with instead of ``source``'s (the one
    another file ``source`` recorded). An input the record does not name is not checked."""
    entry = _entry(meta, name)
    if entry is not None and entry.get("sha256") != (sha256 or file_sha256(source)):
        raise InputError(path, f"was made from another {name} file than {source} ({hint})")


def skipped(out: Path) -> dict:
    """The summary a stage returns when ``is_current`` let it skip its work."""
    return {"out": str(out), "skipped": True}


@dataclass(frozen=True)
class Output:
    """What a stage writes: the file ``path`` of ``kind`` (a stage-file kind, or ``"checkpoint"``), made with
    ``options`` from the ``inputs`` files. ``made`` is the skeleton every stage shares."""

    path: Path
    kind: str
    options: dict
    inputs: dict[str, Path | None]

    def meta(self, results: dict | None = None) -> dict:
        """The provenance record to write with the file."""
        return provenance(self.kind, self.options, self.inputs, results)

    def made(self, reuse: bool, make: Callable[["Output"], dict]) -> dict:
        """The stage's summary: ``skipped`` when ``reuse`` and the file is current for these options and
        inputs; else ``make(self)``, which loads the inputs, computes, writes the file with ``meta`` and
        returns the summary."""
        if reuse and is_current(self.path, self.kind, self.options, self.inputs):
            return skipped(self.path)
        return make(self)
