"""The denoising method as pure functions over tensors and arrays: no file I/O, no printing.

Stages: ``attribution`` (per-sample gradient x activation, batch by batch), ``partition`` (clean/noisy
mixture), ``sensitivity`` (units that respond to noise), ``pruning`` (which units to remove), ``training``
(fine-tuning recipes and loop); ``rounds`` is the plan that chains them and walks it, ``regime`` picks
the detector and recipe a model calls for, ``selection`` hands back the input model when the cleaned one
is worse on held-out samples, ``relabel`` says which samples a round fine-tunes on with which labels
(dropping or relabeling the flagged ones), ``suspects`` ranks the flagged samples for a person. Around them:
``layers`` names and masks hidden layers, ``models`` builds networks, ``batches`` feeds batches to the
device through one DataLoader path, ``augment`` draws training augmentation per batch, ``metrics`` scores
classifiers and detectors, ``shards`` splits the samples across processes, ``detectors`` holds baseline
detectors, ``noise`` makes synthetic noise for experiments, ``inputs`` normalizes, ``speech`` makes audio
features, and ``errors.OptionError`` is what every option check raises.
"""

__version__ = "0.1.0"
