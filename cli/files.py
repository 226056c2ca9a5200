"""Reading and writing the files passed between stages: atomic writes, checked .npz files, provenance.

An .npz written here holds plain numeric arrays plus ``meta``: a 0-d unicode array with a JSON object
(``kind`` of file, tool version, command, options, seed, sha256 of each input file). It is always read
with ``allow_pickle=False``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np

from unlearn_core import __version__

from .errors import InputError

# kind -> {array name: (ndim, dtype kind letters)}; the arrays of one file that have dimensions share
# their first one (samples, or units for a sensitivity file).
SCHEMAS: dict[str, dict[str, tuple[int, str]]] = {
    "scores": {"attribution": (2, "f"), "loss": (1, "f"), "margin": (1, "f"), "confidence": (1, "f"),
               "predicted": (1, "iu"), "label": (1, "iu"), "index": (1, "iu")},
    "partition": {"clean_prob": (1, "f"), "is_clean": (1, "b"), "label": (1, "iu"), "index": (1, "iu")},
    "sensitivity": {"coefficient": (1, "f"), "rank": (1, "iu"), "rank_noisy": (1, "iu"), "r2": (0, "f"),
                    "mean": (1, "f"), "std": (1, "f")},
    "noise": {"labels": (1, "iu"), "true_labels": (1, "iu"), "is_noisy": (1, "b"), "index": (1, "iu")},
}


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


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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


def save_npz(path: str | Path, arrays: dict[str, np.ndarray], meta: dict) -> None:
    """Write ``arrays`` and ``meta`` (JSON) atomically as an uncompressed .npz at ``path``."""
    payload = {name: np.asarray(value) for name, value in arrays.items()}
    payload["meta"] = np.array(json.dumps(meta, sort_keys=True))

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            np.savez(handle, **payload)

    atomic_write(path, write)


def check_input_path(path: str | Path) -> Path:
    """Return ``path`` as a Path if it is an existing regular file, else raise InputError."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "no such file")
    if not path.is_file():
        raise InputError(path, "is not a regular file")
    return path


def load_npz(path: str | Path, kind: str, on_disk: tuple[str, ...] = ()) -> tuple[dict, dict]:
    """Load a stage file of ``kind`` (a key of SCHEMAS) and check it; returns ``(arrays, meta)``.

    Arrays named in ``on_disk`` stay in the file when it stores them uncompressed (as every file
    written here does): they come back as ``StoredRows``, which read only the rows asked for, so a
    large (N, U) array is never held whole. Raises InputError naming the file if it is not an .npz,
    holds object arrays, is of another kind, lacks an array, has the wrong shape or dtype, holds
    NaN/inf, or its arrays disagree in length.
    """
    path = check_input_path(path)
    arrays = read_npz_arrays(path, on_disk)
    meta = read_meta(path, arrays.pop("meta", None))
    if meta.get("kind") != kind:
        found = meta.get("kind")
        raise InputError(path, f"is a {found} file, not a {kind} file" if found else f"is not a denoise {kind} file")
    _check_arrays(path, kind, arrays)
    return arrays, meta


def read_npz_arrays(path: Path, on_disk: tuple[str, ...] = ()) -> dict:
    """Every array of an .npz (``meta`` included), read with ``allow_pickle=False``; InputError if unreadable.

    Names in ``on_disk`` whose member is stored uncompressed come back as ``StoredRows`` (see load_npz).
    """
    if not zipfile.is_zipfile(path):
        raise InputError(path, "not a .npz file")
    try:
        with np.load(path, allow_pickle=False) as archive:
            stored = {name: StoredRows.of(path, archive.zip.getinfo(f"{name}.npy"))
                      for name in on_disk if name in archive.files}
            arrays = {name: stored[name] if stored.get(name) is not None else archive[name] for name in archive.files}
    except ValueError as exc:
        problem = "contains object arrays, which are never loaded" if "allow_pickle" in str(exc) else str(exc)
        raise InputError(path, problem) from None
    except Exception as exc:  # numpy raises many types for malformed headers (SyntaxError, TokenError, ...)
        detail = (str(exc).strip().splitlines() or [""])[0][:200]
        raise InputError(path, f"unreadable .npz ({type(exc).__name__}: {detail})") from None
    return arrays


