"""Speech data sets, as log-mel or MFCC features of 1-second clips (``?features=mfcc``; default log-mel)."""

from __future__ import annotations

import functools
import re
from pathlib import Path

import numpy as np
import torch

from denoise.core.speech import FEATURE_KINDS, fit_length, speech_features

from ..errors import InputError
from ..limits import over_limit
from .registry import Origin, data_spec
from .source import FileSource, Inputs

SPEECH_OPTIONS = {"features": FEATURE_KINDS}


def _read_clip(path: Path, seconds: float, sample_rate: int | None = None) -> tuple[np.ndarray, int]:
    """The centre ``seconds`` of an audio file as a mono float waveform, and its sample rate. Only those
    frames are read (the rest is cropped by ``fit_length`` anyway), after the header's rate and channels are
    checked against their bounds: a small file of compressed silence can last for days."""
    import soundfile

    try:
        with soundfile.SoundFile(path) as audio_file:
            rate, frames = audio_file.samplerate, audio_file.frames
            _check_header(path, audio_file, sample_rate)
            length = int(round(seconds * rate))
            if frames > length:
                audio_file.seek((frames - length) // 2)  # the centre, as fit_length crops it
            audio = audio_file.read(min(frames, length), dtype="float32", always_2d=True)
    except InputError:
        raise
    except Exception as exc:
        raise _unreadable(path, exc) from None
    if audio.shape[0] == 0:
        raise InputError(path, "audio file has no samples")
    return audio.mean(axis=1), rate


def _unreadable(path: Path, exc: Exception) -> InputError:
    return InputError(path, f"is not a readable audio file ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})")


def _check_header(path: Path, info, sample_rate: int | None) -> None:
    """InputError unless the header ``info`` (a soundfile ``SoundFile`` or ``info``) of ``path`` has a sample
    rate and channels within their bounds, and ``sample_rate`` if one is given."""
    for variable, value, what in (("DENOISE_MAX_SAMPLE_RATE", info.samplerate, "sample rate"),
                                  ("DENOISE_MAX_CHANNELS", info.channels, "channels")):
        problem = over_limit(variable, value)
        if problem:
            raise InputError(path, f"{what} {value:,} is {problem}")
    if sample_rate is not None and info.samplerate != sample_rate:
        raise InputError(path, f"sample rate is {info.samplerate} Hz; expected {sample_rate} Hz like the other files")

def clip_features(file: str, seconds: float, sample_rate: int, features: str) -> torch.Tensor:
    """(1, bins, frames) float32 features of the centre ``seconds`` of one audio file at ``sample_rate``."""
    audio, _ = _read_clip(Path(file), seconds, sample_rate)
    waveform = fit_length(torch.from_numpy(audio), int(round(seconds * sample_rate)))
    return speech_features(waveform[None], sample_rate, features)[0]


def _speech(files: list[Path], seconds: float, features: str, source: str):
    """A lazy view of the clips' features and the transform record; the first file sets the sample rate, and
    ``load_data`` checks every other file's header against it before any work (``audio_problem``)."""
    sample_rate = _read_clip(files[0], seconds)[1]
    decode = functools.partial(clip_features, seconds=seconds, sample_rate=sample_rate, features=features)
    shape = tuple(decode(str(files[0])).shape)
    clips = FileSource([str(f) for f in files], decode, shape, torch.float32,
                       check=functools.partial(audio_problem, sample_rate=sample_rate))
    transform = {"source": source, "features": features, "sample_rate": sample_rate, "seconds": seconds,
                 "bins": int(shape[1])}
    return Inputs.of(clips), transform


def audio_problem(path: str, sample_rate: int) -> str | None:  # FileSource.check of audio files
    """Why ``path`` is not an audio file of ``sample_rate`` within the bounds (its header only), or None."""
    import soundfile

    try:
        info = soundfile.info(path)
        _check_header(Path(path), info, sample_rate)
    except InputError as exc:
        return exc.problem
    except Exception as exc:
        return _unreadable(Path(path), exc).problem
    return "audio file has no samples" if info.frames == 0 else None


_FSDD_NAME = re.compile(r"^(\d)_([A-Za-z]+)_(\d+)\.wav$")

@data_spec("fsdd:DIR", arch="kws", options=SPEECH_OPTIONS)
def _fsdd(path: Path, split, features="log-mel"):
    """Free Spoken Digit wav files ``{digit}_{speaker}_{index}.wav``; index 0-4 is the test split."""
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
    origin = Origin(np.arange(len(files), dtype=np.int64), [f.name for f in files])
    return inputs, np.array(labels), [str(d) for d in range(10)], transform, origin

@data_spec("speechcommands:DIR", arch="kws", options=SPEECH_OPTIONS)
def _speechcommands(path: Path, split, features="log-mel"):
    """Speech Commands: one folder per word, ``testing_list.txt`` names the test split."""
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
    origin = Origin(np.arange(len(files), dtype=np.int64), [str(f.relative_to(path)) for f in files])
    return inputs, np.array(labels), classes, transform, origin
