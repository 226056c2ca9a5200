"""Sharding by index and torchrun: the files of a distributed or sharded run are those of one process."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from cli.distributed import join
from cli.files.checkpoint import read_metadata
from cli.files.stage_files import read_npz_arrays
from cli.files.streaming import StoredRows
from unlearn_core.errors import OptionError
from unlearn_core.sensitivity import UnitMoments
from unlearn_core.shards import CoverageError, batch_share, missing, owners, parse_shard, shard_rows
from conftest import ROOT, TINY

ODD = f"npz:{TINY}?per_class=25"  # 75 training samples: not a multiple of 2 (nor of 2 ranks' batch split)


# --- the pure parts ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("samples,count", [(75, 2), (10, 3), (7, 7), (5, 1)])
def test_shards_hold_every_index_exactly_once(samples, count):
    rows = [shard_rows(samples, number, count) for number in range(count)]
    assert np.array_equal(np.sort(np.concatenate(rows)), np.arange(samples))
    assert max(map(len, rows)) - min(map(len, rows)) <= 1  # nothing padded, nothing dropped
    part, row = owners(rows, samples)
    assert len(missing(part)) == 0 and all(np.array_equal(rows[k][row[rows[k]]], rows[k]) for k in range(count))


def test_owners_name_the_overlapping_and_the_out_of_range_part():
    with pytest.raises(CoverageError) as overlap:
        owners([np.array([0, 2]), np.array([1]), np.array([2, 3])], 4)
    assert (overlap.value.part, overlap.value.other) == (2, 0)
    with pytest.raises(CoverageError) as outside:
        owners([np.array([0, 9])], 4)
    assert outside.value.part == 0
    part, _ = owners([np.array([0]), np.array([3])], 4)
    assert list(missing(part)) == [1, 2]


@pytest.mark.parametrize("text", ["2/2", "1", "a/b", "-1/3", "0/0"])
def test_parse_shard_rejects_what_is_not_i_of_n(text):
    with pytest.raises(OptionError):
        parse_shard(text)
    assert parse_shard("1/3") == (1, 3)


@pytest.mark.parametrize("batch", [7, 1])
def test_ranks_gradients_averaged_equal_the_gradient_of_the_batch_mean(batch):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    inputs, labels = torch.randn(batch, 4), torch.randint(0, 3, (batch,))
    positions, world = torch.randperm(batch), 2

    def gradient(rows, factor=1.0):
        model.zero_grad()
        (torch.nn.functional.cross_entropy(model(inputs[rows]), labels[rows]) * factor).backward()
        return model.weight.grad.clone()

    shares = [batch_share(positions, rank, world) for rank in range(world)]
    averaged = sum(gradient(rows, factor) for rows, factor in shares) / world  # what DDP's all-reduce gives
    assert torch.allclose(averaged, gradient(positions), atol=1e-6)
    assert sorted(torch.cat([rows for rows, factor in shares if factor]).tolist()) == list(range(batch))


def test_moments_summed_across_processes_equal_one_block():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(31, 5)) * 3 + 7, rng.random(31) < 0.3
    parts = [shard_rows(31, number, 3) for number in range(3)]
    slots, barrier, merged = [None] * 3, threading.Barrier(3), [None] * 3

    def process(k):  # three threads stand in for three ranks; sum_across is their all-reduce
        def sum_across(values):
            slots[k] = values
            barrier.wait()
            total = sum(slots)
            barrier.wait()
            return total

        merged[k] = UnitMoments().update(x[parts[k]], y[parts[k]]).summed(sum_across).solve()

    threads = [threading.Thread(target=process, args=(k,)) for k in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    whole = UnitMoments().update(x, y).solve()
    for result in merged:
        for name in ("coefficient", "r2", "mean", "std"):
            assert np.allclose(result[name], whole[name], atol=1e-10)
        assert np.array_equal(result["rank"], whole["rank"])


def test_join_selects_the_gpu_before_the_nccl_group_and_takes_gloo_on_the_cpu(monkeypatch):
    calls = []
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: False)
    monkeypatch.setattr(torch.distributed, "init_process_group", lambda backend: calls.append(("group", backend)))
    monkeypatch.setattr(torch.distributed, "get_rank", lambda: 1)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", lambda index: calls.append(("gpu", index)))
    ranks = join(torch.device("cuda"))
    assert calls == [("gpu", 1), ("group", "nccl")] and (ranks.rank, ranks.world, ranks.main) == (1, 2, False)
    calls.clear()
    join(torch.device("cpu"))
    assert calls == [("group", "gloo")]
    monkeypatch.setenv("WORLD_SIZE", "1")
    calls.clear()
    assert join(torch.device("cpu")).world == 1 and calls == []  # one process: no group at all


# --- --shard and merge, in process ------------------------------------------------------------------------------

def _ok(result):
    assert result.code == 0, result.err
    return result.json


@pytest.fixture
def trained(denoise, tmp_path):
    """A noise file, a small MLP trained on ODD's noisy labels, its scores and partition."""
    noise, model = tmp_path / "noise.npz", tmp_path / "noisy.safetensors"
    _ok(denoise("inject-noise", "--data", ODD, "--kind", "symmetric", "--rate", 0.3, "--out", noise, "--json"))
    _ok(denoise("train", "--data", ODD, "--noise", noise, "--arch", "mlp", "--epochs", 20, "--out", model, "--json"))
    _ok(denoise("attribute", "--model", model, "--data", ODD, "--noise", noise, "--out", tmp_path / "scores.npz",
                "--json"))
    _ok(denoise("partition", "--scores", tmp_path / "scores.npz", "--out", tmp_path / "partition.npz", "--json"))
    return {"noise": noise, "model": model, "scores": tmp_path / "scores.npz", "partition": tmp_path / "partition.npz"}


