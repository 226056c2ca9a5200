"""The stages as file-to-file operations: load and check inputs, call ``unlearn_core``, write outputs.

Each function returns a JSON-able summary; the typer commands in ``cli.main`` print it, ``denoise run``
and ``denoise demo`` chain them. Every output records its provenance (see ``cli.files.provenance``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from unlearn_core import attribution as attr
from unlearn_core import noise as noise_lib
from unlearn_core.inputs import normalization_stats
from unlearn_core.layers import LayerError, apply_unit_masks, default_layer, resolve_layer
from unlearn_core.models import ModelError
from unlearn_core.partition import (DEFAULT_FEATURES, FEATURE_KINDS, ORIENTATIONS, clean_probability,
                                    detection_metrics)
from unlearn_core.pruning import prune_mask
from unlearn_core.sensitivity import UnitMoments
from unlearn_core.training import classification_metrics, predict_logits

from .checkpoint import (ModelInfo, is_user_arch, load_checkpoint, load_weights, read_metadata, read_tensors,
                         save_checkpoint)
from .data import load_data
from .errors import InputError, UsageError
from .files import NpzStream, check_same_samples, file_sha256, load_npz, provenance, save_npz
from .loader import autocast, device_batches
from .runtime import StageData, load_stage_data, prepare, progress, read_noise, resolve_device
from .training_loop import finish, fit


def is_current(out: Path, kind: str, options: dict, inputs: dict[str, Path | None]) -> bool:
    """True if ``out`` exists, is complete, and was made with these options from these exact input files."""
    if not Path(out).is_file():
        return False
    try:
        meta = read_metadata(out).get("provenance", {}) if kind == "checkpoint" else load_npz(out, kind)[1]
    except InputError:
        return False
    if meta.get("options") != json.loads(json.dumps(options)):
        return False
    want = {name: file_sha256(p) for name, p in inputs.items() if p is not None}
    return want == {name: entry.get("sha256") for name, entry in meta.get("inputs", {}).items()}


def _skipped(out: Path) -> dict:
    return {"out": str(out), "skipped": True}


def inject_noise(data: str, kind: str, rate: float, seed: int, out: Path, sigma: float = 4.5) -> dict:
    """Corrupt the train split of ``data``: flip labels, or mark samples for Gaussian input noise."""
    if kind not in noise_lib.NOISE_KINDS:
        raise UsageError(f"--kind must be one of {', '.join(noise_lib.NOISE_KINDS)}, not {kind!r}")
    if not 0 <= rate <= 1:
        raise UsageError(f"--rate must be in [0, 1], got {rate}")
    dataset = load_data(data, "train")
    labels, classes = dataset.labels.numpy(), len(dataset.classes)
    if kind == "symmetric":
        noisy, is_noisy = noise_lib.symmetric_noise(labels, classes, rate, seed)
    elif kind == "asymmetric":
        noisy, is_noisy = noise_lib.asymmetric_noise(labels, classes, rate, seed)
    elif kind == "instance":
        noisy, is_noisy = noise_lib.instance_noise(labels, dataset.inputs.numpy(), classes, rate, seed)
    else:
        noisy, is_noisy = labels.copy(), noise_lib.input_noise_mask(len(labels), rate, seed)
    options = {"data": data, "kind": kind, "rate": rate, "seed": seed, "sigma": sigma}
    arrays = {"labels": noisy, "true_labels": labels, "is_noisy": is_noisy, "index": np.arange(len(labels))}
    save_npz(out, arrays, provenance("noise", options, {}))
    return {"out": str(out), "kind": kind, "rate": rate, "samples": len(labels), "noisy": int(is_noisy.sum())}


def _model_info(dataset, arch: str, arch_kwargs: dict) -> ModelInfo:
    return ModelInfo(arch=arch, input_shape=list(dataset.inputs.shape[1:]), classes=dataset.classes,
                     input_transform={"data": dataset.transform, "normalization": normalization_stats(dataset.inputs)},
                     arch_kwargs=arch_kwargs)


def _build(info: ModelInfo, source: str):
    try:
        return info.build()
    except ModelError as exc:
        raise InputError(source, str(exc)) from None


def train(data: str, arch: str, epochs: int, out: Path, *, noise: Path | None = None, arch_kwargs: dict | None = None,
          seed: int = 0, lr: float = 1e-3, weight_decay: float = 0.0, batch_size: int = 64, save_every: int = 0,
          resume: bool = False, device: str = "auto", reuse: bool = False) -> dict:
    """Train a model from scratch on the train split (noisy labels if ``noise``); writes a checkpoint.

    reuse: return without work if ``out`` was already trained with the same options and noise file.
    """
    if epochs < 1:
        raise UsageError("--epochs must be at least 1")
    options = {"data": data, "arch": arch, "arch_kwargs": arch_kwargs or {}, "epochs": epochs, "seed": seed, "lr": lr,
               "weight_decay": weight_decay, "batch_size": batch_size}
    if reuse and is_current(out, "checkpoint", options, {"noise": noise}):
        return _skipped(out)
    dev = resolve_device(device)
    dataset = load_data(data, "train")
    info = _model_info(dataset, arch, arch_kwargs or {})
    torch.manual_seed(seed)
    model = _build(info, arch).to(dev)
    stage = prepare(dataset, info, noise)
    inputs, labels = stage.inputs, stage.labels
    if len(torch.unique(labels)) < 2:
        raise InputError(data, "the train split has a single class; a classifier needs at least two")
    meta = provenance("checkpoint", options, {"noise": noise})
    started = time.perf_counter()
    losses = fit(model, inputs, labels, epochs=epochs, seed=seed, lr=lr, weight_decay=weight_decay,
                 batch_size=batch_size, train="all", device=dev, options=options, out=out, resume=resume,
                 save_every=save_every, save_model=lambda path: save_checkpoint(path, model, info, meta),
                 description="train")
    seconds = time.perf_counter() - started
    save_checkpoint(out, model, info, meta)
    finish(out)
    fitted = classification_metrics(predict_logits(model, _batches(inputs, batch_size, dev)), labels)["accuracy"]
    return {"out": str(out), "epochs": epochs, "final_loss": losses[-1] if losses else None,
            "train_accuracy": fitted, "seconds": seconds}


def _batches(inputs: torch.Tensor, batch_size: int, device: torch.device):
    return (batch for _, batch in device_batches(inputs, batch_size, device))


def evaluate(model: Path, data: str, split: str = "test", *, noise: Path | None = None, batch_size: int = 256,
             device: str = "auto", arch: str | None = None) -> dict:
    """Accuracy, macro precision/recall/F1 and top-3 of a checkpoint on a split (labels as given)."""
    dev = resolve_device(device)
    checkpoint = load_checkpoint(model, dev, allow_arch=arch)
    stage = load_stage_data(data, split, checkpoint.info, noise)
    logits = predict_logits(checkpoint.model, _batches(stage.inputs, batch_size, dev))
    return {"model": str(model), "data": data, "split": split, "samples": len(stage.labels),
            **classification_metrics(logits, stage.labels)}


def _layer(model, spec: str | None, source: str) -> str:
    layer = spec or default_layer(model)
    try:
        resolve_layer(model, layer)
    except LayerError as exc:
        raise InputError(source, str(exc)) from None
    return layer


def attribute(model: Path, data: str, out: Path, *, noise: Path | None = None, layer: str | None = None,
              target: str = "label", split: str = "train", batch_size: int = 256, device: str = "auto",
              arch: str | None = None, dtype: str = "float32", precision: str = "fp32", reuse: bool = False) -> dict:
    """Per-sample gradient x activation at a layer, plus loss, margin, confidence and predicted class.

    dtype: float32 or float16 storage of the attributions. precision: fp32, or bf16/fp16 autocast.
    reuse: return without work if ``out`` was already made with the same options and inputs.
    """
    if target not in ("label", "max"):
        raise UsageError(f"--target must be label or max, not {target!r}")
    if dtype not in SCORE_DTYPES:
        raise UsageError(f"--dtype must be float32 or float16, not {dtype!r}")
    options = {"data": data, "split": split, "layer": layer, "target": target, "dtype": dtype, "precision": precision}
    inputs = {"model": model, "noise": noise}
    if reuse and is_current(out, "scores", options, inputs):
        return _skipped(out)
    dev = resolve_device(device)
    checkpoint = load_checkpoint(model, dev, allow_arch=arch)
    stage = load_stage_data(data, split, checkpoint.info, noise)
    resolved = _layer(checkpoint.model, layer, str(model))
    started = time.perf_counter()
    with NpzStream(out, len(stage.labels)) as stream:
        units = score_samples(checkpoint.model, stage, resolved, target, batch_size, dev, stream, dtype=dtype,
                              precision=precision)
        stream.finish({"label": stage.labels.numpy(), "index": stage.index},
                      provenance("scores", options, inputs, {"layer": resolved}))
    seconds = time.perf_counter() - started
    return {"out": str(out), "layer": resolved, "samples": len(stage.labels), "units": units, "seconds": seconds}


SCORE_DTYPES = {"float32": np.float32, "float16": np.float16}


def score_samples(model, stage: StageData, layer: str, target: str, batch_size: int, device, stream: NpzStream, *,
                  dtype: str = "float32", precision: str = "fp32") -> int:
    """Score every sample of ``stage`` batch by batch, writing each batch to ``stream`` as it is made.

    Streams ``attribution`` (N, U) in ``dtype`` (float16 saturates at its largest finite value),
    ``loss``, ``confidence``, ``margin`` (N,) float32 and ``predicted`` (N,) int64; returns U.
    """
    units = 0
    with progress("attribute", len(stage.labels)) as advance:
        for s, inputs in device_batches(stage.inputs, batch_size, device):
            labels = stage.labels[s].to(device, non_blocking=True)
            try:
                with autocast(device, precision):
                    scores, logits = attr.gradient_x_activation(model, inputs, labels if target == "label" else "max",
                                                                layer)
            except LayerError as exc:
                raise InputError(layer, str(exc)) from None
            scores = scores.float().cpu().numpy()
            if dtype == "float16":
                scores = np.minimum(scores, np.finfo(np.float16).max)
            stream.write("attribution", s.start, scores.astype(SCORE_DTYPES[dtype]))
            for name, value in attr.sample_statistics(logits, labels).items():
                stream.write(name, s.start, value.cpu().numpy())
            units = scores.shape[1]
            advance(len(labels))
    return units


def partition(scores: Path, out: Path, *, per_class: bool = True, features: str = ",".join(DEFAULT_FEATURES),
              truth: Path | None = None, dims: int = 10, seed: int = 0, orient: str = "auto",
              reuse: bool = False) -> dict:
    """Fit the clean/noisy mixture over a scores file; with ``truth`` (a noise file) also score the detection.

    ``orient``: how the noisy component is chosen, one of ``unlearn_core.partition.ORIENTATIONS``."""
    kinds = tuple(k.strip() for k in features.split(",") if k.strip())
    if not kinds or any(k not in FEATURE_KINDS for k in kinds):
        raise UsageError(f"--features must be a comma list of {', '.join(FEATURE_KINDS)}, not {features!r}")
    if orient not in ORIENTATIONS:
        raise UsageError(f"--orient must be one of {', '.join(ORIENTATIONS)}, not {orient!r}")
    options = {"per_class": per_class, "features": ",".join(kinds), "dims": dims, "seed": seed, "orient": orient}
    inputs = {"scores": scores, "truth": truth}
    if reuse and is_current(out, "partition", options, inputs):
        return _skipped(out)
    arrays, _ = load_npz(scores, "scores", on_disk=("attribution",))  # read one class's rows at a time
    clean_prob = clean_probability(arrays, arrays["label"], per_class=per_class, features=kinds, dims=dims, seed=seed,
                                   orient=orient)
    result = {"out": str(out), "samples": len(clean_prob), "flagged_noisy": int((clean_prob < 0.5).sum())}
    if truth is not None:
        noise_arrays, _ = load_npz(truth, "noise")
        check_same_samples(truth, noise_arrays["index"], scores, arrays["index"])
        result["detection"] = detection_metrics(noise_arrays["is_noisy"], clean_prob)
    save_npz(out, {"clean_prob": clean_prob, "is_clean": clean_prob >= 0.5, "label": arrays["label"],
                   "index": arrays["index"]}, provenance("partition", options, inputs, {"detection": result.get("detection")}))
    return result


def _partition_for(path: Path, stage: StageData, data: str) -> dict[str, np.ndarray]:
    arrays, _ = load_npz(path, "partition")
    check_same_samples(path, arrays["index"], data, stage.index)
    if not np.array_equal(arrays["label"], stage.labels.numpy()):
        raise InputError(path, f"was made with other labels than {data} (pass the same --noise file)")
    return arrays


def layer_moments(model, stage: StageData, layer: str, is_noisy: np.ndarray, batch_size: int, device, *,
                  precision: str = "fp32") -> UnitMoments:
    """Moments of the units at ``layer`` (channels averaged over space) and the (N,) noisy indicator.

    One batch at a time: the (N, U) activations are never held, so memory does not grow with N.
    """
    moments = UnitMoments()
    with progress("activations", len(stage.labels)) as advance:
        for s, inputs in device_batches(stage.inputs, batch_size, device):
            with autocast(device, precision):
                units = attr.layer_activations(model, inputs, layer)[0]
            moments.update(units.float().cpu().numpy(), is_noisy[s])
            advance(s.stop - s.start)
    return moments


def sensitivity(model: Path, data: str, partition_file: Path, out: Path, *, noise: Path | None = None,
                layer: str | None = None, batch_size: int = 256, device: str = "auto", arch: str | None = None,
                precision: str = "fp32", reuse: bool = False) -> dict:
    """Regress the partition's noisy indicator on a layer's standardized units; writes coefficients and ranks."""
    options = {"data": data, "layer": layer, "precision": precision}
    inputs = {"model": model, "partition": partition_file, "noise": noise}
    if reuse and is_current(out, "sensitivity", options, inputs):
        return _skipped(out)
    dev = resolve_device(device)
    checkpoint = load_checkpoint(model, dev, allow_arch=arch)
    stage = load_stage_data(data, "train", checkpoint.info, noise)
    split = _partition_for(partition_file, stage, data)
    resolved = _layer(checkpoint.model, layer, str(model))
    moments = layer_moments(checkpoint.model, stage, resolved, ~split["is_clean"], batch_size, dev, precision=precision)
    result = moments.solve()
    save_npz(out, result, provenance("sensitivity", options, inputs, {"layer": resolved}))
    return {"out": str(out), "layer": resolved, "units": len(result["coefficient"]), "r2": float(result["r2"]),
            "toward_noisy": int((result["coefficient"] > 0).sum())}


def prune(model: Path, sensitivity_file: Path, out: Path, *, ratio: float | None = None, count: int | None = None,
          by: str = "noisy", force: bool = False, arch: str | None = None, reuse: bool = False) -> dict:
    """Remove the most noise-sensitive units of the sensitivity file's layer; the mask goes into the checkpoint."""
    if (ratio is None) == (count is None):
        raise UsageError("give exactly one of --ratio and --count")
    if ratio is not None and not 0 < ratio < 1:
        raise UsageError(f"--ratio must be in (0, 1), got {ratio}")
    if by not in ("noisy", "abs"):
        raise UsageError(f"--by must be noisy or abs, not {by!r}")
    options = {"ratio": ratio, "count": count, "by": by}
    inputs = {"model": model, "sensitivity": sensitivity_file}
    if reuse and is_current(out, "checkpoint", options, inputs):
        return _skipped(out)
    checkpoint = load_checkpoint(model, "cpu", allow_arch=arch)
    arrays, meta = load_npz(sensitivity_file, "sensitivity")
    layer = meta.get("results", {}).get("layer")
    if not isinstance(layer, str):
        raise InputError(sensitivity_file, "does not record its layer")
    _layer(checkpoint.model, layer, str(sensitivity_file))
    units = len(arrays["coefficient"])
    recorded = meta.get("inputs", {}).get("model", {}).get("sha256")
    if not force and recorded is not None and recorded != file_sha256(model):
        raise InputError(sensitivity_file, f"was computed for another model than {model} (use --force to prune anyway)")
    if count is not None and not 0 <= count <= units:
        raise UsageError(f"--count must be in [0, {units}], got {count}")
    previous = checkpoint.info.masks.get(layer)
    if previous is not None and previous.numel() != units:
        raise InputError(sensitivity_file, f"has {units} units but the model's mask at {layer} has {previous.numel()}")
    keep = prune_mask(arrays["coefficient"], ratio=ratio, count=count, by=by,
                      keep=None if previous is None else previous.numpy())
    info = checkpoint.info
    info.masks[layer] = torch.as_tensor(keep)
    fresh = _build(info, str(model))
    load_weights(model, fresh, checkpoint.model.state_dict())
    try:
        apply_unit_masks(fresh, info.masks)
    except LayerError as exc:
        raise InputError(sensitivity_file, f"does not fit the model: {exc}") from None
    save_checkpoint(out, fresh, info, provenance("checkpoint", options, inputs))
    removed = int((~keep).sum()) - (0 if previous is None else int((~previous).sum()))
    return {"out": str(out), "layer": layer, "units": units, "removed": removed, "removed_total": int((~keep).sum())}


