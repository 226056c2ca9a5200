"""One copy of the method: ``denoise run`` (files) and ``bench quality`` (memory) walk the same rounds."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from denoise.cli import pipeline, stages
from denoise.cli.bench import quality
from denoise.cli.data.noise import inject_noise
from denoise.cli.model_commands import train
from conftest import TINY
from denoise.cli.bench.baselines import DetectorSteps
from denoise.core.rounds import Choice, Round, RunOptions, plan
from denoise.core.training import Recipe

STEPS = ("attribute", "partition", "choice", "sensitivity", "prune", "hold_out", "finetune", "held_out_correct")


def _recording(steps_class, calls):
    """A subclass of ``steps_class`` that appends ``(steps object, step, round or None)`` to ``calls`` before
    each step runs."""
    def wrap(name):
        def method(self, *args):
            calls.append((id(self), name, args[-1] if isinstance(args[-1], Round) else None))
            return getattr(steps_class, name)(self, *args)
        return method
    return type(f"Recording{steps_class.__name__}", (steps_class,), {name: wrap(name) for name in STEPS})


def test_plan_prunes_in_the_last_round_only_and_fine_tuning_only_differs_there():
    options = RunOptions(rounds=3)
    rounds = plan(options)
    assert [r.prune for r in rounds] == [False, False, True] and rounds[-1].last
    assert [(r.finetune.train, r.finetune.shrink, r.finetune.seed) for r in rounds] == [
        ("all", 0.5, 1), ("all", 0.5, 2), ("all", 0.5, 3)]
    head = plan(RunOptions(rounds=3, round_train="head"))  # shrinking head-only rounds hurt detection
    assert [(r.finetune.train, r.finetune.shrink) for r in head] == [("head", 1.0), ("head", 1.0), ("all", 0.5)]
    unpruned = plan(RunOptions(rounds=3, prune_ratio=None))
    assert unpruned[:-1] == rounds[:-1] and not unpruned[-1].prune


def test_bench_quality_and_denoise_run_make_the_same_stage_calls(tmp_path, monkeypatch):
    data, options = f"npz:{TINY}", RunOptions(rounds=2, epochs=2, round_epochs=1, relabel=True)
    noise, model = tmp_path / "noise.npz", tmp_path / "noisy.safetensors"
    inject_noise(data, "symmetric", 0.4, options.seed, noise)
    train(data, "mlp", model, Recipe(epochs=400), noise=noise, device="cpu")  # memorized: the last round prunes
    run_calls, bench_calls = [], []
    monkeypatch.setattr(pipeline, "FileSteps", _recording(stages.FileSteps, run_calls))
    monkeypatch.setattr(quality, "DetectorSteps", _recording(DetectorSteps, bench_calls))
    pipeline.run(model, data, tmp_path / "work", options, noise=noise, device="cpu")
    settings = quality.Settings("mlp", 400, 2, options, torch.device("cpu"), tuple(quality.METHODS))
    store = quality.Store([], None)
    quality.run_cell(data, "symmetric", 0.4, options.seed, ["attribution"], settings, tmp_path, "test", store)
    assert [row["method"] for row in store.rows[3:]] == ["finetune-only", "denoise", "denoise-relabel"]
    assert [name for _, name, _ in run_calls] == [
        "attribute", "partition", "choice", "hold_out", "finetune", "attribute", "partition", "sensitivity", "prune",
        "finetune", "held_out_correct", "held_out_correct"]  # the input model's, then the last round's
    assert [call[2].relabel for call in run_calls if call[1] == "finetune"] == [False, True]  # the last round's
    # the benchmark runs finetune-only (no pruning), denoise and denoise-relabel, each with its own steps, in order
    finetune_only, denoise, relabeling = ([call[1:] for call in bench_calls if call[0] == owner]
                                          for owner in dict.fromkeys(call[0] for call in bench_calls))
    assert relabeling == [call[1:] for call in run_calls]
    assert denoise == [(name, round and replace(round, relabel=False)) for _, name, round in run_calls]
    assert [name for name, _ in finetune_only] == [name for name, _ in denoise if name not in ("sensitivity", "prune")]


def _pair_flipped(rng, classes: int, per_class: int, share: float, spread: float):
    """Labels of which a random ``share`` were flipped from c + 1 to c, and attribution vectors that follow each
    sample's true class (a sparse pattern per class plus uniform noise of width ``spread``, 16 units):
    ``(labels, noisy, true, attribution)``."""
    labels = np.repeat(np.arange(classes), per_class)
    noisy = rng.uniform(size=len(labels)) < share
    patterns = rng.uniform(0, 3, (classes, 16)) * (rng.uniform(size=(classes, 16)) < 0.4)
    true = np.where(noisy, (labels + 1) % classes, labels)
    return labels, noisy, true, patterns[true] + rng.uniform(0, spread, (len(labels), 16))


def test_regime_is_chosen_from_the_fit_and_sets_the_detector_and_the_shrink():
    """Two small cases: a model that predicts every given label (memorized: the attribution mixture, shrunk
    fine-tuning) and one that predicts another class for the mislabeled third (generalizing: loss mixture)."""
    from denoise.core.regime import partition_scores

    rng = np.random.default_rng(0)
    labels, noisy, true, attribution = _pair_flipped(rng, 3, 60, 1 / 3, spread=0.3)
    memorized = {"attribution": attribution, "loss": rng.uniform(0, 1e-3, len(labels)), "predicted": labels}
    prob, record = partition_scores(memorized, labels)
    assert record.regime == "memorized" and record.detector == "attribution-mixture" and record.fit == 1.0
    assert ((prob < 0.5) == noisy).mean() > 0.95
    loss = np.where(noisy, rng.uniform(2, 4, len(labels)), rng.uniform(0, 0.5, len(labels)))
    generalizing = {**memorized, "loss": loss, "predicted": true}  # fits 2/3 of its labels
    prob, record = partition_scores(generalizing, labels)
    assert record.regime == "generalizing" and record.detector == "loss-mixture"
    assert ((prob < 0.5) == noisy).mean() > 0.95
    assert partition_scores(generalizing, labels, features="prototype")[1].detector == "attribution-mixture"
    options = RunOptions(rounds=2)
    assert [r.finetune.shrink for r in plan(options, Choice("memorized"))] == [0.5, 0.5]
    assert [r.finetune.shrink for r in plan(options, Choice("generalizing"))] == [1.0, 1.0]


def test_the_partition_does_not_depend_on_the_names_of_the_classes():
    """Renaming every class c as c + 1 (given labels and predictions alike) leaves each sample's clean probability
    and the record as they were, in both regimes. *Asymmetric 60 % cannot hold beside asymmetric 40 %* (docs/quality.md
    at 601ddc7) rests on this: so renamed, 60 % forward pair flips are 40 % backward ones, treated alike."""
    from denoise.core.regime import partition_scores

    rng = np.random.default_rng(3)
    classes = 4
    labels, noisy, true, attribution = _pair_flipped(rng, classes, 80, 0.3, spread=2.0)
    scores = {"attribution": attribution,
              "loss": np.where(noisy, rng.uniform(1, 4, len(labels)), rng.uniform(0, 1, len(labels))),
              "input_high_pass": rng.normal(-2.2, 0.7, len(labels))}
    generalizing = np.where(noisy & (rng.uniform(size=len(labels)) < 0.5), true, labels)  # fits about 85 %
    for regime, predicted in (("memorized", labels), ("generalizing", generalizing)):
        prob, record = partition_scores({**scores, "predicted": predicted}, labels)
        renamed = partition_scores({**scores, "predicted": (predicted + 1) % classes}, (labels + 1) % classes)
        assert record.regime == regime and 0 < (prob < 0.5).mean() < 1
        np.testing.assert_allclose(renamed[0], prob, atol=1e-9)
        assert renamed[1].to_json().keys() == record.to_json().keys()
        for key, value in record.to_json().items():
            assert renamed[1].to_json()[key] == (pytest.approx(value) if isinstance(value, float) else value)


def test_where_the_model_generalizes_a_flagged_sample_it_predicts_as_labeled_is_called_clean():
    """Hard clean samples (high loss, yet predicted as their label) join the loss mixture's noisy component; a model
    that did not memorize its labels and still predicts the given one clears them. A memorizing model's
    predictions clear nothing."""
    from denoise.core.regime import partition_scores

    rng = np.random.default_rng(2)
    labels = np.repeat(np.arange(3), 100)
    noisy = rng.uniform(size=len(labels)) < 0.2
    hard = ~noisy & (rng.uniform(size=len(labels)) < 0.2)
    predicted = np.where(noisy, (labels + 1) % 3, labels)
    loss = np.where(noisy | hard, rng.uniform(2, 4, len(labels)), rng.uniform(0, 0.5, len(labels)))
    scores = {"attribution": rng.uniform(0, 1, (len(labels), 8)), "loss": loss, "predicted": predicted}
    prob, record = partition_scores(scores, labels)
    assert record.regime == "generalizing" and record.detector == "loss-mixture"
    assert np.array_equal(prob < 0.5, noisy) and (prob[hard] == 1).all()
    assert record.cleared_by_prediction == hard.mean() > 0.1
    prob, record = partition_scores({**scores, "predicted": labels, "loss": loss * 1e-4}, labels, features="loss")
    assert record.regime == "memorized" and record.cleared_by_prediction is None
    assert (prob[noisy | hard] < 0.5).mean() > 0.9  # the mixture's own split, with no prediction to clear it


def test_corrupted_inputs_are_split_by_their_high_pass_energy_in_either_regime_not_by_natural_spread():
    """Inputs of a natural spread of high-pass energy (one broad Gaussian) leave every class clean and the regime's
    label mixture detects; half of them with noise that raises it 5.9 nats are what the partition flags, whether
    the model generalizes or memorized its labels, and the plan is then one round of CORRUPTED_EPOCHS."""
    from denoise.core.regime import input_clean_probability, partition_scores
    from denoise.core.rounds import CORRUPTED_EPOCHS
    from denoise.core.suspects import separating_score

    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(4), 150)
    corrupted = rng.uniform(size=len(labels)) < 0.5
    natural = rng.normal(-2.22, 0.69, len(labels))  # CIFAR-10 images' high-pass energies: -2.22 +- 0.69
    assert (input_clean_probability(natural, labels) == 1).all()
    raised = np.where(corrupted, rng.normal(3.70, 0.03, len(labels)), natural)  # sigma 4.5 Gaussian noise: 3.70
    assert ((input_clean_probability(raised, labels) < 0.5) == corrupted).all()
    loss = rng.uniform(0, 3, len(labels))
    scores = {"attribution": rng.uniform(0, 1, (len(labels), 8)), "loss": loss,
              "predicted": np.where(rng.uniform(size=len(labels)) < 0.5, labels, (labels + 1) % 4)}
    for regime, predicted in (("generalizing", scores["predicted"]), ("memorized", labels)):
        prob, record = partition_scores({**scores, "predicted": predicted, "input_high_pass": raised}, labels)
        assert record.regime == regime and record.detector == "input-energy-mixture"
        assert ((prob < 0.5) == corrupted).all() and abs(record.corrupted_inputs - corrupted.mean()) < 1e-12
        [only] = plan(RunOptions(), Choice.of(record.to_json()))
        assert (only.finetune.epochs, only.prune) == (CORRUPTED_EPOCHS, regime == "memorized")
    name, score = separating_score({**scores, "input_high_pass": raised}, labels, record.detector)  # the report's
    assert name == "input high-pass energy (log)" and np.array_equal(score, raised)
    record = partition_scores({**scores, "input_high_pass": natural}, labels)[1]
    assert record.detector == "loss-mixture" and record.corrupted_inputs == 0
    record = partition_scores({**scores, "predicted": labels, "input_high_pass": natural}, labels)[1]
    assert record.detector == "attribution-mixture" and record.corrupted_inputs == 0
    assert partition_scores(scores, labels)[1].corrupted_inputs is None  # a score file from before the check


def test_a_few_outliers_or_one_odd_class_are_not_corrupted_inputs():
    """A class's split counts only where its smaller component holds INPUT_MIN_SHARE of it (two far outliers do
    not), and the inputs count as corrupted only where at least half the classes split (one class of four with a
    distinct high-energy half does not; two do)."""
    from denoise.core.regime import input_clean_probability

    rng = np.random.default_rng(2)
    labels = np.repeat(np.arange(4), 150)
    natural = rng.normal(-2.22, 0.69, len(labels))
    outliers = natural.copy()
    outliers[:2] = 6.0  # two samples of class 0, far above the rest: Ashman's D far beyond the bound
    assert (input_clean_probability(outliers, labels) == 1).all()
    half = np.arange(len(labels)) % 2 == 1
    odd = np.where(half & (labels == 0), rng.normal(3.70, 0.03, len(labels)), natural)
    assert (input_clean_probability(odd, labels) == 1).all()
    two = np.where(half & (labels < 2), rng.normal(3.70, 0.03, len(labels)), natural)
    assert ((input_clean_probability(two, labels) < 0.5) == (half & (labels < 2))).all()


def right(count: int, samples: int, first: int = 0) -> np.ndarray:
    """(samples,) bool: ``count`` samples classified right, from row ``first`` on (wrapping round)."""
    return np.roll(np.arange(samples) < count, first)


def test_no_harm_rule_keeps_the_cleaned_model_unless_it_is_worse_beyond_paired_sampling_error():
    from denoise.core.selection import choose

    assert choose(right(84, 84), "round3", right(82, 84), "memorized")[0] == "round3"  # 1.0 vs 0.976: 2 against 0
    chosen, record = choose(right(84, 84), "round3", right(60, 84))
    assert chosen == "input" and record.accuracy == {"input": 1.0, "round3": 60 / 84}
    assert record.only_right == {"input": 24, "round3": 0}
    # a memorized input scores its fit on the held-out samples: fsdd's 1.0 vs 0.865 (test 0.71 -> 0.89)
    assert choose(right(111, 111), "round5", right(96, 111))[0] == "input"
    assert choose(right(111, 111), "round5", right(96, 111), "memorized")[0] == "round5"
    assert choose(right(111, 111), "round5", right(37, 111), "memorized")[0] == "input"  # a wrecked fine-tune
    assert choose(right(0, 0), "round3", right(0, 0))[0] == "round3"  # no held-out sample: no evidence against it
    # paired: the same accuracies (0.529 vs 0.487 on 639 samples, CIFAR-10's asymmetric 40 % validation cell) mean
    # harm where the cleaned model loses 42 samples and wins 15 (McNemar z -3.6), not where the two models
    # disagree on half the samples (validation samples: the input never trained on them)
    assert choose(right(338, 639), "round1", right(311, 639, first=42), trained_on=False)[0] == "input"  # 42 vs 15
    assert choose(right(338, 639), "round1", right(311, 639, first=320), trained_on=False)[0] == "round1"  # 320 vs 293


def test_where_the_input_generalizes_held_out_samples_keep_the_cleaned_model_only_if_it_is_as_accurate():
    from denoise.core.selection import choose

    chosen, record = choose(right(338, 639), "round1", right(311, 639, first=320))  # within 2 paired SE, but behind
    assert chosen == "input" and record.tolerance == 0.0
    assert choose(right(338, 639), "round1", right(338, 639, first=300))[0] == "round1"  # as accurate: kept
    # the fine-tune of corrupted inputs (CIFAR-10 validation cell: 20 against 45 on 398 held-out samples)
    assert choose(right(174, 398), "round1", right(199, 398, first=20))[0] == "round1"
    assert choose(right(174, 398), "round1", right(199, 398, first=20), "memorized")[1].tolerance > 0.2


def test_run_hands_back_the_input_model_when_fine_tuning_hurts(denoise, tmp_path, monkeypatch):
    """A learning rate that wrecks the fine-tune: the held-out samples show it, and run returns the input."""
    model = tmp_path / "m.safetensors"
    trained = denoise("train", "--data", f"npz:{TINY}", "--arch", "mlp", "--epochs", 30, "--out", model, "--json")
    assert trained.code == 0 and trained.json["train_accuracy"] > 0.9
    result = denoise("run", "--model", model, "--data", f"npz:{TINY}", "--workdir", tmp_path / "work", "--rounds", 1,
                     "--lr", 30, "--epochs", 3, "--holdout", 0.5, "--device", "cpu", "--json")
    assert result.code == 0, result.err
    record = result.json
    assert record["chosen"] == "input" and record["model"] == str(model)
    assert record["no_harm"]["accuracy"]["round1"] < record["no_harm"]["accuracy"]["input"]
    assert "handing back the input model" in result.err and "--validation SPEC" in result.err
    run_json = json.loads((tmp_path / "work" / "run.json").read_text())
    assert run_json["chosen"] == "input" and run_json["no_harm"] == record["no_harm"]
    # the report's labels still come from the fine-tuned model (the input predicts the labels it memorized), and
    # it reads the run's scores with their (N, U) attributions left on disk
    from denoise.cli.report import run_files

    loads, load_npz = [], run_files.load_npz
    monkeypatch.setattr(run_files, "load_npz", lambda path, kind, **kw: loads.append((kind, kw.get("on_disk")))
                        or load_npz(path, kind, **kw))
    report = denoise("report", "--workdir", tmp_path / "work", "--out", tmp_path / "report.html", "--json")
    assert report.code == 0, report.err
    assert report.json["suggested_by"] == f"model {tmp_path / 'work' / 'round1' / 'clean.safetensors'}"
    scores_loads = [on_disk for kind, on_disk in loads if kind == "scores"]
    assert scores_loads and all("attribution" in (on_disk or ()) for on_disk in scores_loads)


def _attribution_fixture(like_true_class: float, jitter: float, seed: int) -> tuple[dict, np.ndarray]:
    """Scores of a model that fits every label (3 classes x 80, a third mislabeled): each mislabeled
    sample's attribution pattern is ``like_true_class`` its true class's, the rest its given one's."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(3), 80)
    true = np.where(rng.uniform(size=len(labels)) < 1 / 3, (labels + 1) % 3, labels)
    patterns = rng.uniform(0, 3, (3, 16)) * (rng.uniform(size=(3, 16)) < 0.4)
    attribution = ((1 - like_true_class) * patterns[labels] + like_true_class * patterns[true]
                   + rng.uniform(0, jitter, (len(labels), 16)))
    return {"attribution": attribution, "loss": rng.uniform(0, 1e-3, len(labels)), "predicted": labels}, labels


