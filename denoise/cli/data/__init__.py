"""Data named by a ``--data`` spec: the registry and its readers, splits prepared for a model, noise files.

Importing the package registers every reader module's kinds, in the order help texts list them.
"""

from . import arrays, speech, images, manifest, wds  # noqa: F401  (registration, in help order)
from .registry import SPEC_KINDS, Dataset, default_arch, load_data, read_once, spec_help  # noqa: F401
