"""Sharding by index and torchrun: the files of a distributed or sharded run are those of one process."""

import contextlib
import io
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

from denoise.cli import distributed, output
from denoise.cli.distributed import join, parse_shard
from denoise.cli.errors import InputError, UsageError
from denoise.cli.files.checkpoint import read_metadata
from denoise.cli.files.shards import merge_ranks, rank_path
from denoise.cli.files.stage_files import read_npz_arrays
from denoise.cli.files.streaming import StoredRows
from denoise.core.sensitivity import UnitMoments
from denoise.core.shards import CoverageError, batch_share, missing, owners, shard_rows
from conftest import FIXTURES, ROOT, TINY

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
    with pytest.raises(UsageError, match=r"^--shard must be i/n"):
        parse_shard(text)
    assert parse_shard("1/3") == (1, 3)


def test_a_bad_shard_is_a_one_line_usage_error_before_any_file_is_read(denoise, tmp_path):
    refused = denoise("attribute", "--model", tmp_path / "absent.safetensors", "--data", ODD, "--shard", "3/3",
                      "--out", tmp_path / "scores.npz")
    assert (refused.code, refused.err) == (1, "denoise: error: --shard must be i/n with 0 <= i < n, not '3/3'\n")


def test_only_rank_0_draws_progress_bars(monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    def drawn() -> str:
        monkeypatch.setattr(sys, "stderr", Terminal())
        with output.progress("work", 3) as advance:
            advance(3)
        return sys.stderr.getvalue()

    monkeypatch.setattr(output.stderr, "quiet", False)  # restored afterwards
    monkeypatch.setattr(sys, "stdout", sys.stdout)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    distributed.quiet_other_ranks()
    assert drawn() != ""  # a transient bar: the terminal's codes that drew and cleared it
    monkeypatch.setenv("RANK", "1")
    distributed.quiet_other_ranks()
    assert drawn() == ""


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


@pytest.mark.parametrize("backend", ["nccl", "gloo"])
def test_data_parallel_syncs_batchnorm_on_nccl_only_and_looks_for_unused_parameters(monkeypatch, backend):
    made = {}
    monkeypatch.setattr(torch.distributed, "get_backend", lambda: backend)
    monkeypatch.setattr(torch.nn.parallel, "DistributedDataParallel",
                        lambda module, **options: made.update(module=module, **options) or module)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    weight = model[1].weight
    distributed.data_parallel(distributed.Ranks(0, 2))(model)
    assert made["find_unused_parameters"] and made["module"] is model
    # converted in place, with the very parameters the optimizer already holds
    assert isinstance(model[1], torch.nn.SyncBatchNorm) == (backend == "nccl") and model[1].weight is weight
    assert distributed.data_parallel(distributed.Ranks()) is None


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


def _rewritten(path: Path, out: Path, change) -> Path:
    """A copy of the stage file ``path`` at ``out`` with ``change(meta)`` (or ``change(arrays)``) applied."""
    with np.load(path, allow_pickle=False) as stored:
        arrays = {name: stored[name] for name in stored.files}
    meta = json.loads(str(arrays.pop("meta")))
    change(meta, arrays)
    np.savez(out, **arrays, meta=np.array(json.dumps(meta)))
    return out


@pytest.mark.parametrize("hostile", ["no inputs", "no shard", "shard of text", "no sample"])
def test_merge_refuses_a_shard_whose_meta_or_moments_are_unusable_naming_it(denoise, tmp_path, trained, hostile):
    args = ["sensitivity", "--model", trained["model"], "--data", ODD, "--noise", trained["noise"],
            "--partition", trained["partition"], "--json"]
    files = [tmp_path / f"moments-{number}.npz" for number in range(2)]
    for number in range(2):
        _ok(denoise(*args, "--shard", f"{number}/2", "--out", files[number]))
    change = {"no inputs": lambda meta, arrays: meta.pop("inputs"),
              "no shard": lambda meta, arrays: meta.pop("shard"),
              "shard of text": lambda meta, arrays: meta["shard"].update(number="1"),
              "no sample": lambda meta, arrays: arrays.update(n=np.array(0))}[hostile]
    bad = _rewritten(files[1], tmp_path / "bad.npz", change)
    refused = denoise("merge", files[0], bad, "--out", tmp_path / "merged.npz")
    assert refused.code == 2 and refused.err.startswith(f"denoise: error: {bad}: ") and refused.err.count("\n") == 1
    assert not (tmp_path / "merged.npz").exists()


def test_the_ranks_shard_files_are_removed_when_their_merge_fails(denoise, tmp_path, trained):
    files = _shards(denoise, tmp_path, trained, 2)
    out = tmp_path / "merged.npz"
    parts = [rank_path(out, rank, 2) for rank in range(2)]
    parts[0].write_bytes(files[0].read_bytes())
    _rewritten(files[1], parts[1], lambda meta, arrays: meta["options"].update(target="max"))  # another launch's
    with pytest.raises(InputError, match="was made with other options"):
        merge_ranks(out, 2)
    assert not out.exists() and not any(part.exists() for part in parts)


def test_run_report_is_written_by_rank_0_alone(denoise, tmp_path, trained, monkeypatch):
    monkeypatch.setattr(sys, "stdout", sys.stdout)  # a rank other than 0 sends stdout to /dev/null: restored after
    monkeypatch.setattr(output.stderr, "quiet", False)
    monkeypatch.setattr(distributed, "main_process", lambda: False)  # as rank 1 of a launch sees itself
    args = ["run", "--model", trained["model"], "--data", ODD, "--noise", trained["noise"], "--rounds", 1,
            "--epochs", 1, "--ratio", 0, "--holdout", 0, "--report"]
    assert denoise(*args, "--workdir", tmp_path / "work").code == 0
    assert (tmp_path / "work" / "round1" / "clean.safetensors").exists()
    assert not (tmp_path / "work" / "report.html").exists()


# --- torchrun, 2 ranks on the CPU (gloo) ------------------------------------------------------------------------

def _command(*args, ranks=2):
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(ranks), "--standalone", "-m"]
    return [*(launcher if ranks else [sys.executable, "-m"]), "denoise.cli.main", *map(str, args)]


