"""Every stage alone, from the files another stage wrote, through the `denoise` command line."""

import json
import re
from dataclasses import replace

import numpy as np
import pytest
import torch
from safetensors import safe_open

from denoise.cli.data import registry
from denoise.cli.files.checkpoint import load_checkpoint, read_metadata
from denoise.core.rounds import RunOptions, plan
from denoise.core.attribution import layer_activations
from conftest import FSDD, TINY, requires_fsdd


def _ok(result):
    assert result.code == 0, result.err
    return result.json if result.out.lstrip().startswith("{") else result.out


def five_stages(denoise, tmp_path, data, arch, layer, *, epochs=40, arch_kwargs=None, extra_arch=()):
    """inject-noise -> train -> attribute -> partition -> sensitivity -> prune -> finetune -> evaluate, one by one."""
    noise, model = tmp_path / "noise.npz", tmp_path / "noisy.safetensors"
    _ok(denoise("inject-noise", "--data", data, "--kind", "symmetric", "--rate", 0.3, "--seed", 1, "--out", noise,
                "--json"))
    train_args = ["--arch-kwargs", json.dumps(arch_kwargs)] if arch_kwargs else []
    trained = _ok(denoise("train", "--data", data, "--noise", noise, "--arch", arch, *train_args, "--epochs", epochs,
                          "--out", model, "--json"))
    layer_args = ["--layer", layer] if layer else []
    scores = _ok(denoise("attribute", "--model", model, "--data", data, "--noise", noise, *layer_args, *extra_arch,
                         "--out", tmp_path / "scores.npz", "--json"))
    split = _ok(denoise("partition", "--scores", tmp_path / "scores.npz", "--truth", noise,
                        "--out", tmp_path / "partition.npz", "--json"))
    sens = _ok(denoise("sensitivity", "--model", model, "--data", data, "--noise", noise, *layer_args, *extra_arch,
                       "--partition", tmp_path / "partition.npz", "--out", tmp_path / "sensitivity.npz", "--json"))
    pruned = _ok(denoise("prune", "--model", model, "--sensitivity", tmp_path / "sensitivity.npz", "--count", 2,
                         "--by", "abs", *extra_arch, "--out", tmp_path / "pruned.safetensors", "--json"))
    tuned = _ok(denoise("finetune", "--model", tmp_path / "pruned.safetensors", "--data", data, "--noise", noise,
                        "--partition", tmp_path / "partition.npz", "--epochs", 3, *extra_arch,
                        "--out", tmp_path / "clean.safetensors", "--json"))
    evaluated = _ok(denoise("evaluate", "--model", tmp_path / "clean.safetensors", "--data", data, *extra_arch,
                            "--json"))
    return dict(trained=trained, scores=scores, split=split, sens=sens, pruned=pruned, tuned=tuned,
                evaluated=evaluated)


def check_outputs(tmp_path, results, layer_kind):
    """The files hold what the next stage needs, and the pruned units stay removed after fine-tuning.

    ``layer_kind``: the module type at the layer; a Linear or Conv2d layer must also have its weights zeroed.
    """
    with np.load(tmp_path / "scores.npz", allow_pickle=False) as scores:
        n, units = scores["attribution"].shape
        assert units == results["scores"]["units"] and (scores["attribution"] >= 0).all()
        for name in ("loss", "margin", "confidence", "predicted", "label", "index", "input_high_pass"):
            assert scores[name].shape == (n,)
        assert np.isfinite(scores["input_high_pass"]).all()
    with np.load(tmp_path / "partition.npz", allow_pickle=False) as split:
        assert split["clean_prob"].shape == (n,) and ((split["clean_prob"] >= 0) & (split["clean_prob"] <= 1)).all()
    assert set(results["split"]["detection"]) == {"precision", "recall", "f1", "auroc", "flagged"}
    with np.load(tmp_path / "sensitivity.npz", allow_pickle=False) as sens:
        assert sens["coefficient"].shape == (results["sens"]["units"],)
    assert results["pruned"]["removed"] == 2
    layer = results["pruned"]["layer"]
    masks = read_metadata(tmp_path / "clean.safetensors")["masks"]
    assert len(masks[layer]["removed"]) == 2
    checkpoint = load_checkpoint(tmp_path / "clean.safetensors", allow_arch=results.get("arch"))
    removed = torch.as_tensor(masks[layer]["removed"])
    units, _ = layer_activations(checkpoint.model.eval(), torch.randn(16, *checkpoint.info.input_shape), layer)
    assert torch.count_nonzero(units[:, removed]) == 0, "a pruned unit is active after fine-tuning"
    module = dict(checkpoint.model.named_modules())[layer.partition(":")[0]]
    assert isinstance(module, layer_kind)
    if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)):  # the parameters that make or read the units are zero
        weight = module.weight.detach()
        gone = weight[:, removed] if layer.endswith(":input") else weight[removed]
        assert torch.count_nonzero(gone) == 0, "fine-tuning revived pruned units"
    assert 0 <= results["evaluated"]["accuracy"] <= 1


