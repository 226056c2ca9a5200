"""WebDataset shards: ``wds:PATTERN``, tar files of samples ``KEY.jpg|png`` + ``KEY.cls`` (the label).

PATTERN is a path with the ecosystem's brace ranges (``shards/train-{000000..000099}.tar``, expanded by
``webdataset``); ``{split}`` in it stands for ``train`` or ``test`` (without it both splits are every
shard, as ``npz:`` without a split array). A ``.cls`` holds an integer or a class name; the classes are
the sorted names, or the sorted values named by their value (as ``npz:``).

The stages read samples in any order, so the shards are indexed once, from their tar headers only
(``tarfile`` seeks over the data of an uncompressed tar), and a sample is read by seeking to its bytes;
images are checked and decoded as ``imagefolder:`` does (``denoise.cli.data.images``), with its ``?size=N``. A
sample is named ``SHARD/KEY.EXT`` (the shard's path, then its member) in errors and in ``denoise issues``.
"""

from __future__ import annotations

import functools
import tarfile
from pathlib import Path

import numpy as np

from ..errors import InputError
from .images import SIZE_OPTION, decode_image, image_problem
from .registry import Origin, data_spec
from .source import FileSource, Inputs

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png")
SPLIT_FIELD = "{split}"


def shard_paths(pattern: str, split: str) -> list[str]:
    """The shard files of ``pattern`` for ``split``, in pattern order; InputError naming the first missing."""
    from webdataset.shardlists import expand_urls

    shards = expand_urls(pattern.replace(SPLIT_FIELD, split))
    for shard in shards:
        if not Path(shard).is_file():
            raise InputError(shard, "no such shard file")
    return shards


def index_shard(shard: str) -> dict[str, dict[str, tuple[int, int]]]:
    """``{key: {extension: (offset, size)}}`` of one tar shard's members (webdataset's key: the member's
    name up to the first dot of its file name), in the order they appear."""
    samples: dict[str, dict[str, tuple[int, int]]] = {}
    try:
        with tarfile.open(shard, "r:") as archive:
            for member in archive:
                if not member.isfile():
                    continue
                folder, _, name = member.name.rpartition("/")
                stem, dot, extension = name.partition(".")
                if not dot:
                    continue
                key = f"{folder}/{stem}" if folder else stem
                samples.setdefault(key, {})[extension.lower()] = (member.offset_data, member.size)
    except (tarfile.TarError, OSError) as exc:
        raise InputError(shard, f"is not a readable tar shard ({exc})") from None
    return samples


def _read(shard: str, at: tuple[int, int]) -> bytes:
    offset, size = at
    with open(shard, "rb") as handle:
        handle.seek(offset)
        return handle.read(size)


def _decode(name: str, places: dict, size: int):
    """The image ``SHARD/KEY.EXT`` at ``places[name]`` = (shard, (offset, size)), decoded as imagefolder's."""
    return decode_image(name, size, _read(*places[name]))


def _check(name: str, places: dict) -> str | None:
    return image_problem(name, _read(*places[name]))


@data_spec("wds:PATTERN", arch="cnn", options=SIZE_OPTION, pattern=True)
def _wds(pattern: Path, split, size: int = 32):
    """Tar shards of ``KEY.jpg|png`` + ``KEY.cls`` samples (module docstring)."""
    places, labels = {}, []  # SHARD/KEY.EXT -> (shard, (offset, size)) of each image, in shard order
    for shard in shard_paths(str(pattern), split):
        for key, members in index_shard(shard).items():
            image = next((e for e in IMAGE_EXTENSIONS if e in members), None)
            if image is None or "cls" not in members:
                raise InputError(f"{shard}#{key}", f"needs an image ({', '.join(IMAGE_EXTENSIONS)}) and a .cls "
                                                   f"label, has {', '.join(sorted(members))}")
            label = _read(shard, members["cls"]).decode("utf-8", "replace").strip()
            if not label:
                raise InputError(f"{shard}#{key}.cls", "is empty")
            places[f"{shard}/{key}.{image}"] = (shard, members[image])
            labels.append(label)
    if not places:
        raise InputError(str(pattern), f"holds no samples for the {split} split")
    numeric = all(label.lstrip("-").isdigit() for label in labels)
    values = np.array([int(label) for label in labels]) if numeric else np.array(labels)
    classes, codes = np.unique(values, return_inverse=True)
    names = list(places)
    source = FileSource(names, functools.partial(_decode, places=places, size=size), (3, size, size),
                        check=functools.partial(_check, places=places))
    origin = Origin(np.arange(len(names), dtype=np.int64), names)
    return Inputs.of(source), codes.astype(np.int64), [str(c) for c in classes.tolist()], \
        {"source": "wds", "size": size}, origin
