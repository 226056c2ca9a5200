"""One copy of the method: ``denoise run`` (files) and ``bench quality`` (memory) walk the same rounds."""

import torch

from cli import pipeline, stages
from cli.bench import quality
from cli.data.noise import inject_noise
from cli.model_commands import train
from conftest import TINY
from unlearn_core.rounds import MemorySteps, RunOptions, plan
from unlearn_core.training import Recipe

STEPS = ("attribute", "partition", "sensitivity", "prune", "finetune")


def _recording(steps_class, calls):
    """A subclass of ``steps_class`` that appends ``(stage, round)`` to ``calls`` before each stage runs."""
    def wrap(name):
        def method(self, *args):
            calls.append((name, args[-1]))
            return getattr(steps_class, name)(self, *args)
        return method
    return type(f"Recording{steps_class.__name__}", (steps_class,), {name: wrap(name) for name in STEPS})


def test_plan_prunes_in_the_last_round_only_and_fine_tuning_only_differs_there():
    options = RunOptions(rounds=3)
    rounds = plan(options)
    assert [r.prune for r in rounds] == [False, False, True] and rounds[-1].last
    assert [(r.finetune.train, r.finetune.shrink, r.finetune.seed) for r in rounds] == [
        ("head", 1.0, 1), ("head", 1.0, 2), ("all", 0.5, 3)]
    unpruned = plan(RunOptions(rounds=3, prune_ratio=None))
    assert unpruned[:-1] == rounds[:-1] and not unpruned[-1].prune


def test_bench_quality_and_denoise_run_make_the_same_stage_calls(tmp_path, monkeypatch):
    data, options = f"npz:{TINY}", RunOptions(rounds=2, epochs=2, round_epochs=1)
    noise, model = tmp_path / "noise.npz", tmp_path / "noisy.safetensors"
    inject_noise(data, "symmetric", 0.4, options.seed, noise)
    train(data, "mlp", model, Recipe(epochs=2), noise=noise, device="cpu")
    run_calls, bench_calls = [], []
    monkeypatch.setattr(pipeline, "FileSteps", _recording(stages.FileSteps, run_calls))
    monkeypatch.setattr(quality, "MemorySteps", _recording(MemorySteps, bench_calls))
    pipeline.run(model, data, tmp_path / "work", options, noise=noise, device="cpu")
    settings = quality.Settings("mlp", 2, 2, options, torch.device("cpu"))
    quality.run_cell(data, "symmetric", 0.4, options.seed, ["attribution"], settings, tmp_path, "test")
    assert [name for name, _ in run_calls] == ["attribute", "partition", "finetune",
                                               "attribute", "partition", "sensitivity", "prune", "finetune"]
    # the benchmark also fine-tunes without pruning in the last round (finetune-only): set that call aside
    finetune_only = [call for call in bench_calls if call[1].last and not call[1].prune]
    assert [name for name, _ in finetune_only] == ["finetune"]
    assert [call for call in bench_calls if call not in finetune_only] == run_calls
