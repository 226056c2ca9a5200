"""Speech data sets, as log-mel or MFCC features of 1-second clips (``?features=mfcc``; default log-mel)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from unlearn_core.speech import FEATURE_KINDS, fit_length, speech_features

from ..errors import InputError
from ..limits import over_limit
from .registry import data_spec

SPEECH_OPTIONS = {"features": FEATURE_KINDS}


def _read_clip(path: Path, seconds: float, sample_rate: int | None = None) -> tuple[np.ndarray, int]:
    """The centre ``seconds`` of an audio file as a mono float waveform, and its sample rate. Only those
    frames are read (the rest is cropped by ``fit_length`` anyway), after the header's rate and channels are
    checked against their bounds: a small file of compressed silence can last for days."""
    import soundfile

    try:
        with soundfile.SoundFile(path) as audio_file:
            rate, channels, frames = audio_file.samplerate, audio_file.channels, audio_file.frames
            for variable, value, what in (("DENOISE_MAX_SAMPLE_RATE", rate, "sample rate"),
                                          ("DENOISE_MAX_CHANNELS", channels, "channels")):
                problem = over_limit(variable, value)
                if problem:
                    raise InputError(path, f"{what} {value:,} is {problem}")
            if sample_rate is not None and rate != sample_rate:
                raise InputError(path, f"sample rate is {rate} Hz; expected {sample_rate} Hz like the other files")
            length = int(round(seconds * rate))
            if frames > length:
                audio_file.seek((frames - length) // 2)  # the centre, as fit_length crops it
            audio = audio_file.read(min(frames, length), dtype="float32", always_2d=True)
    except InputError:
        raise
    except Exception as exc:
        raise InputError(path, f"is not a readable audio file ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
    if audio.shape[0] == 0:
        raise InputError(path, "audio file has no samples")
    return audio.mean(axis=1), rate

def _speech(files: list[Path], seconds: float, features: str, source: str):
    waveforms, sample_rate = [], None
    for file in files:
        audio, sample_rate = _read_clip(file, seconds, sample_rate)
        waveforms.append(fit_length(torch.from_numpy(audio), int(round(seconds * sample_rate))))
    inputs = speech_features(torch.stack(waveforms), sample_rate, features)
    transform = {"source": source, "features": features, "sample_rate": sample_rate, "seconds": seconds,
                 "bins": int(inputs.shape[2])}
    return inputs, transform

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
    return inputs, np.array(labels), [str(d) for d in range(10)], transform

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
    return inputs, np.array(labels), classes, transform