def test_digits_mlp_at_a_hidden_linear_layer(denoise, tmp_path):
    results = five_stages(denoise, tmp_path, "digits", "mlp", "features.2", epochs=15)
    check_outputs(tmp_path, results, torch.nn.ReLU)


def test_digits_mlp_at_the_default_head_input(denoise, tmp_path):
    results = five_stages(denoise, tmp_path, "digits", "mlp", None, epochs=15)
    assert results["scores"]["layer"] == "head:input"
    check_outputs(tmp_path, results, torch.nn.Linear)


def test_npz_fixture_cnn_at_a_conv_layer(denoise, tmp_path):
    results = five_stages(denoise, tmp_path, f"npz:{TINY}", "cnn", "features.4", arch_kwargs={"width": 8})
    assert results["scores"]["units"] == 16  # one score per channel of the second Conv2d (2 x width)
    check_outputs(tmp_path, results, torch.nn.Conv2d)


@pytest.mark.slow
def test_torchvision_resnet18_on_the_tiny_fixture(denoise, tmp_path):
    results = five_stages(denoise, tmp_path, f"npz:{TINY}", "tv:resnet18", "layer4.1.conv2", epochs=2)
    check_outputs(tmp_path, results, torch.nn.Conv2d)


def test_user_factory_goes_through_the_five_stages(denoise, tmp_path):
    arch = "user_models:tiny_convnet"
    results = five_stages(denoise, tmp_path, f"npz:{TINY}", arch, "0", extra_arch=("--arch", arch))
    results["arch"] = arch
    check_outputs(tmp_path, results, torch.nn.Conv2d)


def test_user_factory_is_not_imported_unless_named(denoise, tmp_path):
    model = tmp_path / "m.safetensors"
    _ok(denoise("train", "--data", f"npz:{TINY}", "--arch", "user_models:tiny_convnet", "--epochs", 1, "--out", model,
                "--json"))
    refused = denoise("evaluate", "--model", model, "--data", f"npz:{TINY}")
    assert refused.code == 2 and "--arch user_models:tiny_convnet" in refused.err


@pytest.mark.slow
@requires_fsdd()
def test_fsdd_kws_stages_at_a_conv_layer(denoise, tmp_path):
    results = five_stages(denoise, tmp_path, f"fsdd:{FSDD}", "kws", "features.8", epochs=2,
                          arch_kwargs={"width": 8, "hidden": 16})
    check_outputs(tmp_path, results, torch.nn.Conv2d)


def test_run_chains_the_stages_in_rounds(denoise, tmp_path):
    noise, model = tmp_path / "noise.npz", tmp_path / "noisy.safetensors"
    _ok(denoise("inject-noise", "--data", f"npz:{TINY}", "--kind", "asymmetric", "--rate", 0.3, "--out", noise, "--json"))
    _ok(denoise("train", "--data", f"npz:{TINY}", "--noise", noise, "--arch", "mlp", "--epochs", 30, "--out", model,
                "--json"))
    result = _ok(denoise("run", "--model", model, "--data", f"npz:{TINY}", "--noise", noise, "--truth", noise,
                         "--workdir", tmp_path / "work", "--rounds", 2, "--epochs", 3, "--round-epochs", 2,
                         "--round-train", "head", "--ratio", 0.1, "--holdout", 0, "--json"))  # given: pruned in
    assert [r["round"] for r in result["rounds"]] == [1, 2]  # either regime; no held-out choice: the last round's
    for r in (1, 2):
        for name in ("scores.npz", "partition.npz", "clean.safetensors"):
            assert (tmp_path / "work" / f"round{r}" / name).is_file()
    # only the last round, with the cleanest partition, measures sensitivity and prunes
    assert not (tmp_path / "work" / "round1" / "pruned.safetensors").exists()
    assert "sensitivity" not in result["rounds"][0]
    for name in ("sensitivity.npz", "pruned.safetensors"):
        assert (tmp_path / "work" / "round2" / name).is_file()
    assert result["model"].endswith("round2/clean.safetensors")
    # head-only early rounds: their own epochs, no shrink warm start (the last round's alone)
    assert [(r["finetune"]["train"], r["finetune"]["epochs"]) for r in result["rounds"]] == [("head", 2), ("all", 3)]
    regime = result["rounds"][0]["partition"]["regime"]  # the shrink warm start is for memorized models only
    assert [r["finetune"]["shrink"] for r in result["rounds"]] == [1.0, 0.5 if regime == "memorized" else 1.0]
    assert plan(RunOptions(round_train="all"))[0].finetune.shrink == 0.5  # all-layer early rounds shrink too
    second_round = result["rounds"][1]["attribute"]
    assert not second_round.get("skipped")


