"""Relabel instead of drop: the core rule, and `denoise finetune --relabel` using the partition's suggestions."""

import numpy as np
import torch

from denoise.cli.files.checkpoint import read_metadata
from denoise.cli.files.stage_files import load_npz, save_npz
from conftest import TINY
from denoise.core.attribution import sample_statistics
from denoise.core.relabel import RELABEL_PROBABILITY, fine_tuning_set, suggestion


def test_a_sample_is_relabeled_only_when_flagged_confident_and_pointing_elsewhere():
    # rows: flagged/clean x confident/unsure x elsewhere/same, then a held-out one that would qualify
    is_clean = np.array([False, False, False, False, True, True, True, True, False])
    confident = np.array([True, True, False, False, True, True, False, False, True])
    elsewhere = np.array([True, False, True, False, True, False, True, False, True])
    held = np.zeros(9, dtype=bool)
    held[8] = True
    labels = np.arange(9) % 3
    suggested = np.where(elsewhere, (labels + 1) % 3, labels)
    prob = np.where(confident, RELABEL_PROBABILITY, RELABEL_PROBABILITY - 1e-3)
    rows, targets, relabeled = fine_tuning_set(labels, is_clean, held, suggested, prob)
    assert relabeled.tolist() == [True] + [False] * 8
    assert targets.tolist() == [suggested[0], *labels[1:]]
    assert rows.tolist() == [True, False, False, False, True, True, True, True, False]
    dropped = fine_tuning_set(labels, is_clean, held)  # no suggestions: the flagged samples are dropped
    assert dropped[0].tolist() == (is_clean & ~held).tolist() and dropped[1].tolist() == labels.tolist()
    assert not dropped[2].any()
    everything_held = fine_tuning_set(labels, is_clean, np.ones(9, dtype=bool), suggested, prob)
    assert not everything_held[0].any() and not everything_held[2].any()


def test_suggestion_is_the_predicted_class_and_its_softmax_probability():
    logits = torch.randn(200, 5, generator=torch.Generator().manual_seed(0)) * 3
    labels = torch.randint(0, 5, (200,), generator=torch.Generator().manual_seed(1))
    stats = {name: value.numpy() for name, value in sample_statistics(logits, labels).items()}
    suggested, prob = suggestion(labels.numpy(), stats["predicted"], stats["confidence"], stats["margin"])
    softmax = logits.softmax(1)
    assert (suggested == logits.argmax(1).numpy()).all()
    assert np.allclose(prob, softmax.max(1).values.numpy(), atol=1e-6)
    assert (suggested != labels.numpy()).any() and (suggested == labels.numpy()).any()  # both branches ran


def _predicted(denoise, model, data, noise, out):
    """The train split's classes that ``model`` predicts, from its scores file (through `denoise attribute`)."""
    result = denoise("attribute", "--model", model, "--data", data, "--noise", noise, "--out", out, "--json")
    assert result.code == 0, result.err
    return load_npz(out, "scores")[0]["predicted"]


