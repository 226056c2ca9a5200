"""Data sets named by a ``--data`` spec, read from local files only (nothing downloads).

Specs (``--split train|test`` picks the split):

* ``digits`` - scikit-learn's bundled 8x8 digits, fixed stratified 80/20 split (1,437 / 360);
* ``npz:FILE`` - arrays ``x`` (N, ...) and ``y`` (N,) ints, optional ``split`` (N,) of "train"/"test"
  (without it both splits are the whole file) and ``classes`` (K,) strings;
* ``fsdd:DIR`` - Free Spoken Digit wav files ``{digit}_{speaker}_{index}.wav``; index 0-4 is the test split;
* ``speechcommands:DIR`` - Speech Commands: one folder per word, ``testing_list.txt`` names the test split;
* ``mnist:DIR`` - the four IDX files (optionally ``.gz``);
* ``cifar10:DIR`` - the python batches (``data_batch_1`` ... ``test_batch``) or the binary ``.bin`` batches;
* ``imagefolder:DIR`` - ``DIR/CLASS/*.png|jpg`` (or ``DIR/train/CLASS`` and ``DIR/test/CLASS``), resized to 32x32 RGB.

Speech specs take ``?features=mfcc`` (default ``log-mel``), e.g. ``fsdd:recordings?features=mfcc``.
"""

from __future__ import annotations

import contextlib
import gzip
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from unlearn_core.speech import FEATURE_KINDS, fit_length, speech_features

from .errors import InputError, UsageError

SPLITS = ("train", "test")
SPEC_KINDS = ("digits", "npz", "fsdd", "speechcommands", "mnist", "cifar10", "imagefolder")


@dataclass
class Dataset:
    """One split of a data set, as raw (not yet normalized) float inputs."""

    inputs: torch.Tensor  # (N, *sample_shape) float32
    labels: torch.Tensor  # (N,) int64 in [0, len(classes))
    classes: list[str]
    spec: str
    split: str
    transform: dict = field(default_factory=dict)  # how raw files became ``inputs``; recorded in checkpoints


_read: dict[tuple[str, str], Dataset] | None = None  # what load_data has read, while ``read_once`` is active


@contextlib.contextmanager
def read_once() -> Iterator[None]:
    """Within the block, ``load_data`` reads each (spec, split) from disk once and returns that same
    Dataset when asked again: ``denoise run`` reads the train split in every stage of every round
    (1.4 s each time for FSDD's log-mel features). No caller modifies a Dataset in place."""
    global _read
    outer = _read
    _read = {} if outer is None else outer
    try:
        yield
    finally:
        _read = outer


def load_data(spec: str, split: str = "train") -> Dataset:
    """Read split ``split`` of the data set named by ``spec`` (see the module docstring)."""
    if split not in SPLITS:
        raise UsageError(f"--split must be one of {', '.join(SPLITS)}, not {split!r}")
    if _read is not None and (spec, split) in _read:
        return _read[spec, split]
    kind, _, rest = spec.partition(":")
    if kind not in SPEC_KINDS:
        raise UsageError(f"unknown data spec {spec!r} (kinds: {', '.join(SPEC_KINDS)}; e.g. digits, npz:FILE)")
    if kind == "digits":
        inputs, labels, classes, transform = _digits(split)
    else:
        location, _, query = rest.partition("?")
        if not location:
            raise UsageError(f"data spec {spec!r} needs a path after '{kind}:'")
        path = Path(location)
        if not path.exists():
            raise InputError(path, "no such file or directory")
        options = _query(spec, query)
        reader = {"npz": _npz, "fsdd": _fsdd, "speechcommands": _speechcommands, "mnist": _mnist,
                  "cifar10": _cifar10, "imagefolder": _imagefolder}[kind]
        inputs, labels, classes, transform = reader(path, split, **options)
    if len(labels) == 0:
        raise InputError(spec, f"the {split} split has no samples")
    dataset = Dataset(torch.as_tensor(inputs, dtype=torch.float32), torch.as_tensor(labels, dtype=torch.long),
                      [str(c) for c in classes], spec, split, transform)
    if not torch.isfinite(dataset.inputs).all():
        raise InputError(spec, "inputs contain NaN or infinite values")
    if _read is not None:
        _read[spec, split] = dataset
    return dataset