def test_run_reads_the_data_set_once(denoise, tmp_path, monkeypatch):
    model = tmp_path / "m.safetensors"
    _ok(denoise("train", "--data", f"npz:{TINY}", "--arch", "mlp", "--epochs", 2, "--out", model))
    reads, npz = [], registry.SPEC_KINDS["npz"]
    counting = lambda *args, **kwargs: reads.append(args) or npz.reader(*args, **kwargs)  # noqa: E731
    monkeypatch.setitem(registry.SPEC_KINDS, "npz", replace(npz, reader=counting))
    _ok(denoise("run", "--model", model, "--data", f"npz:{TINY}", "--workdir", tmp_path / "work", "--rounds", 2,
                "--epochs", 1, "--round-epochs", 1, "--json"))
    assert len(reads) == 1  # five stages in two rounds: attribute twice, sensitivity, finetune twice
    _ok(denoise("evaluate", "--model", model, "--data", f"npz:{TINY}", "--split", "train", "--json"))
    assert len(reads) == 2  # a stage on its own reads from disk again


@pytest.mark.parametrize("option", [("--orient", "nope"), ("--features", "prototype,nope"), ("--ratio", "1.5")])
def test_run_rejects_a_bad_option_before_any_stage(denoise, tmp_path, option):
    model = tmp_path / "m.safetensors"
    _ok(denoise("train", "--data", f"npz:{TINY}", "--arch", "mlp", "--epochs", 1, "--out", model))
    result = denoise("run", "--model", model, "--data", f"npz:{TINY}", "--workdir", tmp_path / "work", *option)
    assert result.code != 0 and option[0] in result.err
    assert not (tmp_path / "work").exists()  # not even round 1's attributions were made


def test_inspect_describes_checkpoints_and_npz(denoise, tmp_path):
    model = tmp_path / "m.safetensors"
    _ok(denoise("train", "--data", f"npz:{TINY}", "--arch", "mlp", "--epochs", 1, "--out", model, "--json"))
    described = _ok(denoise("inspect", model, "--json"))
    assert described["arch"] == "mlp" and described["layers"]["features.1"] == "Linear(256)"
    _ok(denoise("attribute", "--model", model, "--data", f"npz:{TINY}", "--out", tmp_path / "s.npz"))
    scores = _ok(denoise("inspect", tmp_path / "s.npz", "--json"))
    assert "attribution" in json.dumps(scores)


def test_import_plain_weights(denoise, tmp_path):
    from safetensors.torch import save_file

    from denoise.core.models import create_model

    torch.manual_seed(3)
    net = create_model("mlp", (1, 8, 8), 3)
    save_file(net.state_dict(), tmp_path / "plain.safetensors")
    torch.save(net.state_dict(), tmp_path / "plain.pt")
    for weights in ("plain.safetensors", "plain.pt"):
        out = tmp_path / f"{weights}.imported.safetensors"
        _ok(denoise("import", "--arch", "mlp", "--weights", tmp_path / weights, "--data", f"npz:{TINY}",
                    "--out", out, "--json"))
        with safe_open(out, "pt") as f:
            assert torch.equal(f.get_tensor("head.weight"), net.state_dict()["head.weight"])
    _ok(denoise("evaluate", "--model", out, "--data", f"npz:{TINY}", "--json"))
    noise = tmp_path / "noise.npz"
    _ok(denoise("inject-noise", "--data", f"npz:{TINY}", "--kind", "symmetric", "--rate", 0.2, "--out", noise))
    _ok(denoise("import", "--arch", "mlp", "--weights", tmp_path / "plain.pt", "--data", f"npz:{TINY}", "--noise",
                noise, "--out", tmp_path / "with-noise.safetensors"))
    assert "noise" in read_metadata(tmp_path / "with-noise.safetensors")["provenance"]["inputs"]
    refused = denoise("import", "--arch", "mlp", "--weights", tmp_path / "plain.pt", "--data", "digits", "--noise",
                      noise, "--out", tmp_path / "refused.safetensors")
    assert refused.code == 2 and not (tmp_path / "refused.safetensors").exists()


