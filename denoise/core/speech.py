"""Speech features: fixed-length waveforms -> log-mel spectrograms or MFCCs (torchaudio transforms)."""

from __future__ import annotations

import torch
import torchaudio

FEATURE_KINDS = ("log-mel", "mfcc")


def fit_length(waveform: torch.Tensor, length: int) -> torch.Tensor:
    """(T,) float waveform -> (length,): centre-cropped when longer, zero-padded at the end when shorter."""
    if waveform.numel() >= length:
        start = (waveform.numel() - length) // 2
        return waveform[start:start + length]
    return torch.nn.functional.pad(waveform, (0, length - waveform.numel()))


def speech_features(waveforms: torch.Tensor, sample_rate: int, kind: str = "log-mel", n_mels: int = 40,
                    n_mfcc: int = 20) -> torch.Tensor:
    """(N, T) float waveforms in [-1, 1] -> (N, 1, bins, frames) float32 features.

    ``log-mel``: log(1e-6 + mel power), ``n_mels`` bins, 32 ms windows, 16 ms hop.
    ``mfcc``: ``n_mfcc`` coefficients over the same mel filter bank.
    """
    n_fft = 1 << max(6, round(0.032 * sample_rate) - 1).bit_length()
    mel = dict(n_fft=n_fft, hop_length=n_fft // 2, n_mels=n_mels)
    if kind == "log-mel":
        spectrogram = torchaudio.transforms.MelSpectrogram(sample_rate, **mel)(waveforms)
        features = torch.log(spectrogram + 1e-6)
    elif kind == "mfcc":
        features = torchaudio.transforms.MFCC(sample_rate, n_mfcc=n_mfcc, melkwargs=mel)(waveforms)
    else:
        raise ValueError(f"unknown speech feature kind {kind!r} (use one of {', '.join(FEATURE_KINDS)})")
    return features.unsqueeze(1).float()
