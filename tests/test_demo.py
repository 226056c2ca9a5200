"""`denoise demo`: the README's main job, end to end on the embedded digits set."""

import math

import pytest

from conftest import TINY


@pytest.mark.slow
def test_demo_json_has_the_documented_shape(denoise, tmp_path):
    result = denoise("demo", "--workdir", tmp_path, "--json")
    assert result.code == 0, result.err
    report = result.json
    assert report["dataset"] == "digits" and report["noise"] == {"kind": "symmetric", "rate": 0.4}
    assert set(report["detection"]) == {"precision", "recall", "f1", "auroc", "flagged"}
    assert [row["name"] for row in report["rows"]] == ["noisy", "retrain", "finetune-only", "denoise"]
    for row in report["rows"]:
        assert 0 <= row["test_accuracy"] <= 1 and row["seconds"] > 0 and math.isfinite(row["seconds"])
    accuracy = {row["name"]: row["test_accuracy"] for row in report["rows"]}
    assert report["noisy_fit"] > 0.95, "the noisy model should fit the noisy labels"
    assert accuracy["denoise"] > accuracy["noisy"], "cleaning made the model worse"
    assert (tmp_path / "denoise" / "round4" / "clean.safetensors").is_file()


def test_demo_table_without_json(denoise, tmp_path):
    result = denoise("demo", "--workdir", tmp_path, "--epochs", 3, "--data", f"npz:{TINY}")
    assert result.code == 0, result.err
    for name in ("noisy", "retrain", "finetune-only", "denoise", "detection"):
        assert name in result.out


def test_demo_rerun_reuses_the_trained_models_and_redoes_the_cleaning(denoise, tmp_path):
    args = ("demo", "--workdir", tmp_path, "--epochs", 3, "--data", f"npz:{TINY}", "--device", "cpu", "--json")
    first, second = denoise(*args), denoise(*args)  # on the CPU, where reruns are bit-identical
    assert first.code == 0 and second.code == 0, first.err + second.err
    rows = [{row["name"]: row for row in result.json["rows"]} for result in (first, second)]
    for name in ("noisy", "retrain"):
        assert rows[0][name] == rows[1][name]  # reused: same model, same recorded wall time
    assert rows[0]["denoise"]["test_accuracy"] == rows[1]["denoise"]["test_accuracy"]
    assert rows[0]["denoise"]["seconds"] != rows[1]["denoise"]["seconds"]  # cleaning was run again


def test_demo_takes_a_noise_file_instead_of_injecting(denoise, tmp_path):
    noise = tmp_path / "mine.npz"
    assert denoise("inject-noise", "--data", f"npz:{TINY}", "--kind", "asymmetric", "--rate", 0.2, "--out", noise).code == 0
    result = denoise("demo", "--workdir", tmp_path / "work", "--epochs", 2, "--data", f"npz:{TINY}", "--noise", noise,
                     "--json")
    assert result.code == 0, result.err
    assert result.json["noise"] == {"kind": "asymmetric", "rate": 0.2}
    assert not (tmp_path / "work" / "noise.npz").exists()
    wrong = denoise("demo", "--workdir", tmp_path / "other", "--epochs", 2, "--data", "digits", "--noise", noise)
    assert wrong.code == 2 and "mine.npz" in wrong.err