def _shards(denoise, tmp_path, trained, count, *extra):
    files = []
    for number in range(count):
        files.append(tmp_path / f"scores-{number}{'-'.join(map(str, extra))}.npz")
        _ok(denoise("attribute", "--model", trained["model"], "--data", ODD, "--noise", trained["noise"], *extra,
                    "--shard", f"{number}/{count}", "--out", files[-1], "--json"))
    return files


def _same_scores(path, reference, world_size, atol=0.0):
    with np.load(path, allow_pickle=False) as got, np.load(reference, allow_pickle=False) as want:
        assert got.files == want.files
        assert np.array_equal(got["index"], want["index"]) and np.array_equal(got["label"], want["label"])
        for name in want.files:
            if name != "meta":
                assert got[name].dtype == want[name].dtype
                assert np.abs(got[name].astype(float) - want[name].astype(float)).max() <= atol, name
        meta, single = json.loads(str(got["meta"])), json.loads(str(want["meta"]))
    assert meta["world_size"] == world_size and single["world_size"] == 1
    del meta["world_size"], single["world_size"]
    assert meta == single


def test_shards_merged_in_any_order_are_the_single_process_file(denoise, tmp_path, trained):
    files = _shards(denoise, tmp_path, trained, 3)
    with np.load(files[1], allow_pickle=False) as shard:
        assert list(shard["index"]) == list(range(1, 75, 3))
    merged = _ok(denoise("merge", files[2], files[0], files[1], "--out", tmp_path / "merged.npz", "--json"))
    assert merged == {"out": str(tmp_path / "merged.npz"), "shards": 3, "samples": 75}
    _same_scores(tmp_path / "merged.npz", trained["scores"], world_size=3)
    # partition reads the merged attributions a class at a time from disk, as it does a single process's
    assert isinstance(read_npz_arrays(tmp_path / "merged.npz", ("attribution",))["attribution"], StoredRows)
    _ok(denoise("partition", "--scores", tmp_path / "merged.npz", "--out", tmp_path / "p.npz", "--json"))
    with np.load(tmp_path / "p.npz") as got, np.load(trained["partition"]) as want:
        assert np.array_equal(got["is_clean"], want["is_clean"])