def test_evaluate_reports_the_documented_metrics(denoise, tmp_path):
    model = tmp_path / "m.safetensors"
    _ok(denoise("train", "--data", f"npz:{TINY}", "--arch", "mlp", "--epochs", 20, "--out", model))
    metrics = _ok(denoise("evaluate", "--model", model, "--data", f"npz:{TINY}", "--split", "test", "--json"))
    assert {"accuracy", "precision", "recall", "f1", "top3"} <= set(metrics)
    assert metrics["samples"] == 30 and metrics["accuracy"] > 0.5


def test_input_noise_is_applied_to_the_same_samples_at_every_load(denoise, tmp_path):
    from denoise.cli.data.samples import load_samples
    from denoise.cli.files.checkpoint import ModelInfo

    noise, model = tmp_path / "noise.npz", tmp_path / "m.safetensors"
    _ok(denoise("inject-noise", "--data", f"npz:{TINY}", "--kind", "input-gaussian", "--rate", 0.5, "--sigma", 4.5,
                "--out", noise, "--json"))
    _ok(denoise("train", "--data", f"npz:{TINY}", "--noise", noise, "--arch", "mlp", "--epochs", 1, "--out", model))
    info = ModelInfo.from_json(read_metadata(model))
    first = load_samples(f"npz:{TINY}", "train", info, noise)
    again = load_samples(f"npz:{TINY}", "train", info, noise)
    clean = load_samples(f"npz:{TINY}", "train", info, None)
    assert torch.equal(first.inputs[:], again.inputs[:])
    assert torch.equal(first.labels, clean.labels), "input noise must not touch the labels"
    noisy = first.is_noisy
    assert noisy.sum() == 75
    assert torch.equal(first.inputs[~noisy], clean.inputs[~noisy])
    difference = (first.inputs[noisy] - clean.inputs[noisy]).std().item()
    assert 4.0 < difference < 5.0


def test_subset_spec_takes_a_stratified_seeded_subset_of_any_kind(denoise, tmp_path):
    from denoise.cli.data import load_data

    full = load_data("digits", "train")
    subset = load_data("digits?per_class=20&seed=1", "train")
    assert subset.labels.bincount().tolist() == [20] * 10
    assert subset.transform == full.transform  # which samples, not how they were read
    rows = [int(torch.nonzero((full.inputs == x).flatten(1).all(1))[0]) for x in subset.inputs]
    assert rows == sorted(rows) and torch.equal(full.labels[rows], subset.labels)  # the full split's rows, in order
    assert torch.equal(load_data("digits?per_class=20&seed=1", "train").inputs, subset.inputs)
    assert not torch.equal(load_data("digits?per_class=20&seed=2", "train").inputs, subset.inputs)
    tiny = load_data(f"npz:{TINY}?per_class=1000", "train")  # fewer than asked: every sample
    assert torch.equal(tiny.labels, load_data(f"npz:{TINY}", "train").labels)
    model = tmp_path / "m.safetensors"
    _ok(denoise("train", "--data", "digits?per_class=20", "--arch", "mlp", "--epochs", 1, "--out", model))
    assert _ok(denoise("evaluate", "--model", model, "--data", "digits", "--json"))["samples"] == 360
    for spec, problem in (("digits?per_class=0", "at least 1"), ("digits?per_class=x", "whole number"),
                          ("digits?seed=3", "give per_class"), ("digits?size=3", "unknown option")):
        result = denoise("evaluate", "--model", model, "--data", spec)
        assert result.code == 1 and problem in result.err


