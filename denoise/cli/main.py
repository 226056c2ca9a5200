"""The ``denoise`` command line: typer commands that parse options, call one function, print its summary."""

from __future__ import annotations

if __name__ == "__main__":  # python -m denoise.cli.main: a signal during the imports below ends quietly too
    from .signals import quiet_until_started

    quiet_until_started()

import json
import sys
from dataclasses import replace
import traceback
from pathlib import Path
from typing import Optional

from typer._click import exceptions as click_exceptions  # typer vendors click; pinned in pyproject
import typer
from rich.table import Table

from denoise.core.rounds import RunOptions
from denoise.core.selection import holdout_fraction
from denoise.core.training import Recipe

from . import distributed, model_commands, stages
from .bench.perf import perf_command
from .bench.quality import quality_command
from .bench.scale import scale_command
from .data import spec_help
from .data.noise import inject_noise as inject_noise_file
from .data.samples import NORMALIZE_HELP
from .fix import fix_command
from .files.shards import merge as merge_shards
from .demo import NOISY_EPOCHS
from .errors import EXIT_RUNTIME, EXIT_USAGE, DenoiseError, UsageError, usage_errors
from .files.lock import lock_outputs, writes
from .output import emit, stderr_log, stdout, to_json
from .options import (AUGMENT_HELP, Arch, Augment, AugmentAsTrained, BatchSize, By, Data, Device, Dims, Features,
                      Json, Layer, Lr, Model, Noise, Orient, PerClass, Precision, Relabel, Seed, Shrink, Target,
                      Train, TrainBatchSize, WeightDecay, reads_data, run_options)
from .pipeline import run as run_pipeline
from .signals import Interrupted, interruptible