class StoredRows:
    """A C-order array stored uncompressed in an .npz, read row block by row block on demand.

    Has the ``shape``, ``ndim``, ``dtype`` and ``len`` of the array; ``rows[i]`` with a slice or an
    integer index array returns those rows as an ndarray, reading the file in blocks of ``block_bytes``
    with ``os.pread`` (no memory map: pages read are not counted in the process's memory).
    """

    def __init__(self, path: Path, offset: int, shape: tuple[int, ...], dtype: np.dtype, block_bytes: int = 1 << 24):
        self.path, self.offset, self.shape, self.dtype = path, offset, shape, dtype
        self.ndim = len(shape)
        self.row_bytes = dtype.itemsize * int(np.prod(shape[1:], dtype=np.int64))
        self.block_rows = max(1, block_bytes // max(self.row_bytes, 1))

    @classmethod
    def of(cls, path: Path, member: zipfile.ZipInfo) -> "StoredRows | None":
        """The member's array, or None when it is compressed, Fortran-ordered, 0-d or holds objects."""
        if member.compress_type != zipfile.ZIP_STORED:
            return None
        with open(path, "rb") as handle:
            handle.seek(member.header_offset)
            local = handle.read(30)  # the zip local file header; name and extra field lengths at 26..29
            name_length, extra_length = struct.unpack("<HH", local[26:30])
            handle.seek(member.header_offset + 30 + name_length + extra_length)
            version = np.lib.format.read_magic(handle)
            header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran_order, dtype = header(handle)
            offset = handle.tell()
        if fortran_order or not shape or dtype.hasobject:
            return None
        return cls(path, offset, shape, dtype)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, rows) -> np.ndarray:
        rows = np.arange(len(self))[rows] if isinstance(rows, slice) else np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows), *self.shape[1:]), dtype=self.dtype)
        order = np.argsort(rows, kind="stable")
        wanted = rows[order]
        if len(wanted) and (wanted[0] < 0 or wanted[-1] >= len(self)):
            raise IndexError(f"row index out of range for {len(self)} rows")
        with open(self.path, "rb") as handle:
            start = 0
            while start < len(wanted):
                first = wanted[start]
                stop = np.searchsorted(wanted, first + self.block_rows)  # rows within one block of ``first``
                last = wanted[stop - 1]
                raw = os.pread(handle.fileno(), int(last - first + 1) * self.row_bytes,
                               self.offset + int(first) * self.row_bytes)
                block = np.frombuffer(raw, dtype=self.dtype).reshape(-1, *self.shape[1:])
                out[order[start:stop]] = block[wanted[start:stop] - first]
                start = stop
        return out


def read_meta(path: Path, raw) -> dict:
    """The JSON object in an .npz ``meta`` entry (a 0-d unicode array); ``{}`` when there is none."""
    if raw is None or raw.dtype.kind != "U" or raw.ndim != 0:
        return {}
    try:
        meta = json.loads(str(raw))
    except json.JSONDecodeError:
        raise InputError(path, "its meta entry is not valid JSON") from None
    return meta if isinstance(meta, dict) else {}


def _check_arrays(path: Path, kind: str, arrays: dict[str, np.ndarray]) -> None:
    lengths = set()
    for name, (ndim, dtype_kinds) in SCHEMAS[kind].items():
        if name not in arrays:
            raise InputError(path, f"has no {name!r} array")
        array = arrays[name]
        if array.ndim != ndim:
            raise InputError(path, f"array {name!r} has {array.ndim} dimensions, expected {ndim}")
        if array.dtype.kind not in dtype_kinds:
            raise InputError(path, f"array {name!r} has dtype {array.dtype}, expected {_dtype_words(dtype_kinds)}")
        if array.dtype.kind == "f" and not _all_finite(array):
            raise InputError(path, f"array {name!r} contains NaN or infinite values")
        if ndim >= 1:
            lengths.add(len(array))
    if len(lengths) > 1:
        raise InputError(path, f"arrays disagree in length ({', '.join(map(str, sorted(lengths)))})")
    if lengths == {0}:
        raise InputError(path, "holds no entries")
    if "index" in arrays and len(np.unique(arrays["index"])) != len(arrays["index"]):
        raise InputError(path, "array 'index' has duplicate sample indices")


def _all_finite(array: np.ndarray, rows: int = 1 << 16) -> bool:
    """``np.isfinite(array).all()`` in blocks of rows, so no full-size temporary is made."""
    if array.ndim == 0:
        return bool(np.isfinite(array))
    return all(np.isfinite(array[start:start + rows]).all() for start in range(0, len(array), rows))