def test_sensitivity_shards_merged_are_the_single_process_file(denoise, tmp_path, trained):
    args = ["sensitivity", "--model", trained["model"], "--data", ODD, "--noise", trained["noise"],
            "--partition", trained["partition"], "--layer", "features.1", "--json"]
    _ok(denoise(*args, "--out", tmp_path / "single.npz"))
    files = [tmp_path / f"moments-{number}.npz" for number in range(2)]
    assert [_ok(denoise(*args, "--shard", f"{number}/2", "--out", files[number]))["samples"] for number in range(2)
            ] == [38, 37]
    _ok(denoise("merge", files[1], files[0], "--out", tmp_path / "merged.npz", "--json"))
    with np.load(tmp_path / "merged.npz") as got, np.load(tmp_path / "single.npz") as want:
        assert got.files == want.files and json.loads(str(got["meta"]))["world_size"] == 2
        for name in ("coefficient", "r2", "mean", "std"):
            assert np.abs(got[name] - want[name]).max() < 1e-9, name
        assert np.array_equal(got["rank"], want["rank"])
    lost = denoise("merge", files[1], "--out", tmp_path / "lost.npz")
    assert lost.code == 2 and "shard 0/2: is missing" in lost.err
    scores = _shards(denoise, tmp_path, trained, 2)
    mixed = denoise("merge", files[0], scores[1], "--out", tmp_path / "mixed.npz")
    assert mixed.code == 2 and f"{scores[1]}: is a scores-shard file, not a sensitivity-shard file" in mixed.err
    unmerged = denoise("prune", "--model", trained["model"], "--sensitivity", files[0], "--count", 2,
                       "--out", tmp_path / "pruned.safetensors")
    assert unmerged.code == 2 and "is a sensitivity-shard file, not a sensitivity file" in unmerged.err


def test_merge_names_a_missing_repeated_or_foreign_shard(denoise, tmp_path, trained):
    files = _shards(denoise, tmp_path, trained, 3)
    out = tmp_path / "merged.npz"
    missing_one = denoise("merge", files[0], files[2], "--out", out)
    assert missing_one.code == 2 and "shard 1/3: is missing" in missing_one.err
    repeated = denoise("merge", files[0], files[1], files[1], files[2], "--out", out)
    assert repeated.code == 2 and f"{files[1]}: repeats shard 1/3" in repeated.err
    foreign = _shards(denoise, tmp_path, trained, 3, "--target", "max")
    mixed = denoise("merge", files[0], foreign[1], files[2], "--out", out)
    assert mixed.code == 2 and f"{foreign[1]}: was made with other options" in mixed.err
    other_model = tmp_path / "other.safetensors"
    _ok(denoise("train", "--data", ODD, "--noise", trained["noise"], "--arch", "mlp", "--epochs", 2, "--seed", 1,
                "--out", other_model, "--json"))
    _ok(denoise("attribute", "--model", other_model, "--data", ODD, "--noise", trained["noise"], "--shard", "1/3",
                "--out", tmp_path / "other-1.npz", "--json"))
    other = denoise("merge", files[0], tmp_path / "other-1.npz", files[2], "--out", out)
    assert other.code == 2 and "was made from another model file" in other.err
    assert not out.exists()  # nothing half-written
    unmerged = denoise("partition", "--scores", files[0], "--out", tmp_path / "p.npz")
    assert unmerged.code == 2 and "is a scores-shard file, not a scores file" in unmerged.err


# --- torchrun, 2 ranks on the CPU (gloo) ------------------------------------------------------------------------

