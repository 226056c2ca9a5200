"""Bounds on what one input file may make denoise allocate, each raisable by an environment variable.

A file is only trusted as far as its size can vouch for it: an array header may not claim more bytes than
its member holds (``denoise.cli.files.stage_files``), a compressed member may not claim more than deflate can
unpack from its bytes. What a header can claim within its size is bounded here: the number of classes, the
pixels of an image decoded at full size, the sample rate and channels of an audio file (of which only the
clip that is used is read). The README's CI section and docs/limits.md list them.
"""

from __future__ import annotations

import os

from .errors import UsageError

# environment variable -> default bound (docs/limits.md says what each bounds)
LIMITS = {
    "DENOISE_MAX_CLASSES": 100_000,
    "DENOISE_MAX_PIXELS": 1 << 24,  # 4096 x 4096
    "DENOISE_MAX_SAMPLE_RATE": 384_000,
    "DENOISE_MAX_CHANNELS": 64,
    "DENOISE_CACHE_MB": 512,  # decoded samples kept in memory (denoise.cli.data.source.cached); larger sets stream
}
DEFLATE_RATIO = 1032  # the most bytes deflate can unpack from one compressed byte (zlib's technical note)


def limit(variable: str) -> int:
    """The bound named by ``variable`` (a key of LIMITS): the environment's value if set, else the default."""
    text = os.environ.get(variable)
    if text is None:
        return LIMITS[variable]
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise UsageError(f"{variable} must be a positive whole number, not {text!r}")
    return value


def over_limit(variable: str, value: int) -> str | None:
    """The end of a refusal message when ``value`` exceeds the bound ``variable``, else None."""
    bound = limit(variable)
    return None if value <= bound else f"over the limit of {bound:,} (raise it with {variable}={value})"