def _dtype_words(kinds: str) -> str:
    words = {"f": "float", "i": "integer", "u": "integer", "b": "bool"}
    return " or ".join(dict.fromkeys(words[k] for k in kinds))


def check_same_samples(path: str | Path, index: np.ndarray, other: str | Path, other_index: np.ndarray) -> None:
    """Raise InputError unless two files describe the same samples in the same order."""
    if len(index) != len(other_index):
        raise InputError(path, f"covers {len(index)} samples but {other} covers {len(other_index)}")
    if not np.array_equal(index, other_index):
        raise InputError(path, f"covers other sample indices than {other}")


class NpzStream:
    """An .npz written in row blocks, so that none of its large arrays is ever held whole in memory.

    Each streamed array goes to its own .npy file in a temporary directory beside ``path``; ``finish``
    copies them, with small in-memory arrays and ``meta``, into an uncompressed .npz (read like any
    ``save_npz`` file, with ``allow_pickle=False``) and renames it over ``path`` atomically. Use it as a
    context manager: the temporary directory is removed on exit, finished or not.
    """

    def __init__(self, path: str | Path, rows: int):
        self.path, self.rows = Path(path), rows
        self._dir: Path | None = None
        self._arrays: dict[str, dict] = {}  # name -> {"handle", "file", "offset", "row_bytes", "dtype", "shape", "written"}

    def __enter__(self) -> "NpzStream":
        directory = self.path.parent if str(self.path.parent) else Path(".")
        if not directory.is_dir():
            raise InputError(directory, "output directory does not exist")
        self._dir = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.", suffix=".parts", dir=directory))
        return self

    def __exit__(self, *_exc) -> None:
        for entry in self._arrays.values():
            entry["handle"].close()
        shutil.rmtree(self._dir, ignore_errors=True)

    def write(self, name: str, start: int, block: np.ndarray) -> None:
        """Store ``block`` (B, ...) as rows ``start:start+B`` of the (rows, ...) array ``name``.

        The first block of a name fixes the array's dtype and trailing shape; later blocks are cast to it.
        """
        block = np.asarray(block)
        entry = self._arrays.get(name) or self._create(name, block)
        if block.shape[1:] != entry["shape"][1:] or not 0 <= start <= self.rows - len(block):
            raise ValueError(f"block of shape {block.shape} at row {start} does not fit array {name!r} {entry['shape']}")
        data = np.ascontiguousarray(block, dtype=entry["dtype"])
        entry["handle"].seek(entry["offset"] + start * entry["row_bytes"])
        entry["handle"].write(data.data)
        entry["written"] += len(block)

    def _create(self, name: str, block: np.ndarray) -> dict:
        shape = (self.rows, *block.shape[1:])
        file = self._dir / f"{name}.npy"
        handle = open(file, "w+b")
        np.lib.format.write_array_header_1_0(handle, {"descr": np.lib.format.dtype_to_descr(block.dtype),
                                                      "fortran_order": False, "shape": shape})
        offset = handle.tell()
        row_bytes = block.dtype.itemsize * int(np.prod(shape[1:], dtype=np.int64))
        handle.truncate(offset + self.rows * row_bytes)
        entry = {"handle": handle, "file": file, "offset": offset, "row_bytes": row_bytes, "dtype": block.dtype,
                 "shape": shape, "written": 0}
        self._arrays[name] = entry
        return entry

    def finish(self, arrays: dict[str, np.ndarray], meta: dict) -> None:
        """Write the .npz: every streamed array (each must have received exactly ``rows`` rows), ``arrays`` and ``meta``."""
        for name, entry in self._arrays.items():
            if entry["written"] != self.rows:
                raise ValueError(f"array {name!r} received {entry['written']} of {self.rows} rows")
            entry["handle"].flush()
        small = {name: np.asarray(value) for name, value in arrays.items()}
        small["meta"] = np.array(json.dumps(meta, sort_keys=True))

        def write(tmp: Path) -> None:
            with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
                for name, entry in self._arrays.items():
                    with open(entry["file"], "rb") as source, archive.open(f"{name}.npy", "w", force_zip64=True) as target:
                        shutil.copyfileobj(source, target, 1 << 20)
                for name, value in small.items():
                    with archive.open(f"{name}.npy", "w", force_zip64=True) as target:
                        np.lib.format.write_array(target, value, allow_pickle=False)

        atomic_write(self.path, write)
