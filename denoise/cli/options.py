"""Every option that more than one command takes, declared once with its flag, help and bounds.

Commands name these typer options as their parameters' defaults. ``reads_data`` adds the options of every command
that reads a data spec; ``run_options`` those of the method (``denoise.core.rounds.RunOptions``), which
``denoise run`` and ``denoise bench quality`` receive as one ``RunOptions`` object. Ranges are checked where the
options are used (``RunOptions.check``, ``Recipe.check``), not here.
"""

from __future__ import annotations

import functools
from inspect import Parameter, signature as signature_of
from typing import Optional

import typer

from denoise.core.batches import BATCH_SIZE
from denoise.core.relabel import RELABEL_PROBABILITY
from denoise.core.rounds import GENERALIZING_SCHEDULE, MEMORIZED_SCHEDULE, CORRUPTED_EPOCHS, RunOptions
from denoise.core.training import Recipe

from .data import spec_help
from .data.source import set_reading
from .errors import UsageError
from .stages import AS_TRAINED

Data = typer.Option(..., "--data", help=spec_help())
Noise = typer.Option(None, "--noise", help="Noise file from `inject-noise`: its labels (and input noise) are used.")
Model = typer.Option(..., "--model", help="Checkpoint (.safetensors) written by denoise.")
Arch = typer.Option(None, "--arch", help="Confirm a user module:function architecture recorded in the checkpoint; "
                                          "user code is imported only when named here.")
Device = typer.Option("auto", "--device", help="auto, cpu or cuda.")
Json = typer.Option(False, "--json", help="Print one JSON object instead of a table.")
Seed = typer.Option(0, "--seed")
Layer = typer.Option(None, "--layer", help="Layer spec: a module name (its output) or NAME:input. "
                                           "Default: the input of the final classifier layer.")
BatchSize = typer.Option(BATCH_SIZE, "--batch-size", min=1, help="Samples per forward pass.")
Precision = typer.Option("fp32", "--precision", help="Forward passes in fp32, or under bf16/fp16 autocast "
                                                     "(see the README's performance section for the deviation).")
Target = typer.Option(RunOptions.target, "--target", help="label: the given label's logit; max: the top logit.")
PerClass = typer.Option(RunOptions.per_class, "--per-class/--global", help="One mixture per given label, or one.")
Features = typer.Option(RunOptions.features, "--features",
                        help="auto (the detector the model's regime calls for: the attribution mixture where the "
                             "model fits at least 90 % of its labels, with the attribution block only where its "
                             "split separates the prototype margin clearly, else the loss mixture), or a comma list "
                             "for the attribution mixture of prototype (how much more a sample's attribution looks "
                             "like another class's than its label's), attribution, loss, margin, confidence.")
Dims = typer.Option(RunOptions.dims, "--dims", min=1, help="Principal components kept of the attributions.")
Orient = typer.Option(RunOptions.orient, "--orient", help="How partition picks the noisy component: auto (the "
                      "one that looks more like other classes; where no sample does, the one with more attribution "
                      "energy, as corrupted inputs have), margin, loss or norm.")
By = typer.Option(RunOptions.prune_by, "--by", help="noisy: only units whose coefficient points toward noisy "
                                                   "samples; abs: by |coefficient| (the paper).")
Relabel = typer.Option(RunOptions.relabel, "--relabel/--no-relabel", help="Also fine-tune (run: in the last round) "
                       "on the flagged samples whose suggested class (the prediction in the partition's scores) is "
                       f"another with probability >= {RELABEL_PROBABILITY:g}, relabeled to it, instead of dropping "
                       "them (docs/relabel.md).")

# the training recipe (denoise.core.training.Recipe) of train, finetune and run's rounds
Lr = typer.Option(Recipe.lr, "--lr", help="Learning rate (SGD with momentum, cosine schedule).")
WeightDecay = typer.Option(Recipe.weight_decay, "--weight-decay")
TrainBatchSize = typer.Option(Recipe.batch_size, "--batch-size", min=1, help="Samples per training step.")
Train = typer.Option(Recipe.train, "--train", help="head: the final classifier layer only; all: every layer.")
Shrink = typer.Option(RunOptions.shrink, "--shrink", help="Multiply the trained weights by this factor in (0, 1] "
                      "before fine-tuning (a shrink warm start: forgets memorized noise faster; run: the last round "
                      "and every round with --round-train all); 1 keeps them as they are.")
AUGMENT_HELP = ("Training augmentation: none, flip-crop (random crop of the image padded by 4 pixels + horizontal "
                "flip: the CIFAR recipe) or imagenet (random resized crop + flip); recorded in the checkpoint.")
Augment = typer.Option("none", "--augment", help=AUGMENT_HELP)
AugmentAsTrained = typer.Option(AS_TRAINED, "--augment", help=AUGMENT_HELP + f" Default {AS_TRAINED}: the one "
                                "the checkpoint records it was trained with.")

# the rounds of run and bench quality: left out, round 1's choice sets them (denoise.core.rounds.schedule)
Rounds = typer.Option(RunOptions.rounds, "--rounds", min=1, help="Detect-and-fine-tune rounds (default: "
                      f"{MEMORIZED_SCHEDULE.rounds}, or 1 where the model generalizes or the inputs are corrupted).")