def test_finetune_relabel_trains_flagged_samples_on_the_partitions_suggested_labels(denoise, tmp_path):
    data, noise, model = f"npz:{TINY}", tmp_path / "noise.npz", tmp_path / "noisy.safetensors"
    for args in (("inject-noise", "--data", data, "--kind", "symmetric", "--rate", 0.3, "--seed", 0, "--out", noise),
                 ("train", "--data", data, "--noise", noise, "--arch", "mlp", "--epochs", 40, "--out", model),
                 ("attribute", "--model", model, "--data", data, "--noise", noise, "--out", tmp_path / "scores.npz"),
                 ("partition", "--scores", tmp_path / "scores.npz", "--out", tmp_path / "made.npz")):
        assert denoise(*args).code == 0
    # a memorized model suggests the given labels: set suggestions by hand, as a cleaned model's would be
    arrays, meta = load_npz(tmp_path / "made.npz", "partition")
    labels, n = arrays["label"], len(arrays["label"])
    truth = load_npz(noise, "noise")[0]
    assert (truth["index"] == arrays["index"]).all()
    # correctly labeled samples, given a wrong suggestion: only training on it makes the model predict it
    rows = np.random.default_rng(0).permutation(np.flatnonzero(~truth["is_noisy"]))
    relabel, unsure, clean = rows[:15], rows[15:25], rows[25:35]
    arrays["is_clean"] = np.ones(n, dtype=bool)
    arrays["is_clean"][np.r_[relabel, unsure]] = False
    arrays["clean_prob"] = arrays["is_clean"].astype(np.float64)
    arrays["suggested"] = labels.copy()
    arrays["suggested"][np.r_[relabel, unsure, clean]] = (labels[np.r_[relabel, unsure, clean]] + 1) % 3
    arrays["suggested_prob"] = np.full(n, 0.95)
    arrays["suggested_prob"][unsure] = 0.3
    assert 0.3 < RELABEL_PROBABILITY <= 0.95
    save_npz(tmp_path / "partition.npz", arrays, meta)
    recipe = ("--train", "all", "--epochs", 60, "--lr", 0.01, "--shrink", 1)
    tuned, learned = {}, {}
    for flag in ("--relabel", "--no-relabel"):
        out = tmp_path / f"tuned{flag}.safetensors"
        result = denoise("finetune", "--model", model, "--data", data, "--noise", noise, "--partition",
                         tmp_path / "partition.npz", *recipe, flag, "--out", out, "--json")
        assert result.code == 0, result.err
        tuned[flag] = result.json
        assert read_metadata(out)["provenance"]["options"]["relabel"] == (flag == "--relabel")
        predicted = _predicted(denoise, out, data, noise, tmp_path / f"scores{flag}.npz")
        learned[flag] = (predicted[relabel] == arrays["suggested"][relabel]).mean()
    assert learned["--relabel"] > 0.8 and learned["--no-relabel"] < learned["--relabel"] - 0.4, learned
    assert tuned["--relabel"]["relabeled"] == 15 and tuned["--no-relabel"]["relabeled"] == 0
    assert tuned["--relabel"]["clean_samples"] == tuned["--no-relabel"]["clean_samples"] == n - 25


def test_run_relabel_reaches_the_last_rounds_fine_tuning(denoise, tmp_path):
    model = tmp_path / "m.safetensors"
    assert denoise("train", "--data", f"npz:{TINY}", "--arch", "mlp", "--epochs", 5, "--out", model).code == 0
    result = denoise("run", "--model", model, "--data", f"npz:{TINY}", "--workdir", tmp_path / "work", "--rounds", 2,
                     "--epochs", 1, "--round-epochs", 1, "--relabel", "--device", "cpu", "--json")
    assert result.code == 0, result.err
    assert result.json["options"]["relabel"] is True
    tuned = [read_metadata(tmp_path / "work" / f"round{r}" / "clean.safetensors")["provenance"]["options"]["relabel"]
             for r in (1, 2)]
    assert tuned == [False, True]  # only the last round relabels
    assert all(isinstance(r["finetune"]["relabeled"], int) for r in result.json["rounds"])


def test_a_partition_of_an_earlier_format_is_refused_naming_its_version_and_the_rewrite(denoise, tmp_path):
    """A partition file written before relabeling existed lacks the suggestions: finetune refuses it, with or
    without --relabel, in one line naming the file, the version that wrote it and `denoise partition`."""
    data, model = f"npz:{TINY}", tmp_path / "model.safetensors"
    for args in (("train", "--data", data, "--arch", "mlp", "--epochs", 2, "--out", model),
                 ("attribute", "--model", model, "--data", data, "--out", tmp_path / "scores.npz"),
                 ("partition", "--scores", tmp_path / "scores.npz", "--out", tmp_path / "made.npz")):
        assert denoise(*args).code == 0
    arrays, meta = load_npz(tmp_path / "made.npz", "partition")
    save_npz(tmp_path / "old.npz", {k: v for k, v in arrays.items() if not k.startswith("suggested")}, meta)
    common = ("finetune", "--model", model, "--data", data, "--partition", tmp_path / "old.npz", "--epochs", 1)
    for extra, out in (((), "a.safetensors"), (("--relabel",), "b.safetensors")):
        refused = denoise(*common, *extra, "--out", tmp_path / out)
        lines = refused.err.strip().splitlines()
        assert refused.code == 2 and len(lines) == 1 and "old.npz" in lines[0], refused.err
        assert f"written by denoise {meta['version']}" in lines[0] and "run `denoise partition` again" in lines[0]
        assert not (tmp_path / out).exists()