app = typer.Typer(help="Clean a classifier trained on noisy data without retraining it from scratch.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
_state = {"debug": False}

@app.callback()
def main_options(debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors.")) -> None:
    """Options of every command."""
    _state["debug"] = debug


@app.command("inject-noise")
@reads_data
@writes(out=False)
def inject_noise(data: str = Data, kind: str = typer.Option(..., "--kind", help="symmetric, asymmetric, instance or "
                                                                                   "input-gaussian."),
                 rate: float = typer.Option(..., "--rate", help="Fraction of training samples to corrupt, in [0, 1]."),
                 seed: int = Seed,
                 sigma: float = typer.Option(4.5, "--sigma", help="Std of input-gaussian noise on normalized inputs."),
                 out: Path = typer.Option(..., "--out"), as_json: bool = Json) -> None:
    """Corrupt the labels (or inputs) of the train split and write noise.npz."""
    emit(inject_noise_file(data, kind, rate, seed, out, sigma), as_json, "inject-noise")


def _json_option(text: str | None, flag: str) -> dict:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{flag} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise UsageError(f"{flag} must be a JSON object")
    return value


@app.command()
@reads_data
@writes(out=False)
def train(data: str = Data, noise: Optional[Path] = Noise,
          arch: str = typer.Option(..., "--arch", help="mlp, cnn, kws, resnet18-cifar, tv:NAME or module:function."),
          arch_kwargs: Optional[str] = typer.Option(None, "--arch-kwargs", help="JSON object of architecture arguments."),
          normalize: str = typer.Option("data", "--normalize", help=NORMALIZE_HELP),
          epochs: int = typer.Option(..., "--epochs"), seed: int = Seed, lr: float = Lr,
          weight_decay: float = WeightDecay, batch_size: int = TrainBatchSize,
          save_every: int = typer.Option(0, "--save-every", min=0, help="Also keep OUT-epochK.safetensors every K epochs."),
          resume: bool = typer.Option(False, "--resume", help="Continue from OUT.resume.safetensors if present."),
          augment: str = Augment,
          out: Path = typer.Option(..., "--out"), device: str = Device, as_json: bool = Json) -> None:
    """Train a model from scratch (on noisy labels with --noise)."""
    recipe = Recipe(epochs=epochs, lr=lr, weight_decay=weight_decay, batch_size=batch_size, seed=seed, augment=augment)
    result = model_commands.train(data, arch, out, recipe, noise=noise,
                                  arch_kwargs=_json_option(arch_kwargs, "--arch-kwargs"), normalize=normalize,
                                  save_every=save_every, resume=resume, device=device)
    emit(result, as_json, "train")


@app.command()
@reads_data
def evaluate(model: Path = Model, data: str = Data, split: str = typer.Option("test", "--split"),
             noise: Optional[Path] = Noise, batch_size: int = BatchSize, device: str = Device,
             arch: Optional[str] = Arch, as_json: bool = Json) -> None:
    """Accuracy, macro precision/recall/F1 and top-3 accuracy on a split."""
    emit(model_commands.evaluate(model, data, split, noise=noise, batch_size=batch_size, device=device, arch=arch),
         as_json, "evaluate")


@app.command()
@reads_data
@writes(out=False)
def attribute(model: Path = Model, data: str = Data, noise: Optional[Path] = Noise, layer: Optional[str] = Layer,
              target: str = Target,
              split: str = typer.Option("train", "--split"), out: Path = typer.Option(..., "--out"),
              batch_size: int = BatchSize, device: str = Device, arch: Optional[str] = Arch,
              dtype: str = typer.Option("float32", "--dtype", help="Storage of the attributions: float32 or float16."),
              precision: str = Precision,
              shard: Optional[str] = typer.Option(None, "--shard", help="i/n: score only shard i (0-based) of n, "
                                                  "the samples i, i+n, ...; join the shards with `denoise merge`."),
              resume: bool = typer.Option(False, "--resume", help="Keep the scores in .OUT.resume/ as they are "
                                          "made, and continue from there after a kill (same options and inputs)."),
              as_json: bool = Json) -> None:
    """Per-sample gradient x activation at a layer, with loss, margin and confidence: scores.npz."""
    emit(stages.attribute(model, data, out, noise=noise, layer=layer, target=target, split=split,
                          batch_size=batch_size, device=device, arch=arch, dtype=dtype, precision=precision,
                          shard=shard, resume=resume), as_json, "attribute")


@app.command()
@writes(out=False)
def merge(files: list[Path] = typer.Argument(..., help="Shard files from `attribute` or `sensitivity --shard i/n`, "
                                                      "one per shard."),
          out: Path = typer.Option(..., "--out"), as_json: bool = Json) -> None:
    """Join the shards of a scores or sensitivity file into the file one process writes."""
    emit(merge_shards(files, out), as_json, "merge")


@app.command()
@writes(out=False)
def partition(scores: Path = typer.Option(..., "--scores", help="scores.npz from `attribute`."),
              per_class: bool = PerClass, features: str = Features, dims: int = Dims,
              truth: Optional[Path] = typer.Option(None, "--truth", help="noise.npz: also report detection quality."),
              orient: str = Orient, seed: int = Seed, out: Path = typer.Option(..., "--out"),
              as_json: bool = Json) -> None:
    """Split samples into clean and noisy with a 2-component Gaussian mixture: partition.npz."""
    emit(stages.partition(scores, out, per_class=per_class, features=features, truth=truth, dims=dims, seed=seed,
                          orient=orient), as_json, "partition")


@app.command()
@reads_data
@writes(out=False)
def sensitivity(model: Path = Model, data: str = Data, noise: Optional[Path] = Noise,
                partition_file: Path = typer.Option(..., "--partition", help="partition.npz from `partition`."),
                layer: Optional[str] = Layer, out: Path = typer.Option(..., "--out"), batch_size: int = BatchSize,
                device: str = Device, arch: Optional[str] = Arch, precision: str = Precision,
                shard: Optional[str] = typer.Option(None, "--shard", help="i/n: only the moments of shard i "
                                                    "(0-based) of n; sum the shards with `denoise merge`."),
                as_json: bool = Json) -> None:
    """Regress the noisy indicator on a layer's standardized units: sensitivity.npz."""
    emit(stages.sensitivity(model, data, partition_file, out, noise=noise, layer=layer, batch_size=batch_size,
                            device=device, arch=arch, precision=precision, shard=shard), as_json, "sensitivity")


@app.command()
@writes(out=False)
def prune(model: Path = Model,
          sensitivity_file: Path = typer.Option(..., "--sensitivity", help="sensitivity.npz from `sensitivity`."),
          ratio: Optional[float] = typer.Option(None, "--ratio", help="Fraction of the layer's units to remove, in (0, 1)."),
          count: Optional[int] = typer.Option(None, "--count", help="Number of units to remove."),
          by: str = By,
          force: bool = typer.Option(False, "--force", help="Prune even if the sensitivity was computed for another model."),
          out: Path = typer.Option(..., "--out"), arch: Optional[str] = Arch, as_json: bool = Json) -> None:
    """Remove the most noise-sensitive units; the mask is kept in the checkpoint."""
    emit(stages.prune(model, sensitivity_file, out, ratio=ratio, count=count, by=by, force=force, arch=arch),
         as_json, "prune")


@app.command()
@reads_data
@writes(out=False)
def finetune(model: Path = Model, data: str = Data, noise: Optional[Path] = Noise,
             partition_file: Path = typer.Option(..., "--partition", help="partition.npz from `partition`."),
             train: str = Train, epochs: int = typer.Option(Recipe.epochs, "--epochs"), lr: float = Lr,
             weight_decay: float = WeightDecay, batch_size: int = TrainBatchSize, shrink: float = Shrink,
             seed: int = Seed,
             resume: bool = typer.Option(False, "--resume", help="Continue from OUT.resume.safetensors if present."),
             exclude: Optional[Path] = typer.Option(None, "--exclude", help="holdout.npz (from `denoise run`): "
                                                    "samples never fine-tuned on, kept for the no-harm check."),
             relabel: bool = Relabel, augment: str = AugmentAsTrained,
             out: Path = typer.Option(..., "--out"), device: str = Device, arch: Optional[str] = Arch,
             as_json: bool = Json) -> None:
    """Fine-tune on the clean samples (and, with --relabel, the confidently relabeled flagged ones); pruned
    units stay removed."""
    recipe = Recipe(epochs=epochs, lr=lr, weight_decay=weight_decay, batch_size=batch_size, train=train,
                    shrink=shrink, seed=seed, augment=augment)
    emit(stages.finetune(model, data, partition_file, out, recipe, noise=noise, exclude=exclude, relabel=relabel,
                         resume=resume, device=device, arch=arch), as_json, "finetune")


@app.command()
@reads_data
@writes(out=False)
def issues(scores: Path = typer.Option(..., "--scores", help="scores.npz from `attribute`."),
           partition_file: Path = typer.Option(..., "--partition", help="partition.npz made from those scores."),
           data: Optional[str] = typer.Option(None, "--data", help="The data set: class names (and the samples "
                                              "--model predicts). " + spec_help()),
           model: Optional[Path] = typer.Option(None, "--model", help="Suggest the labels this model predicts (the "
                                                "cleaned model of a run); default: the scores' predicted class."),
           every: bool = typer.Option(False, "--all", help="List every sample, not only the flagged ones."),
           out: Optional[Path] = typer.Option(None, "--out", help="Write the CSV here (default: print it)."),
           summary: Optional[Path] = typer.Option(None, "--summary", help="Write the per-class summary CSV here "
                                                  "(default with --out: OUT's name with .summary.csv)."),
           device: str = Device, arch: Optional[str] = Arch, as_json: bool = Json) -> None:
    """Suspected label errors as CSV, likeliest first; `denoise fix` applies them. Columns: row, path, index,
    given_label, suggested_label, suggested_prob, label_score (low: likely wrong; the order), is_label_issue,
    clean_prob, loss."""
    from .report.suspects import issues as list_issues

    result = list_issues(scores, partition_file, out=out, data=data, model=model, every=every, summary=summary,
                         arch=arch, device=device)
    text = result.pop("csv")
    if as_json:
        print(to_json(result))
    elif out is None:
        sys.stdout.write(text)
    else:
        emit({key: value for key, value in result.items() if key not in ("rows", "classes")}, False, "issues")


app.command("fix")(fix_command)  # denoise/cli/fix.py: applies an issues CSV to a corrected copy of the data's labels


# --workdir is only read, and not locked: a report can be made of a run that is still going
@app.command("report")
@reads_data
@writes(out=False)
def report_(workdir: Optional[Path] = typer.Option(None, "--workdir", help="Work directory of `denoise run` or "
                                                     "`denoise demo` (or give the files below one by one)."),
            scores: Optional[Path] = typer.Option(None, "--scores", help="scores.npz (without --workdir)."),
            partition_file: Optional[Path] = typer.Option(None, "--partition", help="partition.npz of those scores."),
            sensitivity_file: Optional[Path] = typer.Option(None, "--sensitivity", help="sensitivity.npz of that "
                                                            "partition."),
            model: Optional[Path] = typer.Option(None, "--model", help="The cleaned (pruned) model: suggests labels "
                                                 "and marks the pruned units."),
            data: Optional[str] = typer.Option(None, "--data", help="Default with --workdir: the run's. " + spec_help()),
            truth: Optional[Path] = typer.Option(None, "--truth", help="noise.npz: detection curves (default with "
                                                 "--workdir: the run's --truth)."),
            out: Path = typer.Option(..., "--out", help="The HTML file to write."),
            figures_dir: Optional[Path] = typer.Option(None, "--figures-dir", help="Also write every figure here as "
                                                       "NAME.png."),
            device: str = Device, arch: Optional[str] = Arch, as_json: bool = Json) -> None:
    """One self-contained HTML page of what a cleaning run did: summary, class swaps, mixture, galleries,
    sensitivity, rounds, detection."""
    from .report.build import report as write_report
    from .report.run_files import from_files, from_workdir

    if workdir is not None:
        if scores or partition_file or sensitivity_file or model:
            raise UsageError("give --workdir, or the files (--scores, --partition, ...), not both")
        files = from_workdir(workdir, data=data, truth=truth)
    elif scores is None or partition_file is None:
        raise UsageError("give --workdir, or at least --scores and --partition")
    else:
        files = from_files(scores, partition_file, sensitivity=sensitivity_file, model=model, data=data, truth=truth)
    emit(write_report(files, out, figures_dir=figures_dir, arch=arch, device=device), as_json, "report")


@app.command()
@reads_data
@run_options()
@writes(workdir=True)
def run(model: Path = Model, data: str = Data, noise: Optional[Path] = Noise,
        workdir: Path = typer.Option(..., "--workdir", help="Directory for every stage's output (round1/, round2/, ...)."),
        options: RunOptions = RunOptions(),
        holdout: Optional[float] = typer.Option(None, "--holdout", help="Fraction of the samples round 1 calls "
                                                "clean that no round fine-tunes on; they decide whether a round's "
                                                "model or the input model is handed back (first, do no harm). 0 "
                                                f"turns the check off. Default: {RunOptions.holdout:g}, 0 with "
                                                "--validation (a fraction above 0 with it is an error)."),
        validation: Optional[str] = typer.Option(None, "--validation", help="Data spec (as --data; its train split) "
                                                 "of samples the model was not trained on, labels possibly noisy: "
                                                 "they decide the no-harm check instead of held-out samples, and "
                                                 "every training sample can be fine-tuned on."),
        truth: Optional[Path] = typer.Option(None, "--truth", help="noise.npz: report detection quality each round."),
        report: bool = typer.Option(False, "--report", help="Also write WORKDIR/report.html (`denoise report`)."),
        device: str = Device, arch: Optional[str] = Arch, as_json: bool = Json) -> None:
    """The five stages in order, in rounds; stages whose outputs are up to date are skipped."""
    with usage_errors():
        options = replace(options, holdout=holdout_fraction(holdout, validation is not None))
    result = run_pipeline(model, data, workdir, options, noise=noise, truth=truth, validation=validation,
                          device=device, arch=arch, log=stderr_log(quiet=as_json), warn=stderr_log())
    if report and distributed.main_process():  # under torchrun rank 0 alone writes the report
        from .report.build import report_of_run

        result["report"] = report_of_run(workdir, workdir / "report.html", data=data, arch=arch, device=device)
    emit(result if as_json else {key: result[key] for key in ("model", "chosen", "seconds", "report") if key in result},
         as_json, "run")


@app.command()
@reads_data
@writes(workdir=True)
def demo(workdir: Optional[Path] = typer.Option(None, "--workdir", help="Keep every file here (default: a temporary "
                                                                          "directory, removed afterwards)."),
         data: str = typer.Option("digits", "--data", help=spec_help()),
         arch: Optional[str] = typer.Option(None, "--arch", help="Default: the data kind's (mlp for digits, kws for "
                                                                 "fsdd, cnn for imagefolder)."),
         rate: float = typer.Option(0.4, "--rate"), kind: str = typer.Option("symmetric", "--kind"),
         epochs: int = typer.Option(NOISY_EPOCHS, "--epochs", help="Training epochs of the noisy and retrained models."),
         seed: int = Seed,
         noise: Optional[Path] = typer.Option(None, "--noise", help="Use this noise file (from `inject-noise`) "
                                                                    "instead of --kind/--rate."),
         augment: str = typer.Option("none", "--augment", help=AUGMENT_HELP + " Trains the noisy and retrained "
                                     "models, and fine-tunes, with it."),
         device: str = Device, as_json: bool = Json) -> None:
    """Inject noise into a real data set, train on it, clean the model, and compare with retraining."""
    import tempfile

    from .demo import demo as run_demo

    log = stderr_log(quiet=as_json)
    with tempfile.TemporaryDirectory(prefix="denoise-demo-") as scratch:
        result = run_demo(workdir or Path(scratch), data=data, arch=arch, kind=kind, rate=rate, epochs=epochs,
                          seed=seed, noise=noise, augment=augment, device=device, log=log,
                          report=(workdir or Path.cwd()) / "report.html")
    if as_json:
        print(to_json(result))
        return
    table = Table(title=f"{result['dataset']}: {result['noise']['rate']:.0%} {result['noise']['kind']} noise")
    for column in ("method", "test accuracy", "seconds"):
        table.add_column(column)
    for row in result["rows"]:
        table.add_row(row["name"], f"{row['test_accuracy']:.3f}", f"{row['seconds']:.1f}")
    stdout.print(table)
    stdout.print("detection: " + ", ".join(f"{k} {v:.3f}" if v is not None else f"{k} n/a"
                                           for k, v in result["detection"].items()))
    stdout.print(f"the noisy model fits {result['noisy_fit']:.1%} of the noisy training labels")
    stdout.print(f"report: {result['report']}")


@app.command()
def inspect(file: Path = typer.Argument(..., help="A .safetensors checkpoint or a .npz stage file."),
            as_json: bool = Json) -> None:
    """What a checkpoint or .npz holds: architecture, layers, masks; keys, shapes, summary stats."""
    from .inspect_file import describe

    emit(describe(file), as_json, str(file))


@app.command("import")
@reads_data
@writes(out=False)
def import_(arch: str = typer.Option(..., "--arch"),
            weights: Path = typer.Option(..., "--weights", help="State dict: .safetensors, or .pt/.pth "
                                                                "(read with torch.load(weights_only=True))."),
            data: Optional[str] = typer.Option(None, "--data", help="Data the model is for (classes, input shape; "
                                                                    "?size=N for images read at N x N)."),
            normalize: Optional[str] = typer.Option(None, "--normalize", help=NORMALIZE_HELP + " Default: data "
                                                    "with --data, else none."),
            check_accuracy: Optional[float] = typer.Option(None, "--check-accuracy", help="The test accuracy "
                                                           "(a fraction) your own evaluation gave: warns when "
                                                           "`denoise evaluate` differs by more than a point."),
            noise: Optional[Path] = typer.Option(None, "--noise", help="Noise file the weights were trained with "
                                                                       "(checked against --data, recorded)."),
            input_shape: Optional[str] = typer.Option(None, "--input-shape", help="e.g. 3,32,32 (without --data)."),
            num_classes: Optional[int] = typer.Option(None, "--num-classes", help="Without --data."),
            arch_kwargs: Optional[str] = typer.Option(None, "--arch-kwargs"),
            augment: str = typer.Option("none", "--augment", help=AUGMENT_HELP.replace("Training augmentation",
                                        "The augmentation the weights were trained with") + " finetune reuses it."),
            out: Path = typer.Option(..., "--out"), as_json: bool = Json) -> None:
    """Bring plain weights in as a denoise checkpoint."""
    shape = None
    if input_shape:
        try:
            shape = [int(v) for v in input_shape.split(",")]
        except ValueError:
            raise UsageError(f"--input-shape must be comma-separated integers, not {input_shape!r}") from None
    emit(model_commands.import_weights(arch, weights, out, data=data, noise=noise, input_shape=shape, num_classes=num_classes,
                               arch_kwargs=_json_option(arch_kwargs, "--arch-kwargs"), normalize=normalize,
                               check_accuracy=check_accuracy, augment=augment, warn=stderr_log()), as_json, "import")


bench_app = typer.Typer(help="Benchmarks that print numbers: `bench quality` (against baselines), `bench perf` "
                             "(speed and memory).", no_args_is_help=True)
app.add_typer(bench_app, name="bench")
# Benchmark commands live in their own modules and are registered here:
bench_app.command("perf")(perf_command)
bench_app.command("quality")(quality_command)
bench_app.command("scale")(scale_command)


def main() -> None:
    """Console entry point: one-line errors and documented exit codes (see denoise.cli.errors), signals (denoise.cli.signals)
    and the locks of every --workdir and --out (denoise.cli.files.lock)."""
    distributed.quiet_other_ranks()
    command = typer.main.get_command(app)
    lock_outputs(command)
    try:
        with interruptible():
            command(standalone_mode=False)
    except Interrupted as exc:
        print(exc, file=sys.stderr)
        sys.exit(exc.exit_code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.exit(EXIT_RUNTIME)
    except click_exceptions.ClickException as exc:
        print(f"denoise: {exc.format_message()}", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    except DenoiseError as exc:
        _fail(exc, exc.exit_code)
    except Exception as exc:  # the last line of defence: one line, not a traceback
        _fail(exc, EXIT_RUNTIME, prefix=f"{type(exc).__name__}: ")
    finally:
        distributed.leave()


def _fail(exc: Exception, code: int, prefix: str = "") -> None:
    if _state["debug"]:
        traceback.print_exc()
    message = " ".join(str(exc).split()) or type(exc).__name__
    print(f"denoise: error: {prefix}{message}", file=sys.stderr)
    sys.exit(code)


if __name__ == "__main__":
    from .signals import exit_now

    exit_now(main)
