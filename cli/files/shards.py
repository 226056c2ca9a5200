"""Score files written in shards (``attribute --shard i/n``, or one per rank under torchrun) and ``merge``, which
joins them into the file a single process writes.

A shard file is a scores file of kind ``scores-shard`` (so no later stage takes it for the whole) holding the
rows of the sample indices its shard owns, with ``meta["shard"] = {"number", "count", "samples"}``. ``merge``
checks that the shards were made by the same command from the same model and data (options and input
hashes), that no shard is given twice, and that together they hold every sample index exactly once; it
writes the rows in index order a block at a time, so no (N, U) array is held whole.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from unlearn_core.shards import CoverageError, missing, owners

from ..errors import InputError, UsageError
from .stage_files import SCHEMAS, load_npz
from .streaming import NpzStream

SHARD_KIND = "scores-shard"
SCHEMAS[SHARD_KIND] = SCHEMAS["scores"]
WHOLE_ARRAYS = ("label", "index")  # written by ``NpzStream.finish``, as a single process does; the rest stream


def shard_meta(meta: dict, number: int, count: int, samples: int) -> dict:
    """The ``meta`` of shard ``number`` of ``count`` of a scores file over ``samples`` samples."""
    return {**meta, "kind": SHARD_KIND, "shard": {"number": number, "count": count, "samples": samples}}


def rank_path(out: Path, rank: int, world: int) -> Path:
    """Where rank ``rank`` of ``world`` writes its shard of ``out`` before rank 0 merges them."""
    return out.with_name(f".{out.name}.rank{rank}-of-{world}.npz")


def merge_ranks(out: Path, world: int) -> None:
    """Merge the shard files the ``world`` ranks wrote of ``out`` (``rank_path``) into it, then remove them."""
    parts = [rank_path(out, rank, world) for rank in range(world)]
    merge(parts, out)
    for part in parts:
        part.unlink()


def _same_making(path: Path, meta: dict, first: Path, first_meta: dict) -> None:
    """InputError naming ``path`` unless it was made like ``first``: same options, input files and shard count."""
    for name, entry in first_meta["inputs"].items():
        if meta["inputs"].get(name, {}).get("sha256") != entry["sha256"]:
            raise InputError(path, f"was made from another {name} file than {first} (a shard of other scores)")
    if set(meta["inputs"]) != set(first_meta["inputs"]) or meta["options"] != first_meta["options"]:
        raise InputError(path, f"was made with other options or inputs than {first} (a shard of other scores)")
    if (meta["shard"]["count"], meta["shard"]["samples"]) != (first_meta["shard"]["count"],
                                                              first_meta["shard"]["samples"]):
        raise InputError(path, f"is a shard of {meta['shard']['count']} over {meta['shard']['samples']} samples, "
                               f"but {first} is one of {first_meta['shard']['count']} over "
                               f"{first_meta['shard']['samples']}")


def merge(files: list[Path], out: Path) -> dict:
    """Join the shard files ``files`` into the scores file ``out``; returns a summary."""
    if not files:
        raise UsageError("give the shard files to merge")
    parts = [load_npz(path, SHARD_KIND, on_disk=("attribution",)) for path in files]
    first, (_, first_meta) = files[0], parts[0]
    by_number: dict[int, Path] = {}
    for path, (_, meta) in zip(files, parts):
        _same_making(path, meta, first, first_meta)
        number = meta["shard"]["number"]
        if number in by_number:
            raise InputError(path, f"repeats shard {number}/{meta['shard']['count']} (also given as {by_number[number]})")
        by_number[number] = path
    count, samples = first_meta["shard"]["count"], first_meta["shard"]["samples"]
    absent = sorted(set(range(count)) - set(by_number))
    if absent:
        raise InputError(f"shard {absent[0]}/{count}", f"is missing: none of the {len(files)} files given holds it")
    try:
        part, row = owners([arrays["index"] for arrays, _ in parts], samples)
    except CoverageError as exc:
        other = f" ({files[exc.other]})" if exc.other is not None else ""
        raise InputError(files[exc.part], exc.problem + other) from None
    uncovered = missing(part)
    if len(uncovered):
        raise InputError(first, f"its shards leave {len(uncovered)} sample indices uncovered (first: {uncovered[0]})")
    _write(parts, part, row, out, {**{k: v for k, v in first_meta.items() if k != "shard"}, "kind": "scores",
                                   "world_size": count})
    return {"out": str(out), "shards": count, "samples": samples}


def _write(parts: list[tuple[dict, dict]], part: np.ndarray, row: np.ndarray, out: Path, meta: dict) -> None:
    """Rows of every shard's arrays at sample indices 0..N-1, a block of rows at a time, into ``out``."""
    first = parts[0][0]
    streamed = [name for name in first if name not in WHOLE_ARRAYS]
    block_rows = max(1, getattr(first["attribution"], "block_rows", 1 << 16))
    samples = len(part)

    def gather(name: str, start: int, stop: int) -> np.ndarray:
        block = np.empty((stop - start, *first[name].shape[1:]), dtype=first[name].dtype)
        for k, (arrays, _) in enumerate(parts):
            mine = part[start:stop] == k
            block[mine] = arrays[name][row[start:stop][mine]]
        return block

    with NpzStream(out, samples) as stream:
        for start in range(0, samples, block_rows):
            stop = min(start + block_rows, samples)
            for name in streamed:
                stream.write(name, start, gather(name, start, stop))
        stream.finish({"label": gather("label", 0, samples), "index": np.arange(samples, dtype=np.int64)}, meta)
