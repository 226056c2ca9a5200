"""``denoise run --validation SPEC``: samples the input model was not trained on decide the no-harm check."""

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest

from denoise.cli.errors import InputError
from denoise.cli.model_commands import train
from conftest import TINY, cli_process
from denoise.core.errors import OptionError
from denoise.core.selection import NO_HARM_Z, check_holdout, choose
from denoise.core.training import Recipe


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A model that fits tiny.npz's train split, and its 30 test samples written as a validation file."""
    folder = tmp_path_factory.mktemp("validation")
    model, validation = folder / "model.safetensors", folder / "validation.npz"
    train(f"npz:{TINY}", "mlp", model, Recipe(epochs=30), device="cpu")
    arrays = np.load(TINY)
    test = arrays["split"].astype(str) == "test"
    np.savez(validation, x=arrays["x"][test], y=arrays["y"][test], classes=arrays["classes"])
    return SimpleNamespace(model=model, validation=validation, arrays={"x": arrays["x"][test], "y": arrays["y"][test],
                                                                       "classes": arrays["classes"]})


def _run(model, work, epochs=2):
    return ("run", "--model", model, "--data", f"npz:{TINY}", "--workdir", work, "--rounds", 1, "--epochs", epochs,
            "--ratio", 0, "--device", "cpu")


def test_validation_decides_and_nothing_is_held_out_of_fine_tuning(denoise, files, tmp_path):
    work = tmp_path / "work"
    held = denoise(*_run(files.model, work), "--json")
    assert held.code == 0, held.err
    assert held.json["no_harm"]["source"] == "holdout" and held.json["validation"] is None
    # the input fits its labels and trained on the held-out samples: a pass there can't see small harm, and says so
    assert held.json["no_harm"]["regime"] == "memorized" and held.json["chosen"] == "round1"
    blind = f"sees only a loss of more than {held.json['no_harm']['tolerance']:.2f} in accuracy"
    assert blind in held.err and "--validation SPEC" in held.err
    validated = denoise(*_run(files.model, work), "--validation", f"npz:{files.validation}", "--json")
    assert validated.code == 0, validated.err
    record = validated.json
    assert record["no_harm"]["source"] == "validation" and record["no_harm"]["held_out"] == 30
    assert record["chosen"] == "round1" and "sees only a loss" not in validated.err  # samples it never trained on
    assert record["no_harm"]["tolerance"] is not None and record["validation"] == f"npz:{files.validation}"
    assert record["options"]["holdout"] == 0 and "holdout" not in record["rounds"][0]
    finetune = record["rounds"][0]["finetune"]
    assert not finetune.get("skipped")  # the earlier fine-tune left the held-out samples out: made again
    assert finetune["clean_samples"] == np.load(work / "round1" / "partition.npz")["is_clean"].sum()
    assert json.loads((work / "run.json").read_text())["no_harm"] == record["no_harm"]
    # another validation split: every stage is current, and the choice is made afresh on the new samples
    other = denoise(*_run(files.model, work), "--validation", f"npz:{files.validation}?per_class=5", "--json")
    assert other.code == 0, other.err
    assert all(summary["skipped"] for stage, summary in other.json["rounds"][0].items() if stage != "round")
    assert other.json["no_harm"]["held_out"] == 15 and other.json["no_harm"]["source"] == "validation"


def test_validation_hands_back_the_input_when_fine_tuning_hurts(denoise, files, tmp_path):
    result = denoise(*_run(files.model, tmp_path / "work", epochs=3), "--lr", 30, "--validation",
                     f"npz:{files.validation}", "--json")
    assert result.code == 0, result.err
    assert result.json["chosen"] == "input" and result.json["model"] == str(files.model)
    accuracy = result.json["no_harm"]["accuracy"]
    assert accuracy["round1"] < accuracy["input"]
    assert "worse than the input on 30 validation samples" in result.err
    assert "handing back the input model" in result.err and "--validation SPEC" not in result.err