def _command(*args, ranks=2):
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(ranks), "--standalone", "-m"]
    return [*(launcher if ranks else [sys.executable, "-m"]), "cli.main", *map(str, args)]


def _environment():
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def _launch(*args, ranks=2):
    """``denoise ARGS`` under ``torchrun --nproc-per-node RANKS`` (0: one plain process); returns the completed run."""
    done = subprocess.run(_command(*args, ranks=ranks), cwd=ROOT, env=_environment(), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.mark.slow
def test_torchrun_attribute_and_sensitivity_equal_the_single_process_files(denoise, tmp_path, trained):
    common = ["--model", trained["model"], "--data", ODD, "--noise", trained["noise"]]
    scored = _launch("attribute", *common, "--out", tmp_path / "distributed.npz", "--json")
    assert json.loads(scored.stdout)["samples"] == 75  # one summary, rank 0's
    # every rank scored its own shard only: 38 + 37 samples, no rank the whole set
    assert "rank 0 of 2: attribute scored 38 of 75 samples" in scored.stderr
    assert "rank 1 of 2: attribute scored 37 of 75 samples" in scored.stderr
    _same_scores(tmp_path / "distributed.npz", trained["scores"], world_size=2, atol=1e-5)
    assert [p.name for p in tmp_path.iterdir() if ".rank" in p.name] == []  # the ranks' shard files are gone

    sensitivity = ["sensitivity", *common, "--partition", trained["partition"], "--layer", "features.1", "--json"]
    _ok(denoise(*sensitivity, "--out", tmp_path / "single.npz"))
    summed = _launch(*sensitivity, "--out", tmp_path / "ranks.npz")
    assert "rank 1 of 2: sensitivity took the moments of 37 of 75 samples" in summed.stderr
    with np.load(tmp_path / "ranks.npz") as got, np.load(tmp_path / "single.npz") as want:
        for name in ("coefficient", "r2", "mean", "std"):
            assert np.abs(got[name] - want[name]).max() < 1e-5, name
        assert json.loads(str(got["meta"]))["world_size"] == 2


@pytest.mark.slow
def test_torchrun_train_and_finetune_of_a_pruned_model_match_one_process(denoise, tmp_path, trained):
    data = ["--data", ODD, "--noise", trained["noise"]]
    train = ["train", *data, "--arch", "mlp", "--epochs", 3, "--json"]
    _ok(denoise(*train, "--out", tmp_path / "trained-single.safetensors"))
    _launch(*train, "--out", tmp_path / "trained-ranks.safetensors")
    _close(tmp_path / "trained-single.safetensors", tmp_path / "trained-ranks.safetensors")

    _ok(denoise("sensitivity", "--model", trained["model"], *data, "--partition", trained["partition"],
                "--out", tmp_path / "sensitivity.npz", "--json"))
    pruned = _ok(denoise("prune", "--model", trained["model"], "--sensitivity", tmp_path / "sensitivity.npz",
                         "--count", 8, "--out", tmp_path / "pruned.safetensors", "--json"))
    args = ["finetune", "--model", tmp_path / "pruned.safetensors", *data, "--partition", trained["partition"],
            "--epochs", 5, "--json"]
    _ok(denoise(*args, "--out", tmp_path / "single.safetensors"))
    tuned = _launch(*args, "--out", tmp_path / "ranks.safetensors")
    with np.load(trained["partition"]) as partition:
        assert json.loads(tuned.stdout)["clean_samples"] == int(partition["is_clean"].sum())
    assert not Path(f"{tmp_path / 'ranks.safetensors'}.resume.safetensors").exists()
    ranks = _close(tmp_path / "single.safetensors", tmp_path / "ranks.safetensors")
    assert pruned["layer"] == "head:input"
    removed = read_metadata(tmp_path / "ranks.safetensors")["masks"]["head:input"]["removed"]
    assert len(removed) == 8 and torch.count_nonzero(ranks["head.weight"][:, removed]) == 0  # masks held on every rank
    accuracy = [_ok(denoise("evaluate", "--model", tmp_path / name, "--data", ODD, "--json"))["accuracy"]
                for name in ("single.safetensors", "ranks.safetensors")]
    assert abs(accuracy[0] - accuracy[1]) <= 1 / 30  # within one test sample of 30


def _close(single: Path, distributed: Path) -> dict:
    """The weights of a checkpoint trained on 2 ranks, checked to be those of one process up to reordered sums."""
    one, ranks = load_file(single), load_file(distributed)
    assert max((one[k] - ranks[k]).abs().max().item() for k in one) < 1e-4
    return ranks


def _wait_until_gone(group: int, timeout: float = 30) -> None:
    """Wait until no live process of process group ``group`` is left (a zombie holds no file or lock)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = False
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rpartition(")")[2].split()  # after "(command)": state, ppid, pgrp, ...
            except OSError:
                continue  # ended while we looked
            alive = alive or (int(fields[2]) == group and fields[0] != "Z")
        if not alive:
            return
        time.sleep(0.01)
    raise AssertionError(f"processes of group {group} still alive after {timeout} s")


@pytest.mark.slow
def test_a_two_rank_finetune_killed_mid_epoch_resumes_on_one_rank(denoise, tmp_path, trained):
    out, uninterrupted = tmp_path / "clean.safetensors", tmp_path / "uninterrupted.safetensors"
    state = Path(f"{out}.resume.safetensors")
    args = ["finetune", "--model", trained["model"], "--data", ODD, "--noise", trained["noise"],
            "--partition", trained["partition"], "--epochs", 60, "--batch-size", 4, "--json"]
    run = subprocess.Popen(_command(*args, "--out", out), cwd=ROOT, env=_environment(), start_new_session=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not state.exists() and run.poll() is None:  # kill as soon as epoch 1 is saved: mid-run, in epoch 2 or so
        time.sleep(0.01)
    os.killpg(run.pid, signal.SIGKILL)  # the launcher and both ranks
    run.wait()
    _wait_until_gone(run.pid)  # the ranks outlive the launcher by a moment, rank 0 still holding the output's lock
    with safe_open(str(state), framework="pt") as handle:
        epochs_done = json.loads(handle.metadata()["denoise-resume"])["epoch"]
    assert not out.exists() and 1 <= epochs_done < 60
    _launch(*args, "--out", out, "--resume", ranks=0)
    _ok(denoise(*args, "--out", uninterrupted))
    _close(uninterrupted, out)  # (60 epochs: over hundreds more, Adam amplifies the reordered sums past 1e-4)
    assert not state.exists()


@pytest.mark.slow
def test_run_under_torchrun_on_digits_is_within_a_point_of_one_process(denoise, tmp_path):
    noise, model = tmp_path / "noise.npz", tmp_path / "noisy.safetensors"
    _ok(denoise("inject-noise", "--data", "digits", "--kind", "symmetric", "--rate", 0.4, "--out", noise, "--json"))
    _ok(denoise("train", "--data", "digits", "--noise", noise, "--arch", "mlp", "--epochs", 150, "--out", model,
                "--json"))
    args = ["run", "--model", model, "--data", "digits", "--noise", noise, "--json"]
    single = _ok(denoise(*args, "--workdir", tmp_path / "single"))
    ranks = json.loads(_launch(*args, "--workdir", tmp_path / "ranks").stdout)
    assert ranks["chosen"] == single["chosen"]
    accuracy = [_ok(denoise("evaluate", "--model", result["model"], "--data", "digits", "--json"))["accuracy"]
                for result in (single, ranks)]
    assert abs(accuracy[0] - accuracy[1]) <= 0.01, accuracy
    with np.load(tmp_path / "ranks" / "round1" / "scores.npz") as scores:
        assert json.loads(str(scores["meta"]))["world_size"] == 2