def test_json_is_strict_where_a_figure_is_undefined(denoise, tmp_path):
    """No noise at all: AUROC is undefined and prints as null, never NaN (which jq and strict parsers reject)."""
    noise, model, scores = tmp_path / "noise.npz", tmp_path / "m.safetensors", tmp_path / "s.npz"
    _ok(denoise("inject-noise", "--data", f"npz:{TINY}", "--kind", "symmetric", "--rate", 0, "--out", noise))
    _ok(denoise("train", "--data", f"npz:{TINY}", "--noise", noise, "--arch", "mlp", "--epochs", 2, "--out", model))
    _ok(denoise("attribute", "--model", model, "--data", f"npz:{TINY}", "--noise", noise, "--out", scores))
    result = denoise("partition", "--scores", scores, "--truth", noise, "--out", tmp_path / "p.npz", "--json")
    assert result.code == 0, result.err

    def refuse(constant):
        raise ValueError(f"non-standard JSON constant {constant}")

    record = json.loads(result.out, parse_constant=refuse)
    assert record["detection"]["auroc"] is None and record["regime"] in ("memorized", "generalizing")


@pytest.mark.parametrize("epochs, regime, prune_ratio", [(3, "generalizing", None), (400, "memorized", 0.1)])
def test_run_finds_corrupted_inputs_in_either_regime_and_fine_tunes_longer(denoise, tmp_path, epochs, regime,
                                                                          prune_ratio):
    """Half the inputs with Gaussian noise (sigma 4.5) and a short-trained model (it fits under 90 % of its
    labels) or a long-trained one (it memorized them): round 1's partition file records the input-energy split,
    which the run's rounds follow (one round of CORRUPTED_EPOCHS, pruned where the model memorized) and which
    finds the corrupted inputs."""
    from denoise.core.rounds import CORRUPTED_EPOCHS

    noise, model = tmp_path / "noise.npz", tmp_path / "noisy.safetensors"
    _ok(denoise("inject-noise", "--data", f"npz:{TINY}", "--kind", "input-gaussian", "--rate", 0.5, "--out", noise,
                "--json"))
    _ok(denoise("train", "--data", f"npz:{TINY}", "--noise", noise, "--arch", "mlp", "--epochs", epochs,
                "--out", model, "--json"))
    result = _ok(denoise("run", "--model", model, "--data", f"npz:{TINY}", "--noise", noise, "--truth", noise,
                         "--workdir", tmp_path / "work", "--json"))
    [only] = result["rounds"]
    first, used = only["partition"], result["options_used"]
    assert first["regime"] == regime and first["detector"] == "input-energy-mixture", first
    assert abs(first["corrupted_inputs"] - 0.5) < 0.05 and first["detection"]["f1"] > 0.95
    assert (used["rounds"], used["epochs"], used["prune_ratio"]) == (1, CORRUPTED_EPOCHS, prune_ratio)
    said = denoise("run", "--model", model, "--data", f"npz:{TINY}", "--noise", noise, "--workdir", tmp_path / "work")
    assert re.search(rf"round 1: the model fits \d+\.\d% of its labels \({regime}\); the input-energy-mixture "
                     r"flags \d+\.\d% of the samples \(corrupted inputs\)", said.err), said.err


def test_run_records_round_ones_choice_of_features_and_early_rounds(denoise, tmp_path):
    """Round 1's partition records the separation it chose the features by, and later rounds see those
    features; run.json's options_used holds the early rounds the memorized regime set, and the run made that
    many rounds."""
    noise, model = tmp_path / "noise.npz", tmp_path / "noisy.safetensors"
    _ok(denoise("inject-noise", "--data", f"npz:{TINY}", "--kind", "symmetric", "--rate", 0.3, "--out", noise, "--json"))
    _ok(denoise("train", "--data", f"npz:{TINY}", "--noise", noise, "--arch", "mlp", "--epochs", 400, "--out", model,
                "--json"))
    result = _ok(denoise("run", "--model", model, "--data", f"npz:{TINY}", "--noise", noise, "--workdir",
                         tmp_path / "work", "--epochs", 1, "--round-epochs", 1, "--json"))
    first, used = result["rounds"][0]["partition"], result["options_used"]
    assert first["regime"] == "memorized" and "separation" in first
    attribution = "attribution" in first["features"].split(",")
    assert attribution == (first["separation"] is None or first["separation"] >= 2.0)
    assert (used["round_train"], used["rounds"]) == ("all", 4)
    assert len(result["rounds"]) == used["rounds"] and result["options"]["rounds"] is None
    assert json.loads((tmp_path / "work" / "run.json").read_text())["options_used"] == used
    later = {r["partition"].get("features") for r in result["rounds"][1:]}
    assert "separation" not in result["rounds"][1]["partition"] and later == {first["features"]}
