"""The denoising method as pure functions over tensors and arrays: no file I/O, no printing.

Stages: ``attribution`` (per-sample gradient x activation), ``partition`` (clean/noisy mixture),
``sensitivity`` (units that respond to noise), ``pruning`` (which units to remove), ``training``
(fine-tuning and evaluation); ``layers`` names and masks hidden layers, ``models`` builds networks,
``noise`` makes synthetic noise for experiments.
"""

__version__ = "0.1.0"
