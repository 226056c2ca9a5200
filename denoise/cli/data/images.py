"""Image data sets: MNIST's IDX files, CIFAR-10's batches, and a folder of class folders.

Each takes ``?size=N``: images resized to N x N (bilinear, antialiased, as torchvision's ``Resize``), the
size the model was trained at; the size is part of the transform record a checkpoint keeps.
"""

from __future__ import annotations

import functools
import gzip
import io
import math
import os
import pickle
import zlib
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError
from ..limits import DEFLATE_RATIO, limit, over_limit
from .registry import Origin, WholeNumber, data_spec
from .source import FileSource, Inputs

SIZE_OPTION = {"size": WholeNumber(8, 1024)}  # ?size=N: resize to N x N


def _resized(images: torch.Tensor, size: int) -> torch.Tensor:
    """(N, C, H, W) float images resized to (N, C, size, size)."""
    return torch.nn.functional.interpolate(images, size=(size, size), mode="bilinear", antialias=True,
                                           align_corners=False)


def _at_size(images: np.ndarray, transform: dict, size: int | None) -> tuple:
    """``(images, transform)``, resized to ``size`` (recorded in the transform) when a size is given."""
    if size is None:
        return images, transform
    return _resized(torch.as_tensor(images), size), {**transform, "size": size}


def _read_idx(path: Path) -> np.ndarray:
    """An unsigned-byte IDX array. Its header's dimensions are checked against the file's size before the
    data is read: a gzipped file may not claim more than deflate can unpack from its bytes."""
    gzipped = path.suffix == ".gz"
    try:
        with (gzip.open if gzipped else open)(path, "rb") as handle:
            head = handle.read(4)
            if len(head) < 4 or head[:3] != b"\x00\x00\x08":
                raise InputError(path, "is not an unsigned-byte IDX file")
            header = handle.read(4 * head[3])
            dims = np.frombuffer(header, ">u4").astype(int) if len(header) == 4 * head[3] else None
            size = math.prod(dims.tolist()) if dims is not None else None
            room = path.stat().st_size * (DEFLATE_RATIO if gzipped else 1)
            if size is None or size > room:
                raise InputError(path, "is truncated or its header does not match its size")
            raw = handle.read(size + 1)
    except (OSError, EOFError, zlib.error) as exc:
        raise InputError(path, f"cannot be read ({exc})") from None
    if len(raw) != size:
        raise InputError(path, "is truncated or its header does not match its size")
    return np.frombuffer(raw, np.uint8).reshape(dims)