def test_on_validation_samples_the_tolerance_is_sampling_error_alone():
    # fsdd's memorized input: 1.0 vs 0.865 on 111 held-out samples; the margin for its fit keeps the cleaned model
    everything, most = np.ones(111, dtype=bool), np.arange(111) < 96
    assert choose(everything, "round5", most, "memorized")[0] == "round5"
    chosen, record = choose(everything, "round5", most, "memorized", trained_on=False)
    assert record.tolerance == pytest.approx(NO_HARM_Z * math.sqrt(111 - 96) / 111)
    assert chosen == "input" and record.source == "validation"
    assert choose(everything, "round5", most, "memorized")[1].source == "holdout"
    assert choose(most[:0], "round5", most[:0], trained_on=False)[1].source == "validation"
    check_holdout(0, validation=True)
    with pytest.raises(OptionError, match="must be 0 with validation samples"):
        check_holdout(0.1, validation=True)


@pytest.mark.parametrize("case, write, problem", [
    ("other class names", lambda a, path: np.savez(path, x=a["x"], y=a["y"], classes=np.array(["a", "b", "c"])),
     "label 0 is 'a' here but 'zero' in --data"),
    ("a class missing", lambda a, path: np.savez(path, x=a["x"][a["y"] < 2], y=a["y"][a["y"] < 2]),
     "has 2 classes, --data 3"),
    ("other input shape", lambda a, path: np.savez(path, x=a["x"][:, :, :4, :4], y=a["y"], classes=a["classes"]),
     "samples have shape [1, 4, 4] but the model expects [1, 8, 8]"),
    ("not an npz", lambda a, path: path.write_text("not an archive"), "not a .npz file"),
    ("no such file", lambda a, path: None, "no such file or directory"),
])
def test_a_validation_split_that_does_not_fit_is_refused_before_any_stage(denoise, files, tmp_path, case, write,
                                                                           problem):
    path, work = tmp_path / "validation.npz", tmp_path / "work"
    write(files.arrays, path)
    result = denoise(*_run(files.model, work), "--validation", f"npz:{path}")
    assert result.code == 2, result.err
    assert result.err.count("\n") == 1 and str(path) in result.err and problem in result.err
    assert not list(work.glob("round*"))


def test_validation_with_a_holdout_is_a_usage_error(files, tmp_path):
    process = cli_process(*_run(files.model, tmp_path / "work"), "--validation", f"npz:{files.validation}",
                          "--holdout", 0.2)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 1
    assert err == "denoise: error: --holdout must be 0 with validation samples (they decide; nothing is held out), " \
                  "got 0.2\n"
    assert not (tmp_path / "work").exists() or not list((tmp_path / "work").glob("round*"))


class Killed(Exception):
    """Stands for a SIGKILL right after a fine-tune wrote its resume state."""


def test_a_fine_tune_killed_with_held_out_samples_does_not_resume_on_all_of_them(files, tmp_path, monkeypatch):
    """A run killed in round 1's fine-tune and run again with --validation: the resume state left the held-out
    samples out, so it is refused rather than finished on every sample."""
    from denoise.cli import fit, stages

    data, scores, partition = f"npz:{TINY}", tmp_path / "scores.npz", tmp_path / "partition.npz"
    held = tmp_path / "holdout.npz"
    stages.attribute(files.model, data, scores, device="cpu")
    stages.partition(scores, partition)
    stages.hold_out(partition, held, fraction=0.1)
    out, save_state = tmp_path / "clean.safetensors", fit._save_state

    def killed(*args):
        save_state(*args)
        raise Killed

    monkeypatch.setattr(fit, "_save_state", killed)
    with pytest.raises(Killed):
        stages.finetune(files.model, data, partition, out, Recipe(epochs=2), exclude=held, device="cpu")
    monkeypatch.setattr(fit, "_save_state", save_state)
    with pytest.raises(InputError, match="other options or input files"):
        stages.finetune(files.model, data, partition, out, Recipe(epochs=2), resume=True, device="cpu")
    assert stages.finetune(files.model, data, partition, out, Recipe(epochs=2), exclude=held, resume=True,
                           device="cpu")["epochs"] == 2