def _environment():
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(ROOT), str(FIXTURES)])}


def _launch(*args, ranks=2):
    """``denoise ARGS`` under ``torchrun --nproc-per-node RANKS`` (0: one plain process); returns the completed run."""
    done = subprocess.run(_command(*args, ranks=ranks), cwd=ROOT, env=_environment(), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.mark.slow
def test_torchrun_attribute_and_sensitivity_equal_the_single_process_files(denoise, tmp_path, trained):
    common = ["--model", trained["model"], "--data", ODD, "--noise", trained["noise"]]
    stale = [rank_path(tmp_path / "distributed.npz", rank, world) for rank, world in ((1, 2), (2, 3))]
    for path in stale:  # left by launches killed before they merged
        path.write_bytes(trained["scores"].read_bytes())
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


@pytest.mark.slow
def test_torchrun_trains_a_model_with_an_unused_layer_and_records_the_loss_of_every_rank(denoise, tmp_path):
    # head_first applies an auxiliary Linear whose output the loss never sees: its parameters get no gradient
    train = ["train", "--data", ODD, "--arch", "user_models:head_first", "--epochs", 3, "--batch-size", 8, "--json"]
    single = _ok(denoise(*train, "--out", tmp_path / "single.safetensors"))
    ranks = json.loads(_launch(*train, "--out", tmp_path / "ranks.safetensors").stdout)
    _close(tmp_path / "single.safetensors", tmp_path / "ranks.safetensors")
    assert abs(ranks["final_loss"] - single["final_loss"]) < 1e-5  # the mean over both ranks' samples


def _close(single: Path, distributed: Path) -> dict:
    """The weights of a checkpoint trained on 2 ranks, checked to be those of one process up to reordered sums."""
    one, ranks = load_file(single), load_file(distributed)
    assert max((one[k] - ranks[k]).abs().max().item() for k in one) < 1e-4
    return ranks


def _processes():
    """``(pid, state, ppid, process group)`` of every process now running, from /proc."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()  # after "(command)": state, ppid, pgrp, ...
        except OSError:
            continue  # ended while we looked
        yield int(stat.parent.name), fields[0], int(fields[1]), int(fields[2])


def _kill_launch(launcher: int, timeout: float = 30) -> None:
    """SIGKILL a torchrun started in a session of its own and its ranks (torch's agent starts each rank in a
    session of its own too), then wait until none is alive: a zombie holds no file or lock."""
    groups = {launcher} | {pid for pid, _, parent, _ in _processes() if parent == launcher}
    for group in groups:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while any(group in groups and state != "Z" for _, state, _, group in _processes()):
        if time.monotonic() > deadline:
            raise AssertionError(f"processes of {groups} still alive after {timeout} s")
        time.sleep(0.01)


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
    _kill_launch(run.pid)  # the launcher and both ranks
    run.wait()
    with safe_open(str(state), framework="pt") as handle:
        epochs_done = json.loads(handle.metadata()["denoise-resume"])["epoch"]
    assert not out.exists() and 1 <= epochs_done < 60
    _launch(*args, "--out", out, "--resume", ranks=0)
    _ok(denoise(*args, "--out", uninterrupted))
    _close(uninterrupted, out)  # (60 epochs: over hundreds more, Adam amplifies the reordered sums past 1e-4)
    assert not state.exists()
    # the loss curve has every epoch from the first, the 2-rank ones over both ranks' samples
    curves = [read_metadata(path)["provenance"]["results"]["losses"] for path in (out, uninterrupted)]
    assert len(curves[0]) == 60 and np.allclose(curves[0], curves[1], atol=1e-5)


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
