"""The .npz files passed between stages: their schemas, and writing and reading them checked.

An .npz written here holds plain numeric arrays plus ``meta``: a 0-d unicode array with a JSON object
(``kind`` of file, tool version, command, options, seed, sha256 of each input file; see
``denoise.cli.files.provenance``). It is always read with ``allow_pickle=False``.
"""

from __future__ import annotations

import json
import math
import zipfile
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..limits import DEFLATE_RATIO
from .paths import atomic_write, check_input_path
from .streaming import StoredRows, read_npy_header


# kind -> {array name: (ndim, dtype kind letters)}, every kind of .npz in one place; the arrays of one file that
# have dimensions share their first one (samples, or units for a sensitivity file).
SCORES_SCHEMA = {"attribution": (2, "f"), "loss": (1, "f"), "margin": (1, "f"), "confidence": (1, "f"),
                 "predicted": (1, "iu"), "label": (1, "iu"), "index": (1, "iu"), "input_high_pass": (1, "f")}
SCHEMAS: dict[str, dict[str, tuple[int, str]]] = {
    "scores": SCORES_SCHEMA,
    "scores-shard": SCORES_SCHEMA,  # one shard's rows (denoise.cli.files.shards)
    "partition": {"clean_prob": (1, "f"), "is_clean": (1, "b"), "label": (1, "iu"), "index": (1, "iu"),
                  "suggested": (1, "iu"), "suggested_prob": (1, "f")},  # the scores' evidence, for finetune --relabel
    "holdout": {"is_held": (1, "b"), "index": (1, "iu")},  # samples no round fine-tunes on
    "sensitivity": {"coefficient": (1, "f"), "rank": (1, "iu"), "rank_noisy": (1, "iu"), "r2": (0, "f"),
                    "mean": (1, "f"), "std": (1, "f")},
    "sensitivity-shard": {"n": (0, "iu"), "mean_y": (0, "f"), "syy": (0, "f"), "mean_x": (1, "f"),
                          "cxy": (1, "f"), "cxx": (2, "f")},  # UnitMoments.arrays, summed by denoise merge
    "noise": {"labels": (1, "iu"), "true_labels": (1, "iu"), "is_noisy": (1, "b"), "index": (1, "iu")},
}
# the command that writes each kind again, named when a file of an earlier format lacks an array
WRITTEN_BY = {"scores": "denoise attribute", "scores-shard": "denoise attribute --shard", "partition":
              "denoise partition", "holdout": "denoise run", "sensitivity": "denoise sensitivity",
              "sensitivity-shard": "denoise sensitivity --shard", "noise": "denoise inject-noise"}


def save_npz(path: str | Path, arrays: dict[str, np.ndarray], meta: dict) -> None:
    """Write ``arrays`` and ``meta`` (JSON) atomically as an uncompressed .npz at ``path``."""
    payload = {name: np.asarray(value) for name, value in arrays.items()}
    payload["meta"] = np.array(json.dumps(meta, sort_keys=True))

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            np.savez(handle, **payload)

    atomic_write(path, write)

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
    _check_arrays(path, kind, arrays, meta)
    return arrays, meta

def read_npz_arrays(path: Path, on_disk: tuple[str, ...] = ()) -> dict:
    """Every array of an .npz (``meta`` included), read with ``allow_pickle=False``; InputError if unreadable.

    Names in ``on_disk`` whose member is stored uncompressed come back as ``StoredRows`` (see load_npz).
    """
    if not zipfile.is_zipfile(path):
        raise InputError(path, "not a .npz file")
    try:
        with np.load(path, allow_pickle=False) as archive:
            _check_claims(path, archive.zip)
            stored = {name: StoredRows.of(path, archive.zip.getinfo(f"{name}.npy"))
                      for name in on_disk if name in archive.files}
            arrays = {name: stored[name] if stored.get(name) is not None else archive[name] for name in archive.files}
    except InputError:
        raise
    except ValueError as exc:
        problem = "contains object arrays, which are never loaded" if "allow_pickle" in str(exc) else str(exc)
        raise InputError(path, problem) from None
    except Exception as exc:  # numpy raises many types for malformed headers (SyntaxError, TokenError, ...)
        detail = (str(exc).strip().splitlines() or [""])[0][:200]
        raise InputError(path, f"unreadable .npz ({type(exc).__name__}: {detail})") from None
    return arrays

def _check_claims(path: Path, archive: zipfile.ZipFile) -> None:
    """Refuse, before any array is read, a member that claims more than the file holds: more bytes than the
    file has, a compressed member that would unpack to more than deflate can make of its bytes, or an array whose header's shape needs
    more bytes than its member has (or a dimension longer than them), so that no header makes a reader
    allocate for data that is not there."""
    size = path.stat().st_size
    for member in archive.infolist():
        name = member.filename.removesuffix(".npy")
        if member.header_offset + member.compress_size > size:
            raise InputError(path, f"member {name!r} claims {member.compress_size:,} bytes, more than the file has")
        if member.compress_type != zipfile.ZIP_STORED and member.file_size > DEFLATE_RATIO * (member.compress_size + 1):
            raise InputError(path, f"member {name!r} claims to unpack {member.file_size:,} bytes from "
                                   f"{member.compress_size:,}, more than deflate can")
        with archive.open(member) as handle:
            if handle.read(len(np.lib.format.MAGIC_PREFIX)) != np.lib.format.MAGIC_PREFIX:
                continue  # not an array; np.load returns its bytes, at most file_size of them
            handle.seek(0)
            shape, _fortran, dtype = read_npy_header(handle)
            if dtype.hasobject:
                continue  # refused by allow_pickle=False, never read
            claimed = handle.tell() + math.prod(shape) * dtype.itemsize
            if claimed > member.file_size or max(shape, default=0) > member.file_size:
                raise InputError(path, f"array {name!r} claims shape {shape} of {dtype}, more than its "
                                       f"{member.file_size:,} bytes hold")

def read_meta(path: Path, raw) -> dict:
    """The JSON object in an .npz ``meta`` entry (a 0-d unicode array); ``{}`` when there is none."""
    if raw is None or raw.dtype.kind != "U" or raw.ndim != 0:
        return {}
    try:
        meta = json.loads(str(raw))
    except json.JSONDecodeError:
        raise InputError(path, "its meta entry is not valid JSON") from None
    return meta if isinstance(meta, dict) else {}

def _check_arrays(path: Path, kind: str, arrays: dict[str, np.ndarray], meta: dict) -> None:
    lengths = set()
    for name, (ndim, dtype_kinds) in SCHEMAS[kind].items():
        if name not in arrays:
            version = meta.get("version")
            if version is None:
                raise InputError(path, f"has no {name!r} array")
            raise InputError(path, f"has no {name!r} array: it is of an earlier format (written by denoise "
                                   f"{version}); run `{WRITTEN_BY[kind]}` again to rewrite it")
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
