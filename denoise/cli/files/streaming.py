"""Large arrays in .npz files without holding them whole: written in row blocks (``NpzStream``),
read back a block of rows at a time (``StoredRows``).
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..signals import deferred
from .paths import atomic_write


def read_npy_header(handle) -> tuple[tuple[int, ...], bool, np.dtype]:
    """``(shape, fortran_order, dtype)`` of the .npy array that starts at ``handle``'s position, which is left
    at the first data byte; raises ValueError when it is not an .npy header."""
    version = np.lib.format.read_magic(handle)
    header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    return header(handle)


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
            shape, fortran_order, dtype = read_npy_header(handle)
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

class NpzStream:
    """An .npz written in row blocks, so that none of its large arrays is ever held whole in memory.

    Each streamed array goes to its own .npy file in a temporary directory beside ``path``; ``finish``
    copies them, with small in-memory arrays and ``meta``, into an uncompressed .npz (read like any
    ``save_npz`` file, with ``allow_pickle=False``) and renames it over ``path`` atomically. Use it as a
    context manager: the temporary directory is removed on exit, finished or not.

    With ``resume_key`` (a string naming exactly what is being computed) the directory is ``.NAME.resume``
    instead, and ``mark(done)`` records that the first ``done`` rows of every array are written; a stream
    that ends unfinished keeps it, and the next stream of the same key starts at ``done`` rows (``done``).
    """

    def __init__(self, path: str | Path, rows: int, resume_key: str | None = None):
        self.path, self.rows, self.resume_key = Path(path), rows, resume_key
        self.done = 0  # rows the stream starts with (a resumed stream's rows already written)
        self._dir: Path | None = None
        self._finished = False
        self._arrays: dict[str, dict] = {}  # name -> {"handle", "file", "offset", "row_bytes", "dtype", "shape", "written"}

    def __enter__(self) -> "NpzStream":
        directory = self.path.parent if str(self.path.parent) else Path(".")
        if not directory.is_dir():
            raise InputError(directory, "output directory does not exist")
        try:
            with deferred():  # a signal waits until the directory is known to ``__exit__``
                if self.resume_key is None:
                    self._dir = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.", suffix=".parts", dir=directory))
                else:
                    self._dir = directory / f".{self.path.name}.resume"
                    self._reopen()
        except BaseException:  # ``with`` calls no ``__exit__`` when ``__enter__`` raises
            self.__exit__()
            raise
        return self

    def _reopen(self) -> None:
        """Continue the rows a stream of the same key and size recorded in ``state.json``; else start afresh."""
        state = {}
        try:
            state = json.loads((self._dir / "state.json").read_text())
        except (OSError, ValueError):
            pass
        if state.get("key") != self.resume_key or state.get("rows") != self.rows:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir.mkdir()
            return
        for name, entry in state["arrays"].items():
            handle = open(self._dir / f"{name}.npy", "r+b")
            shape, _, dtype = read_npy_header(handle)
            self._arrays[name] = {"handle": handle, "file": self._dir / f"{name}.npy", "offset": handle.tell(),
                                  "row_bytes": entry["row_bytes"], "dtype": dtype, "shape": tuple(shape),
                                  "written": state["done"]}
        self.done = state["done"]

    def shape(self, name: str) -> tuple[int, ...]:
        """The (rows, ...) shape of the streamed array ``name``."""
        return self._arrays[name]["shape"]

    def mark(self, done: int) -> None:
        """Record that rows ``0:done`` of every array are written (a resumable stream only)."""
        if self.resume_key is None:
            return
        for entry in self._arrays.values():
            entry["handle"].flush()
        state = {"key": self.resume_key, "rows": self.rows, "done": done,
                 "arrays": {name: {"row_bytes": entry["row_bytes"]} for name, entry in self._arrays.items()}}
        atomic_write(self._dir / "state.json", lambda tmp: tmp.write_text(json.dumps(state)))

    def __exit__(self, *_exc) -> None:
        with deferred():  # a signal just after ``finish`` renamed the file must not cut this short
            for entry in self._arrays.values():
                entry["handle"].close()
            if self._dir is not None and (self.resume_key is None or self._finished):
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
        self._finished = True