def test_round_one_keeps_the_attribution_block_only_where_its_split_separates_the_margin():
    """Where the split with the attribution block leaves two components far apart in the prototype margin
    the block stays; where they overlap it is left out. Later rounds see round 1's choice; the rounds are
    the same all-layer ones either way. Options given explicitly still win."""
    from denoise.core.regime import SEPARATION, margin_separation, partition_scores

    kept = partition_scores(*_attribution_fixture(1.0, 0.3, seed=0))[1]
    assert kept.features == "prototype,attribution,loss" and kept.separation >= SEPARATION
    left_out = partition_scores(*_attribution_fixture(0.3, 2.0, seed=1))[1]
    assert left_out.features == "prototype,loss" and left_out.separation < SEPARATION
    kept, left_out = Choice.of(kept.to_json()), Choice.of(left_out.to_json())
    for choice in (kept, left_out):
        rounds = plan(RunOptions(), choice)
        assert [(r.finetune.train, r.finetune.epochs, r.finetune.shrink) for r in rounds[:-1]] == [("all", 10, 0.5)] * 3
        assert rounds[-1].finetune.epochs == 15 < Recipe.epochs  # all-layer rounds forgot the noise: a shorter last fine-tune
        assert [r.features for r in rounds] == ["auto"] + [choice.features] * 3 and rounds[-1].prune
    assert [r.finetune.train for r in plan(RunOptions(rounds=2, round_train="head"), left_out)] == ["head", "all"]
    explicit = plan(RunOptions(features="prototype,attribution,loss"), left_out)
    assert {r.features for r in explicit} == {"prototype,attribution,loss"}
    loss = plan(RunOptions(rounds=2), Choice("generalizing", detector="loss-mixture"))
    assert [r.features for r in loss] == ["auto", "auto"]  # no features recorded: later rounds choose again
    # later rounds (choose_block False) and explicit features do not choose
    assert "separation" not in partition_scores(*_attribution_fixture(0.3, 2.0, seed=1), choose_block=False)[1].to_json()
    assert partition_scores(*_attribution_fixture(0.3, 2.0, seed=1), features="prototype,attribution,loss")[1].features == "prototype,attribution,loss"
    labels = np.repeat(np.arange(2), 5)
    assert margin_separation(np.arange(10.0), labels, np.ones(10)) is None  # nothing flagged: no evidence


