"""denoise: clean a classifier trained on noisy data without retraining it from scratch.

``denoise.core`` is the method (pure functions over tensors and arrays), ``denoise.cli`` the command line
(files, devices, messages); ``find_label_issues`` and ``clean`` are its Python API (``denoise.api``).
They are imported on first use: the console script installs its signal handlers before torch is imported.
"""

from .core import __version__  # noqa: F401  (one place: the package of the method)
__all__ = ["clean", "find_label_issues"]


def __getattr__(name: str):
    if name in __all__:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'denoise' has no attribute {name!r}")
