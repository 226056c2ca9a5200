"""The five stages as file-to-file operations: load and check inputs, one ``denoise.core`` call, write outputs.

Each function returns a JSON-able summary; the typer commands in ``denoise.cli.main`` print it, and ``FileSteps``
lets ``denoise.core.rounds`` walk them as ``denoise run``. Every output records its provenance
(``denoise.cli.files.provenance``); with ``reuse`` a stage returns at once when its output is already current
(``Output.made``: the skeleton every stage shares).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

from denoise.core.attribution import attribute_batches, check_target
from denoise.core.augment import augmenter
from denoise.core.batches import BATCH_SIZE, check_precision, take
from denoise.core.layers import LayerError, apply_unit_masks, default_layer, resolve_layer
from denoise.core.metrics import detection_metrics
from denoise.core.partition import check_orientation
from denoise.core.regime import AUTO, check_features
from denoise.core.pruning import check_amount, prune_mask
from denoise.core.relabel import fine_tuning_set
from denoise.core.rounds import Choice, Partition, Round
from denoise.core.selection import held_out_correct as correct_of_held_out
from denoise.core.selection import holdout_mask
from denoise.core.sensitivity import layer_moments
from denoise.core.shards import shard_rows
from denoise.core.training import Recipe

from .data.samples import Samples, load_samples
from .device import resolve_device
from .distributed import join, parse_shard
from .errors import InputError, UsageError, usage_errors
from .files.checkpoint import ModelInfo, build_model, load_checkpoint, load_weights, read_metadata, save_checkpoint
from .files.provenance import Output, check_made_from
from .files.shards import merge_ranks, rank_path, remove_rank_files, shard_meta
from .files.stage_files import check_same_samples, load_npz, save_npz
from .files.streaming import NpzStream
from .fit import finish, fit
from .output import progress
from .stage_timing import earlier_stages, stage_record

SCORE_DTYPES = {"float32": np.float32, "float16": np.float16}
AS_TRAINED = "as-trained"  # --augment of finetune and run: the augmentation the checkpoint records it was trained with


def _layer(model, spec: str | None, source: str, samples: Samples | None = None) -> str:
    """``spec`` or, when None, the input of the classifier a forward pass of ``samples`` applies; checked to
    name a layer of the model (a LayerError becomes an InputError naming ``source``)."""
    try:
        layer = spec or default_layer(model, samples.inputs)
        resolve_layer(model, layer)
    except LayerError as exc:
        raise InputError(source, str(exc)) from None
    return layer


def attribute(model: Path, data: str, out: Path, *, noise: Path | None = None, layer: str | None = None,
              target: str = "label", split: str = "train", batch_size: int = BATCH_SIZE, device: str = "auto",
              arch: str | None = None, dtype: str = "float32", precision: str = "fp32", shard: str | None = None,
              reuse: bool = False, resume: bool = False) -> dict:
    """Per-sample gradient x activation at a layer, plus loss, margin, confidence and predicted class.

    dtype: float32 or float16 storage of the attributions. precision: fp32, or bf16/fp16 autocast.
    shard: ``"i/n"``: score only shard i of n (``denoise.core.shards``) into a shard file for ``denoise merge``.
    Under torchrun each rank scores its own shard and rank 0 merges them into ``out``.
    reuse: return without work if ``out`` was already made with the same options and inputs.
    resume: keep what is scored in ``.OUT.resume/`` as it goes, and continue from what a killed run of the same
    options, inputs and shard kept there.
    """
    if dtype not in SCORE_DTYPES:
        raise UsageError(f"--dtype must be float32 or float16, not {dtype!r}")
    with usage_errors():
        check_target(target)
        check_precision(precision)
    requested = parse_shard(shard) if shard else None
    options = {"data": data, "split": split, "layer": layer, "target": target, "dtype": dtype, "precision": precision}
    inputs = {"model": model, "noise": noise}

    def make(output: Output) -> dict:
        dev = resolve_device(device)
        ranks = join(dev)
        checkpoint = load_checkpoint(model, dev, allow_arch=arch)
        samples = load_samples(data, split, checkpoint.info, noise)
        resolved = _layer(checkpoint.model, layer, str(model), samples)
        meta, total = output.meta({"layer": resolved}), len(samples.labels)
        number, count = ranks.part(requested, total)
        written = rank_path(out, ranks.rank, ranks.world) if ranks.world > 1 else out
        if ranks.world > 1:  # before any rank writes: no shard file of an earlier launch can be merged into this one
            ranks.main_writes(lambda: remove_rank_files(out))
        if count > 1:
            rows = shard_rows(total, number, count)
            samples = replace(samples, inputs=take(samples.inputs, rows), labels=samples.labels[torch.as_tensor(rows)],
                              index=samples.index[rows], is_noisy=None)
        started = time.perf_counter()
        key = json.dumps([meta["options"], meta["inputs"], number, count, ranks.rank, ranks.world], sort_keys=True)
        with NpzStream(written, len(samples.labels), resume_key=key if resume else None) as stream:
            units = stream_scores(checkpoint.model, samples, resolved, target, batch_size, dev, stream, dtype=dtype,
                                  precision=precision)
            stream.finish({"label": samples.labels.numpy(), "index": samples.index},
                          shard_meta(meta, number, count, total) if count > 1 else {**meta, "world_size": 1})
        if ranks.world > 1:
            ranks.log(f"attribute scored {len(samples.labels)} of {total} samples")
            ranks.barrier()
            ranks.main_writes(lambda: merge_ranks(out, ranks.world))
        seconds = time.perf_counter() - started
        return {"out": str(out), "layer": resolved, "samples": total if shard is None else len(samples.labels),
                "units": units, "world_size": ranks.world, "seconds": seconds}

    return Output(out, "scores", options, inputs).made(reuse, make)


def stream_scores(model, samples: Samples, layer: str, target: str, batch_size: int, device, stream: NpzStream, *,
                  dtype: str = "float32", precision: str = "fp32") -> int:
    """Score every sample (``denoise.core.attribution.attribute_batches``), writing each batch to ``stream``
    from the ``stream.done`` rows it already holds on (marking each batch done).

    Streams ``attribution`` (N, U) in ``dtype`` (float16 saturates at its largest finite value),
    ``loss``, ``confidence``, ``margin`` (N,) float32 and ``predicted`` (N,) int64; returns U.
    """
    first, total = stream.done, len(samples.labels)
    units = stream.shape("attribution")[1] if first else 0
    with progress("attribute", total) as advance:
        advance(first)
        rest = take(samples.inputs, np.arange(first, total)) if first else samples.inputs
        batches = attribute_batches(model, rest, samples.labels[first:], layer, target=target,
                                    batch_size=batch_size, device=device, precision=precision)
        try:
            for s, scores in batches:
                start = first + s.start
                attribution = scores.pop("attribution").numpy()
                if dtype == "float16":
                    attribution = np.minimum(attribution, np.finfo(np.float16).max)
                stream.write("attribution", start, attribution.astype(SCORE_DTYPES[dtype]))
                for name, value in scores.items():
                    stream.write(name, start, value.numpy())
                stream.mark(first + s.stop)
                units = attribution.shape[1]
                advance(s.stop - s.start)
        except LayerError as exc:
            raise InputError(layer, str(exc)) from None
    return units


def partition(scores: Path, out: Path, *, per_class: bool = True, features: str = AUTO,
              truth: Path | None = None, dims: int = 10, seed: int = 0, orient: str = "auto",
              choose_block: bool = True, reuse: bool = False) -> dict:
    """Split a scores file's samples into clean and noisy by the detector its regime calls for (``features``
    ``auto``; ``denoise.core.regime``) or by the attribution mixture over the ``features`` listed; with
    ``truth`` (a noise file) also score the detection. ``orient``: how the attribution mixture's noisy
    component is chosen, one of ``denoise.core.partition.ORIENTATIONS``; ``choose_block``: whether ``auto``
    also chooses the attribution block from the data (``denoise run``'s round 1). The file also holds the class the
    scores suggest for each sample and its probability (``denoise.core.relabel.suggestion``), which
    ``finetune --relabel`` uses."""
    with usage_errors():
        kinds = check_features(features)
        check_orientation(orient)
    options = {"per_class": per_class, "features": AUTO if kinds is None else ",".join(kinds), "dims": dims,
               "seed": seed, "orient": orient, "choose_block": choose_block}
    inputs = {"scores": scores, "truth": truth}

    def make(output: Output) -> dict:
        arrays, _ = load_npz(scores, "scores", on_disk=("attribution",))  # read one class's rows at a time
        split, record = Partition.split(arrays, arrays["label"], features=options["features"], per_class=per_class,
                                        dims=dims, seed=seed, orient=orient, choose_block=choose_block)
        record = record.to_json()
        result = {"out": str(out), "samples": len(split.clean_prob), "flagged_noisy": int((~split.is_clean).sum()),
                  **record}
        if truth is not None:
            noise_arrays, _ = load_npz(truth, "noise")
            check_same_samples(truth, noise_arrays["index"], scores, arrays["index"])
            result["detection"] = detection_metrics(noise_arrays["is_noisy"], split.is_clean, split.clean_prob)
        save_npz(out, {"clean_prob": split.clean_prob, "is_clean": split.is_clean, "label": arrays["label"],
                       "index": arrays["index"], "suggested": split.suggested, "suggested_prob": split.suggested_prob},
                 output.meta({"detection": result.get("detection"), **record}))
        return result

    return Output(out, "partition", options, inputs).made(reuse, make)


def hold_out(partition_file: Path, out: Path, *, fraction: float, seed: int = 0, reuse: bool = False) -> dict:
    """Set aside ``fraction`` of the samples the partition calls clean (``holdout_mask``): holdout.npz."""
    options = {"fraction": fraction, "seed": seed}
    inputs = {"partition": partition_file}

    def make(output: Output) -> dict:
        arrays, _ = load_npz(partition_file, "partition")
        with usage_errors():
            held = holdout_mask(arrays["is_clean"], fraction, seed)
        save_npz(out, {"is_held": held, "index": arrays["index"]}, output.meta())
        return {"out": str(out), "held_out": int(held.sum())}

    return Output(out, "holdout", options, inputs).made(reuse, make)


def _held(path: Path | None, samples: Samples) -> np.ndarray:
    """(N,) bool of a holdout file checked against ``samples`` (all False without one)."""
    if path is None:
        return np.zeros(len(samples.labels), dtype=bool)
    arrays, _ = load_npz(path, "holdout")
    check_same_samples(path, arrays["index"], "the data", samples.index)
    return arrays["is_held"]


def held_out_correct(model: Path, data: str, holdout_file: Path | None, *, noise: Path | None = None,
                     batch_size: int = BATCH_SIZE, device: str = "auto", arch: str | None = None) -> np.ndarray:
    """(M,) bool: whether the checkpoint classifies each held-out sample as labelled: those of a holdout file of
    ``data``'s train split or, without one, every sample of it (validation samples)."""
    dev = resolve_device(device)
    checkpoint = load_checkpoint(model, dev, allow_arch=arch)
    samples = load_samples(data, "train", checkpoint.info, noise)
    held = _held(holdout_file, samples) if holdout_file is not None else np.ones(len(samples.labels), dtype=bool)
    return correct_of_held_out(checkpoint.model, samples.inputs, samples.labels, held, batch_size, dev)


def _with_partition(model: Path, data: str, partition_file: Path, noise: Path | None, device: str, arch: str | None):
    """``(device, checkpoint, samples, partition arrays)``: the checkpoint on its device, the train split
    prepared for it, and the partition file checked to be of those very samples and labels."""
    dev = resolve_device(device)
    checkpoint = load_checkpoint(model, dev, allow_arch=arch)
    samples = load_samples(data, "train", checkpoint.info, noise)
    arrays, _ = load_npz(partition_file, "partition")
    check_same_samples(partition_file, arrays["index"], data, samples.index)
    if not np.array_equal(arrays["label"], samples.labels.numpy()):
        raise InputError(partition_file, f"was made with other labels than {data} (pass the same --noise file)")
    return dev, checkpoint, samples, arrays


def sensitivity(model: Path, data: str, partition_file: Path, out: Path, *, noise: Path | None = None,
                layer: str | None = None, batch_size: int = BATCH_SIZE, device: str = "auto", arch: str | None = None,
                precision: str = "fp32", shard: str | None = None, reuse: bool = False) -> dict:
    """Regress the partition's noisy indicator on a layer's standardized units; writes coefficients and ranks.

    shard: ``"i/n"``: only the moments of shard i of n, into a shard file that ``denoise merge`` sums. Under
    torchrun each rank gathers the moments of its own shard and the ranks sum them (``UnitMoments.summed``).
    """
    with usage_errors():
        check_precision(precision)
    requested = parse_shard(shard) if shard else None
    options = {"data": data, "layer": layer, "precision": precision}
    inputs = {"model": model, "partition": partition_file, "noise": noise}

    def make(output: Output) -> dict:
        dev, checkpoint, samples, flags = _with_partition(model, data, partition_file, noise, device, arch)
        resolved = _layer(checkpoint.model, layer, str(model), samples)
        ranks, total = join(dev), len(samples.labels)
        number, count = ranks.part(requested, total)
        rows = shard_rows(total, number, count)
        shard_inputs = take(samples.inputs, rows) if count > 1 else samples.inputs
        with progress("activations", len(rows)) as advance:
            moments = layer_moments(checkpoint.model, shard_inputs, (~flags["is_clean"])[rows], resolved,
                                    batch_size=batch_size, device=dev, precision=precision, on_batch=advance)
        meta = output.meta({"layer": resolved})
        if requested and count > 1:  # an array job's part: its moments, which `denoise merge` sums
            save_npz(out, moments.arrays(), shard_meta(meta, number, count, total))
            return {"out": str(out), "layer": resolved, "samples": len(rows), "shard": shard}
        if ranks.world > 1:
            ranks.log(f"sensitivity took the moments of {len(rows)} of {total} samples")
            moments = moments.summed(ranks.sum)
        result = moments.solve()
        ranks.main_writes(lambda: save_npz(out, result, {**meta, "world_size": ranks.world}))
        return {"out": str(out), "layer": resolved, "units": len(result["coefficient"]), "r2": float(result["r2"]),
                "toward_noisy": int((result["coefficient"] > 0).sum())}

    return Output(out, "sensitivity", options, inputs).made(reuse, make)


def prune(model: Path, sensitivity_file: Path, out: Path, *, ratio: float | None = None, count: int | None = None,
          by: str = "noisy", force: bool = False, arch: str | None = None, reuse: bool = False) -> dict:
    """Remove the most noise-sensitive units of the sensitivity file's layer; the mask goes into the checkpoint."""
    with usage_errors():
        check_amount(ratio, count, by)
    options = {"ratio": ratio, "count": count, "by": by}
    inputs = {"model": model, "sensitivity": sensitivity_file}

    def make(output: Output) -> dict:
        checkpoint = load_checkpoint(model, "cpu", allow_arch=arch)
        arrays, meta = load_npz(sensitivity_file, "sensitivity")
        layer = meta.get("results", {}).get("layer")
        if not isinstance(layer, str):
            raise InputError(sensitivity_file, "does not record its layer")
        _layer(checkpoint.model, layer, str(sensitivity_file))
        units = len(arrays["coefficient"])
        if not force:
            check_made_from(sensitivity_file, meta, "model", model, hint="use --force to prune anyway")
        previous = checkpoint.info.masks.get(layer)
        if previous is not None and previous.numel() != units:
            raise InputError(sensitivity_file, f"has {units} units but the model's mask at {layer} has "
                                               f"{previous.numel()}")
        with usage_errors():
            keep = prune_mask(arrays["coefficient"], ratio=ratio, count=count, by=by,
                              keep=None if previous is None else previous.numpy())
        info = checkpoint.info
        info.masks[layer] = torch.as_tensor(keep)
        fresh = build_model(info, str(model))
        load_weights(model, fresh, checkpoint.model.state_dict())
        try:
            apply_unit_masks(fresh, info.masks)
        except LayerError as exc:
            raise InputError(sensitivity_file, f"does not fit the model: {exc}") from None
        save_checkpoint(out, fresh, info, output.meta())
        removed = int((~keep).sum()) - (0 if previous is None else int((~previous).sum()))
        return {"out": str(out), "layer": layer, "units": units, "removed": removed,
                "removed_total": int((~keep).sum())}

    return Output(out, "checkpoint", options, inputs).made(reuse, make)


def finetune(model: Path, data: str, partition_file: Path, out: Path, recipe: Recipe = Recipe(), *,
             noise: Path | None = None, exclude: Path | None = None, relabel: bool = False, resume: bool = False,
             device: str = "auto", arch: str | None = None, reuse: bool = False) -> dict:
    """Fine-tune a (pruned) checkpoint with ``recipe`` (``augment`` AS_TRAINED: as the checkpoint records it
    was trained) on the partition's clean samples, those of the holdout file ``exclude`` excepted; with ``relabel`` also on the flagged samples whose suggested class is
    confidently another, with that label (``denoise.core.relabel.fine_tuning_set``); masks stay in force."""
    if recipe.augment == AS_TRAINED:
        recipe = replace(recipe, augment=ModelInfo.from_json(read_metadata(model)).augment)
    with usage_errors():
        recipe.check()
    options = {"data": data, **asdict(recipe), "relabel": relabel}
    inputs = {"model": model, "partition": partition_file, "noise": noise, "exclude": exclude}

    def make(output: Output) -> dict:
        dev, checkpoint, samples, flags = _with_partition(model, data, partition_file, noise, device, arch)
        with usage_errors():
            augmenter(recipe.augment, tuple(checkpoint.info.input_shape))
        suggestions = (flags["suggested"], flags["suggested_prob"]) if relabel else ()
        rows, targets, relabeled = fine_tuning_set(flags["label"], flags["is_clean"], _held(exclude, samples),
                                                   *suggestions)
        if not rows.any():
            raise InputError(partition_file, "marks no sample as clean (but held-out ones); nothing to fine-tune on")
        rows = torch.as_tensor(rows)
        started = time.perf_counter()
        made_from = output.meta()
        # a resume state also names the files it fine-tunes from: one of another partition or held-out set is refused
        hashes = {name: entry["sha256"] for name, entry in made_from["inputs"].items()}
        losses = fit(checkpoint.model, take(samples.inputs, rows), torch.as_tensor(targets)[rows], recipe, device=dev,
                     options={**options, "inputs": hashes}, out=out, resume=resume, description="finetune")
        seconds = time.perf_counter() - started
        # the mean loss of every epoch from the first (over every rank's samples): the report's curve
        meta = {**made_from, "results": {"losses": losses}}
        finish(out, dev, lambda: save_checkpoint(out, checkpoint.model, checkpoint.info, meta))
        return {"out": str(out), "clean_samples": int(rows.sum()) - int(relabeled.sum()),
                "relabeled": int(relabeled.sum()), "epochs": recipe.epochs, "train": recipe.train, "shrink": recipe.shrink, "seconds": seconds}

    return Output(out, "checkpoint", options, inputs).made(reuse, make)


class FileSteps:
    """The stages as ``denoise.core.rounds.Steps`` over files: round r's outputs go to ``workdir/round{r}/``.

    Models are checkpoint paths, scores and partitions .npz paths; every call reuses a current output, so a
    killed run resumes where it stopped. ``summaries`` holds each round's stage summaries, by stage name.
    """

    def __init__(self, workdir: Path, data: str, *, noise: Path | None, truth: Path | None, device: str,
                 arch: str | None, log=lambda _line: None):
        self.workdir, self.data = workdir, data
        self.noise, self.truth, self.device, self.arch, self.log = noise, truth, device, arch, log
        self.summaries: dict[int, dict] = {}
        self.plan: dict[int, Round] = {}  # what each round did (its last stage's Round: round 1's after the choice)
        self._earlier = earlier_stages(workdir / "run.json")  # what a skipped stage keeps (denoise.cli.stage_timing)
        self._clock = time.perf_counter()  # when the last stage ended: stages run one after another

    def _folder(self, round: Round) -> Path:
        folder = self.workdir / f"round{round.number}"
        folder.mkdir(exist_ok=True)
        return folder

    def _record(self, round: Round, stage: str, summary: dict) -> None:
        now = time.perf_counter()
        # the stage's wall time, its loading included; a skipped one keeps the time of the run that made its output
        summary = stage_record(summary, now - self._clock, self._earlier.get((round.number, stage)))
        self._clock = now
        self.summaries.setdefault(round.number, {"round": round.number})[stage] = summary
        self.plan[round.number] = round
        self.log(f"round {round.number}: {stage} {'up to date' if summary.get('skipped') else 'done'}")

    def attribute(self, model: Path, round: Round) -> Path:
        """round{r}/scores.npz of ``model`` (the ``attribute`` stage)."""
        out = self._folder(round) / "scores.npz"
        self._record(round, "attribute", attribute(model, self.data, out, noise=self.noise, layer=round.layer,
                                                   target=round.target, device=self.device, arch=self.arch,
                                                   reuse=True, resume=True))
        return out

    def partition(self, scores: Path, round: Round) -> Path:
        """round{r}/partition.npz of the scores (the ``partition`` stage)."""
        out = self._folder(round) / "partition.npz"
        self._record(round, "partition", partition(scores, out, truth=self.truth, reuse=True,
                                                   **round.partition_arguments()))
        return out

    def sensitivity(self, model: Path, partition_file: Path, round: Round) -> Path:
        """round{r}/sensitivity.npz of ``model`` (the ``sensitivity`` stage)."""
        out = self._folder(round) / "sensitivity.npz"
        self._record(round, "sensitivity", sensitivity(model, self.data, partition_file, out, noise=self.noise,
                                                       layer=round.layer, device=self.device, arch=self.arch,
                                                       reuse=True))
        return out

    def prune(self, model: Path, sensitivity_file: Path, round: Round) -> Path:
        """round{r}/pruned.safetensors (the ``prune`` stage)."""
        out = self._folder(round) / "pruned.safetensors"
        self._record(round, "prune", prune(model, sensitivity_file, out, ratio=round.prune_ratio, by=round.prune_by,
                                           arch=self.arch, reuse=True))
        return out

    def choice(self, partition_file: Path) -> Choice:
        """The regime, features and detector the partition file records (round 1's, which set the rounds: said
        on the log)."""
        arrays, meta = load_npz(partition_file, "partition")
        results = meta["results"]
        choice = Choice.of(results)
        corrupted = " (corrupted inputs)" if choice.corrupted_inputs else ""
        share = results.get("cleared_by_prediction")
        cleared = f", after clearing {share:.1%} it predicts as labeled" if share else ""
        self.log(f"round 1: the model fits {results['fit']:.1%} of its labels ({results['regime']}); the "
                 f"{results['detector']} flags {np.mean(~arrays['is_clean']):.1%} of the samples{corrupted}{cleared}")
        return choice

    def hold_out(self, partition_file: Path, round: Round) -> Path:
        """round{r}/holdout.npz of the partition (the held-out samples)."""
        out = self._folder(round) / "holdout.npz"
        self._record(round, "holdout", hold_out(partition_file, out, fraction=round.holdout, seed=round.seed,
                                                reuse=True))
        return out

    def finetune(self, model: Path, partition_file: Path, held: Path | None, round: Round) -> Path:
        """round{r}/clean.safetensors, fine-tuned with ``round.finetune`` (the ``finetune`` stage)."""
        out = self._folder(round) / "clean.safetensors"
        self._record(round, "finetune", finetune(model, self.data, partition_file, out, round.finetune,
                                                 noise=self.noise, exclude=held, relabel=round.relabel, resume=True,
                                                 device=self.device, arch=self.arch, reuse=True))
        return out

    def held_out_correct(self, model: Path, held: Path) -> np.ndarray:
        """``held_out_correct`` of the checkpoint."""
        return held_out_correct(model, self.data, held, noise=self.noise, device=self.device, arch=self.arch)