Ratio = typer.Option(None, "--ratio", help=f"Fraction of units to prune in the last round (default: "
                     f"{RunOptions.prune_ratio:g} where the model memorized its labels, none where it generalizes; "
                     "given, in either); 0 turns pruning off.")
RoundTrain = typer.Option(RunOptions.round_train, "--round-train", help="Fine-tuning of the rounds before the last: "
                          f"head (on cached features, cheap), all, or auto ({MEMORIZED_SCHEDULE.round_train}).")
EPOCHS_HELP = (f"Fine-tuning epochs of the last round (default: {MEMORIZED_SCHEDULE.epochs}, or "
               f"{GENERALIZING_SCHEDULE.epochs} where the model generalizes: a single round; {CORRUPTED_EPOCHS} "
               "where the inputs are corrupted: a single round).")
RoundEpochs = typer.Option(RunOptions.round_epochs, "--round-epochs", min=1, help="Fine-tuning epochs of each round "
                           f"before the last (default: {MEMORIZED_SCHEDULE.round_epochs}).")
RunTrain = typer.Option(RunOptions.train, "--train", help="Fine-tuning of the last round: all layers, or the head.")

Workers = typer.Option(None, "--workers", min=0, help="Loader processes that decode files (imagefolder, csv, wds, "
                       "speech folders); 0 decodes in this process. Default: one fewer than the usable cores, at "
                       "most 8. Results do not depend on it.")
SkipUnreadable = typer.Option(False, "--skip-unreadable", help="Drop image or audio files that cannot be read "
                              "(their paths are recorded in the output) instead of refusing the data set.")


def _adding(command, added: dict[str, tuple[object, typer.models.OptionInfo]], call, replaces: str | None = None):
    """``command`` with the keyword options ``added`` (name -> (annotation, typer option)) appended to its
    signature, in place of its parameter ``replaces``; ``call(command, added values, args, kwargs)`` runs it."""
    signature = signature_of(command)

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        values = {name: kwargs.pop(name) for name in added}
        return call(command, values, args, kwargs)

    own = [p for p in signature.parameters.values() if p.name != replaces]
    extra = [Parameter(name, Parameter.KEYWORD_ONLY, default=option, annotation=annotation)
             for name, (annotation, option) in added.items()]
    wrapper.__signature__ = signature.replace(parameters=[*own, *extra])
    wrapper.__annotations__ = {**{name: value for name, value in command.__annotations__.items() if name != replaces},
                               **{name: annotation for name, (annotation, _) in added.items()}}
    return wrapper


def reads_data(command):
    """Give ``command`` the options of every command that reads a data spec: ``--workers`` and
    ``--skip-unreadable`` (``denoise.cli.data.source.set_reading``) are set before the command runs."""
    def call(command, values, args, kwargs):
        set_reading(values["workers"], values["skip_unreadable"])
        return command(*args, **kwargs)

    return _adding(command, {"workers": (Optional[int], Workers), "skip_unreadable": (bool, SkipUnreadable)}, call)


# RunOptions field -> (annotation, option) of the method's options that run and bench quality share
_METHOD = {"rounds": (Optional[int], Rounds), "target": (str, Target), "features": (str, Features),
           "dims": (int, Dims), "orient": (str, Orient), "ratio": (Optional[float], Ratio), "by": (str, By),
           "train": (str, RunTrain), "round_train": (str, RoundTrain), "round_epochs": (Optional[int], RoundEpochs),
           "lr": (float, Lr), "shrink": (float, Shrink)}
_FIELDS = {"by": "prune_by", "last_epochs": "epochs"}  # parameters named otherwise than their RunOptions field
# and those only run takes (bench quality sets them per cell, or has its own --seeds and --relabel)
_RUN = {"layer": (Optional[str], Layer), "per_class": (bool, PerClass), "batch_size": (int, TrainBatchSize),
        "seed": (int, Seed), "relabel": (bool, Relabel), "augment": (str, AugmentAsTrained)}


def run_options(*, epochs_flag: str = "--epochs", every: bool = True):
    """Give ``command`` the method's options as one ``options: RunOptions`` parameter: those ``run`` and ``bench
    quality`` share, plus (``every``) those of ``run`` alone. ``epochs_flag`` names the last round's epochs
    (``bench quality`` has its own ``--epochs``). ``--ratio`` given prunes a model that generalizes too."""
    last_epochs = typer.Option(RunOptions.epochs, epochs_flag, min=1, help=EPOCHS_HELP)
    added = {**_METHOD, "last_epochs": (Optional[int], last_epochs), **(_RUN if every else {})}

    def call(command, values, args, kwargs):
        ratio = values.pop("ratio")
        if ratio is not None and not 0 <= ratio < 1:
            raise UsageError(f"--ratio must be in [0, 1), got {ratio}")
        options = RunOptions(**{_FIELDS.get(name, name): value for name, value in values.items()},
                             prune_ratio=RunOptions.prune_ratio if ratio is None else ratio or None,
                             prune_generalizing=bool(ratio))
        return command(*args, options=options, **kwargs)

    return lambda command: _adding(command, added, call, replaces="options")