def _find(path: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx")):
        if (path / name).is_file():
            return path / name
    raise InputError(path, f"has no {stem} (or {stem}.gz)")

@data_spec("mnist:DIR", arch="cnn", options=SIZE_OPTION)
def _mnist(path: Path, split, size: int | None = None):
    """The four IDX files (optionally ``.gz``)."""
    if not path.is_dir():
        raise InputError(path, "is not a directory (mnist: needs the folder of IDX files)")
    prefix = "train" if split == "train" else "t10k"
    images = _read_idx(_find(path, f"{prefix}-images-idx3-ubyte"))
    labels = _read_idx(_find(path, f"{prefix}-labels-idx1-ubyte"))
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise InputError(path, f"{prefix} images {images.shape} and labels {labels.shape} do not match")
    inputs, transform = _at_size(images[:, None].astype(np.float32) / 255.0, {"source": "mnist", "scale": "x/255"},
                                 size)
    return inputs, labels.astype(np.int64), [str(d) for d in range(10)], transform, Origin(np.arange(len(labels)))

class _BatchUnpickler(pickle.Unpickler):
    """Reads CIFAR python batches: plain containers and numpy arrays only, nothing executable."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)

def _cifar_batch(file: Path) -> tuple[np.ndarray, np.ndarray]:
    if file.suffix == ".bin":
        raw = np.fromfile(file, np.uint8)
        if raw.size % 3073:
            raise InputError(file, "is truncated (not a whole number of 3,073-byte records)")
        rows = raw.reshape(-1, 3073)
        return rows[:, 1:].reshape(-1, 3, 32, 32), rows[:, 0].astype(np.int64)
    try:
        with open(file, "rb") as handle:
            batch = _BatchUnpickler(handle, encoding="bytes").load()
        data = np.asarray(batch[b"data"], np.uint8).reshape(-1, 3, 32, 32)
        labels = np.asarray(batch[b"labels"], np.int64)
    except Exception as exc:
        raise InputError(file, f"is not a CIFAR-10 python batch ({exc})") from None
    return data, labels

@data_spec("cifar10:DIR", arch="resnet18-cifar", options=SIZE_OPTION)
def _cifar10(path: Path, split, size: int | None = None):
    """The python batches (``data_batch_1`` ... ``test_batch``) or the binary ``.bin`` batches."""
    if not path.is_dir():
        raise InputError(path, "is not a directory (cifar10: needs cifar-10-batches-py or -bin)")
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    files = [path / n for n in names]
    if not all(f.is_file() for f in files):
        files = [path / f"{n}.bin" for n in names]
        if not all(f.is_file() for f in files):
            raise InputError(path, f"has no CIFAR-10 {split} batches ({names[0]} or {names[0]}.bin)")
    batches = [_cifar_batch(f) for f in files]
    inputs = np.concatenate([b[0] for b in batches]).astype(np.float32) / 255.0
    labels = np.concatenate([b[1] for b in batches])
    classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    if labels.min() < 0 or labels.max() >= len(classes):
        raise InputError(path, "labels out of range for CIFAR-10's 10 classes")
    inputs, transform = _at_size(inputs, {"source": "cifar10", "scale": "x/255"}, size)
    return inputs, labels, classes, transform, Origin(np.arange(len(labels)))

_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}
_JPEG_SCALES = (2, 4, 8)  # the reduced sizes a JPEG decoder can decode at directly
_TAIL = 65_536  # bytes at a file's end that must hold its end marker (JPEG EOI, PNG IEND)


def image_problem(file: str, data: bytes | None = None) -> str | None:  # FileSource.check of image files
    """Why the image ``file`` (or its bytes ``data``, read from an archive) cannot be decoded, from what is
    cheap to read (None: it looks whole): its header (the format and size Pillow reads without decoding)
    and its end (a JPEG's end-of-image marker, a PNG's IEND chunk; a file cut short lacks it). A file whose
    end looks wrong is decoded in full to be sure."""
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = None  # our bound is DENOISE_MAX_PIXELS, checked when decoding
    try:
        with Image.open(file if data is None else io.BytesIO(data)) as image:
            kind = image.format
            _scale_within_bound(Path(file), *image.size, kind == "JPEG")
        if data is None:
            with open(file, "rb") as handle:
                handle.seek(max(0, os.path.getsize(file) - _TAIL))
                tail = handle.read()
        else:
            tail = data[-_TAIL:]
        if (kind == "JPEG" and b"\xff\xd9" in tail) or (kind == "PNG" and b"IEND" in tail[-16:]):
            return None
        _decode_bounded(Path(file), data=data)
        return None
    except InputError as exc:
        return exc.problem
    except Exception as exc:
        return f"is not a readable image ({type(exc).__name__})"


def _decode_bounded(file: Path, size: int | None = None, data: bytes | None = None) -> torch.Tensor:
    """(3, H, W) uint8 RGB of an image file (or of its bytes ``data``), its size read from the header first: at
    most DENOISE_MAX_PIXELS are decoded. A JPEG is decoded at a reduced DCT scale (1/2, 1/4 or 1/8) where that still leaves both
    sides at least ``size`` (faster, and what a resize to ``size`` would average away), or where its full
    size is over the bound; any other image over the bound is refused (a few kilobytes of PNG can claim
    gigapixels)."""
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = None  # Pillow's own bomb guard would refuse before naming our bound; ours is below
    try:
        with Image.open(file if data is None else io.BytesIO(data)) as image:  # reads the header only
            (width, height), jpeg = image.size, image.format == "JPEG"
            fits = _scale_within_bound(file, width, height, jpeg)
            if jpeg:
                scale = max([fits] + [k for k in _JPEG_SCALES if size and min(width, height) // k >= size])
                if scale > 1:
                    image.draft("RGB", (width // scale, height // scale))
            return torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1).contiguous()
    except InputError:
        raise
    except Exception as exc:
        raise InputError(file, f"is not a readable image ({type(exc).__name__})") from None


def _scale_within_bound(file: Path, width: int, height: int, jpeg: bool) -> int:
    """The smallest decoding scale (1, or a JPEG's 2, 4, 8) that keeps an image within DENOISE_MAX_PIXELS;
    InputError naming ``file`` when there is none."""
    fits = next((k for k in (1, *(_JPEG_SCALES if jpeg else ())) if (width // k) * (height // k) <=
                 limit("DENOISE_MAX_PIXELS")), None)
    if fits is None:
        raise InputError(file, f"is {width:,} x {height:,} pixels, {over_limit('DENOISE_MAX_PIXELS', width * height)}")
    return fits


def decode_image(file: str, size: int, data: bytes | None = None) -> torch.Tensor:
    """(3, size, size) uint8 RGB of an image file (or of its bytes ``data``): decoded (``_decode_bounded``),
    then resized (bilinear, antialiased, as torchvision's ``Resize``) unless it is that size already."""
    from torchvision.transforms.v2 import functional

    image = _decode_bounded(Path(file), size, data)
    if tuple(image.shape[1:]) == (size, size):
        return image
    return functional.resize(image, [size, size], antialias=True)


def image_inputs(root: Path, files: list[str], size: int) -> Inputs:
    """The images ``files`` (relative to ``root``) as a lazy view of (3, size, size) uint8 pixels (checked,
    then cached or streamed, by ``load_data``)."""
    return Inputs.of(FileSource([str(root / f) for f in files], functools.partial(decode_image, size=size),
                                (3, size, size), check=image_problem))


@data_spec("imagefolder:DIR", arch="cnn", options=SIZE_OPTION)
def _imagefolder(path: Path, split, size: int = 32):
    """``DIR/CLASS/*.png|jpg`` (or ``DIR/train/CLASS`` and ``DIR/test/CLASS``), resized to ``size`` x ``size`` RGB."""
    if not path.is_dir():
        raise InputError(path, "is not a directory (imagefolder: needs DIR/CLASS/*.png)")
    root = path / split if (path / "train").is_dir() and (path / "test").is_dir() else path
    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    files, labels = [], []
    for label, name in enumerate(classes):
        for file in sorted((root / name).iterdir()):
            if file.suffix.lower() in _IMAGE_SUFFIXES:
                files.append(f"{name}/{file.name}")
                labels.append(label)
    if not files:
        raise InputError(root, "holds no images in class folders")
    prefix = f"{split}/" if root != path else ""
    origin = Origin(np.arange(len(files), dtype=np.int64), [prefix + f for f in files])
    return image_inputs(root, files, size), np.array(labels), classes, {"source": "imagefolder", "size": size}, origin