def _query(spec: str, query: str) -> dict:
    options = dict(item.partition("=")[::2] for item in query.split("&") if item)
    unknown = set(options) - {"features"}
    if unknown:
        raise UsageError(f"data spec {spec!r}: unknown option(s) {', '.join(sorted(unknown))} (known: features)")
    if "features" in options and options["features"] not in FEATURE_KINDS:
        raise UsageError(f"data spec {spec!r}: features must be one of {', '.join(FEATURE_KINDS)}")
    return options


def _digits(split):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    order = np.arange(len(digits.target))
    train, test = train_test_split(order, test_size=0.2, stratify=digits.target, random_state=0)
    chosen = np.sort(train if split == "train" else test)
    inputs = (digits.data[chosen] / 16.0).reshape(-1, 1, 8, 8)
    return inputs, digits.target[chosen], [str(c) for c in range(10)], {"source": "digits", "scale": "x/16"}


def _npz(path: Path, split, **_):
    if not path.is_file():
        raise InputError(path, "is not a file (npz: needs an .npz file)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except ValueError as exc:
        raise InputError(path, f"holds object arrays, which are never unpickled ({exc})") from None
    except Exception as exc:
        raise InputError(path, f"is not a readable .npz file ({type(exc).__name__})") from None
    for name in ("x", "y"):
        if name not in arrays:
            raise InputError(path, f"has no array {name!r} (found: {', '.join(sorted(arrays)) or 'none'})")
    x, y = arrays["x"], arrays["y"]
    if x.dtype.kind not in "fiub" or x.ndim < 2:
        raise InputError(path, f"x must be a numeric array (N, ...), got {x.dtype} with shape {x.shape}")
    if y.dtype.kind not in "iu" or y.ndim != 1:
        raise InputError(path, f"y must be a 1-d integer array, got {y.dtype} with shape {y.shape}")
    if len(x) != len(y):
        raise InputError(path, f"x has {len(x)} samples but y has {len(y)}")
    if len(y) and y.min() < 0:
        raise InputError(path, "y has negative labels")
    classes = [str(c) for c in range(int(y.max()) + 1 if len(y) else 0)]
    if "classes" in arrays:
        classes = [str(c) for c in arrays["classes"].tolist()]
        if len(y) and y.max() >= len(classes):
            raise InputError(path, f"y has label {int(y.max())} but only {len(classes)} classes are named")
    if "split" in arrays:
        split_names = arrays["split"].astype(str)
        if split_names.shape != y.shape:
            raise InputError(path, f"split has shape {split_names.shape} but y has {y.shape}")
        chosen = split_names == split
        x, y = x[chosen], y[chosen]
    return x.astype(np.float32), y.astype(np.int64), classes, {"source": "npz"}


def _read_wav(path: Path, sample_rate: int | None = None) -> tuple[np.ndarray, int]:
    import soundfile

    try:
        audio, rate = soundfile.read(path, dtype="float32", always_2d=True)
    except Exception as exc:
        raise InputError(path, f"is not a readable audio file ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
    if sample_rate is not None and rate != sample_rate:
        raise InputError(path, f"sample rate is {rate} Hz; expected {sample_rate} Hz like the other files")
    if audio.shape[0] == 0:
        raise InputError(path, "audio file has no samples")
    return audio.mean(axis=1), rate


def _speech(files: list[Path], seconds: float, features: str, source: str):
    waveforms, sample_rate = [], None
    for file in files:
        audio, sample_rate = _read_wav(file, sample_rate)
        waveforms.append(fit_length(torch.from_numpy(audio), int(round(seconds * sample_rate))))
    inputs = speech_features(torch.stack(waveforms), sample_rate, features)
    transform = {"source": source, "features": features, "sample_rate": sample_rate, "seconds": seconds,
                 "bins": int(inputs.shape[2])}
    return inputs, transform


_FSDD_NAME = re.compile(r"^(\d)_([A-Za-z]+)_(\d+)\.wav$")


def _fsdd(path: Path, split, features="log-mel"):
    if not path.is_dir():
        raise InputError(path, "is not a directory (fsdd: needs the folder of recordings)")
    files, labels = [], []
    for file in sorted(path.glob("*.wav")):
        match = _FSDD_NAME.match(file.name)
        if match is None:
            raise InputError(file, "name does not follow {digit}_{speaker}_{index}.wav")
        if (int(match[3]) <= 4) == (split == "test"):
            files.append(file)
            labels.append(int(match[1]))
    if not files:
        raise InputError(path, f"holds no FSDD .wav files for the {split} split")
    inputs, transform = _speech(files, 1.0, features, "fsdd")
    return inputs, np.array(labels), [str(d) for d in range(10)], transform


def _speechcommands(path: Path, split, features="log-mel"):
    if not path.is_dir():
        raise InputError(path, "is not a directory (speechcommands: needs the extracted data set)")
    listed = path / "testing_list.txt"
    if not listed.is_file():
        raise InputError(path, "has no testing_list.txt (is this the Speech Commands folder?)")
    testing = set(listed.read_text().split())
    validation_list = path / "validation_list.txt"
    validation = set(validation_list.read_text().split()) if validation_list.is_file() else set()
    held_out = testing | validation  # the validation list is neither train nor test
    classes = sorted(d.name for d in path.iterdir() if d.is_dir() and not d.name.startswith("_"))
    files, labels = [], []
    for label, word in enumerate(classes):
        for file in sorted((path / word).glob("*.wav")):
            relative = f"{word}/{file.name}"
            chosen = relative in testing if split == "test" else relative not in held_out
            if chosen:
                files.append(file)
                labels.append(label)
    if not files:
        raise InputError(path, f"holds no .wav files for the {split} split")
    inputs, transform = _speech(files, 1.0, features, "speechcommands")
    return inputs, np.array(labels), classes, transform


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            raw = handle.read()
    except OSError as exc:
        raise InputError(path, f"cannot be read ({exc})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise InputError(path, "is not an unsigned-byte IDX file")
    ndim = raw[3]
    dims = np.frombuffer(raw, ">u4", ndim, 4).astype(int) if len(raw) >= 4 + 4 * ndim else None
    if dims is None or len(raw) != 4 + 4 * ndim + int(np.prod(dims)):
        raise InputError(path, "is truncated or its header does not match its size")
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _find(path: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx")):
        if (path / name).is_file():
            return path / name
    raise InputError(path, f"has no {stem} (or {stem}.gz)")


def _mnist(path: Path, split, **_):
    if not path.is_dir():
        raise InputError(path, "is not a directory (mnist: needs the folder of IDX files)")
    prefix = "train" if split == "train" else "t10k"
    images = _read_idx(_find(path, f"{prefix}-images-idx3-ubyte"))
    labels = _read_idx(_find(path, f"{prefix}-labels-idx1-ubyte"))
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise InputError(path, f"{prefix} images {images.shape} and labels {labels.shape} do not match")
    return images[:, None].astype(np.float32) / 255.0, labels.astype(np.int64), [str(d) for d in range(10)], \
        {"source": "mnist", "scale": "x/255"}


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


def _cifar10(path: Path, split, **_):
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
    return inputs, labels, classes, {"source": "cifar10", "scale": "x/255"}


_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}


def _imagefolder(path: Path, split, size: int = 32, **_):
    from torchvision.io import ImageReadMode, decode_image

    if not path.is_dir():
        raise InputError(path, "is not a directory (imagefolder: needs DIR/CLASS/*.png)")
    root = path / split if (path / "train").is_dir() and (path / "test").is_dir() else path
    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    images, labels = [], []
    for label, name in enumerate(classes):
        for file in sorted((root / name).iterdir()):
            if file.suffix.lower() not in _IMAGE_SUFFIXES:
                continue
            try:
                image = decode_image(str(file), mode=ImageReadMode.RGB).float().unsqueeze(0) / 255.0
            except Exception as exc:
                raise InputError(file, f"is not a readable image ({type(exc).__name__})") from None
            images.append(torch.nn.functional.interpolate(image, size=(size, size), mode="bilinear",
                                                          antialias=True, align_corners=False)[0])
            labels.append(label)
    if not images:
        raise InputError(root, "holds no images in class folders")
    return torch.stack(images), np.array(labels), classes, {"source": "imagefolder", "size": size}
