"""Stage files written in shards (``attribute``/``sensitivity --shard i/n``, or one per rank under torchrun) and
``merge``, which joins them into the file a single process writes.

A shard file is of kind ``scores-shard`` (the rows of the sample indices its shard owns) or
``sensitivity-shard`` (the ``UnitMoments`` of its samples), so no later stage takes it for the whole, with
``meta["shard"] = {"number", "count", "samples"}``. ``merge`` checks that the shards were made by the same
command from the same model and data (options and input hashes) and that no shard is given twice or missing;
for scores also that together they hold every sample index exactly once, and it writes the rows in index
order a block at a time, so no (N, U) array is held whole. Sensitivity shards' moments are summed and solved.
"""

from __future__ import annotations

import glob
from pathlib import Path

import numpy as np

from denoise.core.sensitivity import UnitMoments
from denoise.core.shards import CoverageError, missing, owners

from ..errors import InputError, UsageError
from .paths import check_input_path
from .provenance import check_made_from
from .stage_files import load_npz, read_meta, read_npz_arrays, save_npz
from .streaming import NpzStream

WHOLE_ARRAYS = ("label", "index")  # written by ``NpzStream.finish``, as a single process does; the rest stream


def shard_meta(meta: dict, number: int, count: int, samples: int) -> dict:
    """The ``meta`` of shard ``number`` of ``count`` of a stage file (``meta``'s kind) over ``samples`` samples."""
    return {**meta, "kind": f"{meta['kind']}-shard", "shard": {"number": number, "count": count, "samples": samples}}


def rank_path(out: Path, rank: int, world: int) -> Path:
    """Where rank ``rank`` of ``world`` writes its shard of ``out`` before rank 0 merges them."""
    return out.with_name(f".{out.name}.rank{rank}-of-{world}.npz")


def remove_rank_files(out: Path) -> None:
    """Remove every rank's shard file of ``out`` left by an earlier launch of any size (one killed before it
    merged them), so that none is ever merged into this launch's ``out``."""
    for stale in out.parent.glob(f".{glob.escape(out.name)}.rank*-of-*.npz"):
        stale.unlink(missing_ok=True)


def merge_ranks(out: Path, world: int) -> None:
    """Merge the shard files the ``world`` ranks wrote of ``out`` (``rank_path``) into it; they are removed
    whether the merge succeeds or not."""
    parts = [rank_path(out, rank, world) for rank in range(world)]
    try:
        merge(parts, out)
    finally:
        for part in parts:
            part.unlink(missing_ok=True)


def _same_making(path: Path, meta: dict, first: Path, first_meta: dict) -> None:
    """InputError naming ``path`` unless it was made like ``first``: same options, input files and shard count."""
    for name, entry in first_meta["inputs"].items():
        check_made_from(path, meta, name, first, hint="a shard of other scores", sha256=entry["sha256"])
    if set(meta["inputs"]) != set(first_meta["inputs"]) or meta["options"] != first_meta["options"]:
        raise InputError(path, f"was made with other options or inputs than {first} (a shard of other scores)")
    if (meta["shard"]["count"], meta["shard"]["samples"]) != (first_meta["shard"]["count"],
                                                              first_meta["shard"]["samples"]):
        raise InputError(path, f"is a shard of {meta['shard']['count']} over {meta['shard']['samples']} samples, "
                               f"but {first} is one of {first_meta['shard']['count']} over "
                               f"{first_meta['shard']['samples']}")


def _check_shard_meta(path: Path, meta: dict, kind: str, arrays: dict) -> None:
    """InputError naming ``path`` unless its ``meta`` records its inputs and options and a shard
    ``{"number", "count", "samples"}`` of integers with ``0 <= number < count``, and, for moments, a
    positive sample count."""
    shard, inputs = meta.get("shard"), meta.get("inputs")
    if not (isinstance(inputs, dict) and all(isinstance(entry, dict) and "sha256" in entry for entry in inputs.values())):
        raise InputError(path, "does not record its input files (not a shard file denoise wrote)")
    if "options" not in meta:
        raise InputError(path, "does not record its options (not a shard file denoise wrote)")
    if not (isinstance(shard, dict) and all(type(shard.get(key)) is int for key in ("number", "count", "samples"))
            and 0 <= shard["number"] < shard["count"]):
        raise InputError(path, "does not record which shard it is (meta.shard: number, count, samples)")
    if kind == "sensitivity-shard" and int(arrays["n"]) < 1:
        raise InputError(path, "holds the moments of no sample")


def merge(files: list[Path], out: Path) -> dict:
    """Join the shard files ``files`` (all of one kind) into the scores or sensitivity file ``out``; returns a
    summary."""
    if not files:
        raise UsageError("give the shard files to merge")
    first = check_input_path(files[0])
    kind = read_meta(first, read_npz_arrays(first, ("attribution",)).get("meta")).get("kind")
    if kind not in ("scores-shard", "sensitivity-shard"):
        raise InputError(files[0], "is not a shard file (from attribute or sensitivity --shard)")
    parts = [load_npz(path, kind, on_disk=("attribution",)) for path in files]
    first, (_, first_meta) = files[0], parts[0]
    by_number: dict[int, Path] = {}
    for path, (arrays, meta) in zip(files, parts):
        _check_shard_meta(path, meta, kind, arrays)
        _same_making(path, meta, first, first_meta)
        number = meta["shard"]["number"]
        if number in by_number:
            raise InputError(path, f"repeats shard {number}/{meta['shard']['count']} "
                                   f"(also given as {by_number[number]})")
        by_number[number] = path
    count, samples = first_meta["shard"]["count"], first_meta["shard"]["samples"]
    absent = sorted(set(range(count)) - set(by_number))
    if absent:
        raise InputError(f"shard {absent[0]}/{count}", f"is missing: none of the {len(files)} files given holds it")
    meta = {**{k: v for k, v in first_meta.items() if k != "shard"}, "kind": kind.removesuffix("-shard"),
            "world_size": count}
    if kind == "sensitivity-shard":
        save_npz(out, UnitMoments.combined([UnitMoments.from_arrays(arrays) for arrays, _ in parts]).solve(), meta)
        return {"out": str(out), "shards": count, "samples": samples}
    try:
        part, row = owners([arrays["index"] for arrays, _ in parts], samples)
    except CoverageError as exc:
        other = f" ({files[exc.other]})" if exc.other is not None else ""
        raise InputError(files[exc.part], exc.problem + other) from None
    uncovered = missing(part)
    if len(uncovered):
        raise InputError(first, f"its shards leave {len(uncovered)} sample indices uncovered (first: {uncovered[0]})")
    _write(parts, part, row, out, meta)
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