def finetune(model: Path, data: str, partition_file: Path, out: Path, *, noise: Path | None = None,
             train: str = "all", epochs: int = 30, lr: float = 1e-3, weight_decay: float = 0.0, batch_size: int = 64,
             shrink: float = 0.5, seed: int = 0, resume: bool = False, device: str = "auto", arch: str | None = None,
             reuse: bool = False) -> dict:
    """Fine-tune a (pruned) checkpoint on the partition's clean samples only; masks stay in force.

    shrink: the trained parameters are first multiplied by this factor in (0, 1] (1: as they are).
    """
    if train not in ("all", "head"):
        raise UsageError(f"--train must be head or all, not {train!r}")
    if epochs < 1:
        raise UsageError("--epochs must be at least 1")
    if not 0 < shrink <= 1:
        raise UsageError(f"--shrink must be in (0, 1], got {shrink}")
    options = {"data": data, "train": train, "epochs": epochs, "lr": lr, "weight_decay": weight_decay,
               "batch_size": batch_size, "shrink": shrink, "seed": seed}
    inputs = {"model": model, "partition": partition_file, "noise": noise}
    if reuse and is_current(out, "checkpoint", options, inputs):
        return _skipped(out)
    dev = resolve_device(device)
    checkpoint = load_checkpoint(model, dev, allow_arch=arch)
    stage = load_stage_data(data, "train", checkpoint.info, noise)
    split = _partition_for(partition_file, stage, data)
    clean = torch.as_tensor(split["is_clean"])
    if int(clean.sum()) == 0:
        raise InputError(partition_file, "marks no sample as clean; nothing to fine-tune on")
    started = time.perf_counter()
    fit(checkpoint.model, stage.inputs[clean], stage.labels[clean], epochs=epochs, seed=seed, lr=lr,
        weight_decay=weight_decay, batch_size=batch_size, train=train, device=dev, options=options, shrink=shrink,
        out=out, resume=resume, description="finetune")
    seconds = time.perf_counter() - started
    save_checkpoint(out, checkpoint.model, checkpoint.info, provenance("checkpoint", options, inputs))
    finish(out)
    return {"out": str(out), "clean_samples": int(clean.sum()), "epochs": epochs, "train": train, "shrink": shrink,
            "seconds": seconds}