def test_a_generalizing_model_gets_one_round_with_a_shorter_fine_tune_unless_options_say_otherwise():
    """The loss mixture of a model that did not memorize its labels detects in one round: the plan is a
    single round of GENERALIZING_SCHEDULE.epochs, neither pruned nor shrunk; explicit --rounds and --epochs still win."""
    from denoise.core.regime import GENERALIZING
    from denoise.core.rounds import CORRUPTED_EPOCHS, GENERALIZING_SCHEDULE

    choice = Choice(GENERALIZING)
    [only] = plan(RunOptions(), choice)
    assert (only.last, only.prune, only.finetune.shrink) == (True, False, 1.0)
    assert only.finetune.epochs == GENERALIZING_SCHEDULE.epochs
    corrupted = Choice(GENERALIZING, detector="input-energy-mixture")  # what the fine-tune learns from takes longer
    assert plan(RunOptions(), corrupted)[0].finetune.epochs == CORRUPTED_EPOCHS
    assert plan(RunOptions(epochs=7), corrupted)[0].finetune.epochs == 7
    assert plan(RunOptions(prune_generalizing=True), choice)[0].prune  # an explicit --ratio prunes it
    assert RunOptions().resolved(choice).rounds == 1
    assert [r.finetune.epochs for r in plan(RunOptions(rounds=2, epochs=7), choice)] == [10, 7]
    memorized = plan(RunOptions(), Choice("memorized"))[-1]
    assert (memorized.finetune.epochs, memorized.prune) == (15, True)