def import_weights(arch: str, weights: Path, out: Path, *, data: str | None = None, input_shape: list[int] | None = None,
                   num_classes: int | None = None, arch_kwargs: dict | None = None, noise: Path | None = None) -> dict:
    """Bring a plain state dict (safetensors, or .pt/.pth read with ``torch.load(weights_only=True)``) in as a checkpoint.

    noise: the noise file the weights were trained with (checked against ``data``, recorded in the provenance).
    """
    if noise is not None and data is None:
        raise UsageError("--noise needs --data")
    if data is not None:
        dataset = load_data(data, "train")
        info = _model_info(dataset, arch, arch_kwargs or {})
        if noise is not None:
            read_noise(noise, dataset)
    elif input_shape and num_classes:
        info = ModelInfo(arch=arch, input_shape=input_shape, classes=[str(c) for c in range(num_classes)],
                         input_transform={"data": None, "normalization": {"mean": [0.0], "std": [1.0]}},
                         arch_kwargs=arch_kwargs or {})
    else:
        raise UsageError("give --data, or both --input-shape and --num-classes")
    weights = Path(weights)
    if not weights.is_file():
        raise InputError(weights, "no such file")
    if weights.suffix in (".pt", ".pth"):
        try:
            tensors = torch.load(weights, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise InputError(weights, f"not loadable with torch.load(weights_only=True): {str(exc).splitlines()[0]}") from None
        if not isinstance(tensors, dict) or not all(torch.is_tensor(v) for v in tensors.values()):
            raise InputError(weights, "is not a plain state dict of tensors")
    else:
        tensors = read_tensors(weights)
    model = _build(info, arch)
    load_weights(weights, model, tensors)
    save_checkpoint(out, model, info, provenance("checkpoint", {"arch": arch, "imported": True},
                                                 {"weights": weights, "noise": noise}))
    return {"out": str(out), "arch": arch, "tensors": len(tensors), "user_code": is_user_arch(arch)}
