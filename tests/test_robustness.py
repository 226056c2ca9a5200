"""Trustworthy in CI jobs: resume after SIGKILL, skip up-to-date stages, byte-identical re-runs, fuzzed readers."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors import safe_open

from denoise.cli.files.checkpoint import load_checkpoint
from denoise.cli.errors import InputError
from denoise.cli.files.stage_files import load_npz
from conftest import ROOT, TINY, cli_process


def _tensors(path):
    with safe_open(path, "pt") as handle:
        return {name: handle.get_tensor(name) for name in handle.keys()}


@pytest.fixture(scope="module")
def noisy_digits(tmp_path_factory):
    """A noise file, a model trained on it and a partition, on digits."""
    from denoise.cli import stages
    from denoise.cli.data.noise import inject_noise
    from denoise.cli.model_commands import train
    from denoise.core.training import Recipe

    folder = tmp_path_factory.mktemp("digits")
    inject_noise("digits", "symmetric", 0.4, 0, folder / "noise.npz")
    train("digits", "mlp", folder / "noisy.safetensors", Recipe(epochs=20), noise=folder / "noise.npz", device="cpu")
    stages.attribute(folder / "noisy.safetensors", "digits", folder / "scores.npz", noise=folder / "noise.npz",
                     device="cpu")
    stages.partition(folder / "scores.npz", folder / "partition.npz")
    return folder


@pytest.mark.slow
def test_finetune_resumes_after_sigkill_with_identical_weights(noisy_digits, tmp_path):
    common = ["finetune", "--model", noisy_digits / "noisy.safetensors", "--data", "digits", "--noise",
              noisy_digits / "noise.npz", "--partition", noisy_digits / "partition.npz", "--epochs", 25,
              "--batch-size", 16, "--seed", 3, "--device", "cpu"]
    reference = tmp_path / "reference.safetensors"
    assert cli_process(*common, "--out", reference).wait(timeout=600) == 0

    out = tmp_path / "killed.safetensors"
    state = tmp_path / "killed.safetensors.resume.safetensors"
    process = cli_process(*common, "--out", out)
    _wait_until(lambda: state.exists() or process.poll() is not None)
    time.sleep(0.3)  # well inside a later epoch
    assert process.poll() is None, "finetune ended before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not out.exists() and state.exists()

    resumed = cli_process(*common, "--out", out, "--resume")
    assert resumed.wait(timeout=600) == 0, resumed.stderr.read()
    assert not state.exists()
    final, expected = _tensors(out), _tensors(reference)
    assert final.keys() == expected.keys()
    assert all(torch.equal(final[k], expected[k]) for k in final)


def _wait_until(condition, timeout=600):
    """Poll ``condition()`` every 5 ms until it holds (or ``timeout`` seconds pass)."""
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.005)


def _run(denoise, folder, workdir, *extra, ratio=0.1):
    # --ratio given: the last round prunes whatever the regime (this short-trained model generalizes)
    result = denoise("run", "--model", folder / "noisy.safetensors", "--data", "digits", "--noise",
                     folder / "noise.npz", "--workdir", workdir, "--rounds", 1, "--epochs", 2, "--ratio", ratio,
                     "--json", *extra)
    assert result.code == 0, result.err
    summary = result.json["rounds"][0]
    return {stage: bool(out.get("skipped")) for stage, out in summary.items() if stage != "round"}


def test_run_skips_up_to_date_stages_and_reruns_exactly_what_changed(denoise, noisy_digits, tmp_path):
    work = tmp_path / "work"
    first = _run(denoise, noisy_digits, work)
    assert not any(first.values())
    assert all(_run(denoise, noisy_digits, work).values()), "a second identical run redid work"
    assert _run(denoise, noisy_digits, work, ratio=0.2) == {
        "attribute": True, "partition": True, "holdout": True, "sensitivity": True, "prune": False, "finetune": False}
    assert _run(denoise, noisy_digits, work, "--epochs", 3, ratio=0.2) == {
        "attribute": True, "partition": True, "holdout": True, "sensitivity": True, "prune": True, "finetune": False}
    assert _run(denoise, noisy_digits, work, "--epochs", 3, "--dims", 5, ratio=0.2) == {
        "attribute": True, "partition": False, "holdout": False, "sensitivity": False, "prune": False,
        "finetune": False}
    assert _run(denoise, noisy_digits, work, "--epochs", 3, "--dims", 5, "--holdout", 0.2, ratio=0.2) == {
        "attribute": True, "partition": True, "holdout": False, "sensitivity": True, "prune": True, "finetune": False}


def test_same_command_and_seed_give_byte_identical_outputs(denoise, noisy_digits, tmp_path):
    """The README's determinism claim, which is the CPU's (a GPU may reorder floating-point sums)."""
    commands = {
        "model.safetensors": ["train", "--data", "digits", "--noise", noisy_digits / "noise.npz", "--arch", "mlp",
                              "--epochs", 2, "--seed", 5, "--device", "cpu"],
        "scores.npz": ["attribute", "--model", noisy_digits / "noisy.safetensors", "--data", "digits", "--noise",
                       noisy_digits / "noise.npz", "--layer", "features.2", "--device", "cpu"],
        "partition.npz": ["partition", "--scores", noisy_digits / "scores.npz"],
    }
    for name, args in commands.items():
        out = tmp_path / name
        contents = []
        for _ in range(2):
            assert denoise(*args, "--out", out).code == 0
            contents.append(out.read_bytes())
            time.sleep(1.1)  # a timestamp in the file would now differ
        assert contents[0] == contents[1], f"{name} differs between two identical runs"


def _mutations(data: bytes):
    """Truncations, byte flips and splices of a valid file."""
    return st.one_of(
        st.integers(0, len(data)).map(lambda n: data[:n]),
        st.lists(st.tuples(st.integers(0, len(data) - 1), st.integers(0, 255)), min_size=1, max_size=8).map(
            lambda flips: _flip(data, flips)),
        st.binary(max_size=256).map(lambda junk: junk + data[len(junk):]),
        st.binary(max_size=512),
    )


def _flip(data: bytes, flips):
    raw = bytearray(data)
    for position, value in flips:
        raw[position] = value
    return bytes(raw)


FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                         HealthCheck.too_slow])


@FUZZ
@given(data=st.data())
def test_fuzzed_npz_files_load_or_fail_cleanly(noisy_digits, tmp_path, data):
    valid = (noisy_digits / "partition.npz").read_bytes()
    path = tmp_path / "fuzzed.npz"
    path.write_bytes(data.draw(_mutations(valid)))
    try:
        arrays, meta = load_npz(path, "partition")
    except InputError as exc:
        assert str(exc).startswith(str(path))
    else:
        assert len({len(v) for v in arrays.values() if v.ndim}) == 1 and isinstance(meta, dict)


@FUZZ
@given(data=st.data())
def test_fuzzed_checkpoints_load_or_fail_cleanly(noisy_digits, tmp_path, data):
    valid = (noisy_digits / "noisy.safetensors").read_bytes()
    path = tmp_path / "fuzzed.safetensors"
    path.write_bytes(data.draw(_mutations(valid)))
    try:
        checkpoint = load_checkpoint(path)
    except InputError as exc:
        assert str(exc).startswith(str(path))
    else:
        assert all(torch.isfinite(p).all() for p in checkpoint.model.parameters())


def test_npz_object_arrays_are_never_unpickled(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.npz"
    np.savez(path, attribution=np.array([_Boom(str(marker))], dtype=object))
    with pytest.raises(InputError, match="object"):
        load_npz(path, "scores")
    assert not marker.exists()


class _Boom:
    """Unpickling this would create a file: proof that nothing was unpickled if the file is absent."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_exit_codes_and_one_line_errors_from_the_real_process(tmp_path):
    usage = cli_process("prune", "--model", "m", "--sensitivity", "s", "--ratio", "2", "--out", tmp_path / "o")
    _, err = usage.communicate(timeout=120)
    assert usage.returncode == 1 and len(err.strip().splitlines()) == 1
    bad = cli_process("partition", "--scores", TINY, "--out", tmp_path / "p.npz")
    _, err = bad.communicate(timeout=120)
    assert bad.returncode == 2 and "Traceback" not in err and str(TINY) in err
    assert not (tmp_path / "p.npz").exists()
    debug = cli_process("--debug", "partition", "--scores", TINY, "--out", tmp_path / "p.npz")
    _, err = debug.communicate(timeout=120)
    assert debug.returncode == 2 and "Traceback" in err


# Signals: SIGINT (Ctrl-C) and SIGTERM end a command with one line, exit 128 + the signal, and nothing
# half-written: no output, no temporary file, no lock file.
SIGNALS = [(signal.SIGINT, 130), (signal.SIGTERM, 143)]
SIGNAL_IDS = ["SIGINT", "SIGTERM"]


def _interrupt(process, ready, signum, group=False):
    """Send ``signum`` to ``process`` once ``ready`` (a file, or a function saying whether it may be sent) holds;
    with ``group``, to its whole process group, as Ctrl-C in a terminal does (start it with
    ``start_new_session=True``). Returns (seconds it then took to end, stderr)."""
    _wait_until(lambda: (ready() if callable(ready) else ready.exists()) or process.poll() is not None)
    assert process.poll() is None, f"ended before it could be interrupted: {process.stderr.read()}"
    if group:
        os.killpg(process.pid, signum)
    else:
        process.send_signal(signum)
    sent = time.monotonic()
    _, err = process.communicate(timeout=60)
    return time.monotonic() - sent, err


def _assert_interrupted(process, seconds, err, signum, code):
    assert process.returncode == code and err.strip() == f"denoise: interrupted ({signal.Signals(signum).name})"
    assert seconds < 5


def _leftovers(folder):
    """Temporary files, stream parts and lock files anywhere under ``folder``."""
    return [p.name for p in folder.rglob(".*")]


@pytest.fixture(scope="module")
def streamed(tmp_path_factory):
    """An ``npz:`` data set large enough that ``attribute --batch-size 16`` streams its scores for a second or
    more, and a model trained on it for one epoch: (its data spec, the model)."""
    from denoise.cli.model_commands import train
    from denoise.core.training import Recipe

    folder = tmp_path_factory.mktemp("streamed")
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 40_000)
    np.savez(folder / "data.npz", x=(rng.normal(size=(len(labels), 64)) + labels[:, None] / 10).astype(np.float32),
             y=labels)
    spec = f"npz:{folder / 'data.npz'}"
    train(spec, "mlp", folder / "model.safetensors", Recipe(epochs=1), device="cpu")
    return spec, folder / "model.safetensors"


def _streaming(folder, name):
    """Whether the ``NpzStream`` of output ``name`` in ``folder`` has written its first block (not only begun)."""
    return lambda: any(folder.glob(f".{name}.*.parts/attribution.npy"))


@pytest.mark.slow
@pytest.mark.parametrize("signum,code", SIGNALS, ids=SIGNAL_IDS)
@pytest.mark.parametrize("stage", ["attribute", "partition"])
def test_a_signal_ends_a_stage_with_one_line_and_no_output(noisy_digits, streamed, tmp_path, stage, signum, code):
    """attribute is interrupted while it streams its scores (on digits it could end before the signal came, as it
    did on a loaded machine: exit 0 and an output), SIGINT sent to its process group as Ctrl-C does."""
    spec, model = streamed
    args = {"attribute": ["attribute", "--model", model, "--data", spec, "--batch-size", 16, "--device", "cpu"],
            "partition": ["partition", "--scores", noisy_digits / "scores.npz"]}[stage]
    ready = {"attribute": _streaming(tmp_path, "out.npz"), "partition": tmp_path / ".out.npz.lock"}[stage]
    process = cli_process(*args, "--out", tmp_path / "out.npz", start_new_session=True)
    seconds, err = _interrupt(process, ready, signum, group=signum == signal.SIGINT)  # the command has begun its work
    _assert_interrupted(process, seconds, err, signum, code)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
@pytest.mark.parametrize("signum,code", SIGNALS, ids=SIGNAL_IDS)
def test_a_signal_as_the_process_exits_after_its_command_is_reported(noisy_digits, tmp_path, signum, code):
    """Python's own exit reset the handlers to the default, then spent a good part of a second tearing torch
    down: a signal there killed the process without its line (status -2), the finished output in place."""
    out = tmp_path / "out.npz"
    process = cli_process("partition", "--scores", noisy_digits / "scores.npz", "--out", out)
    _wait_until(lambda: (out.exists() and not (tmp_path / ".out.npz.lock").exists()) or process.poll() is not None)
    time.sleep(0.05)  # the command is done: the process is leaving
    process.send_signal(signum)  # nothing when it has ended
    _, err = process.communicate(timeout=60)
    line = f"denoise: interrupted ({signal.Signals(signum).name})"
    assert (process.returncode, err.strip()) in [(0, ""), (code, line)], "killed without its line"
    assert [p.name for p in tmp_path.iterdir()] == ["out.npz"]


@pytest.mark.parametrize("defer", [True, False])
def test_a_signal_in_deferred_cleanup_waits_until_the_cleanup_is_done(defer):
    """What made an interrupted run leave a stream's parts behind: the signal landed in their removal."""
    from contextlib import nullcontext

    from denoise.cli.signals import Interrupted, deferred, interruptible

    done = []
    with pytest.raises(Interrupted) as caught, interruptible(), (deferred() if defer else nullcontext()):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.2)  # the handler runs here
        done.append("cleanup")
    assert done == (["cleanup"] if defer else []) and caught.value.exit_code == 128 + signal.SIGTERM


def test_a_signal_in_a_finalizer_is_reported_once_and_not_printed_as_ignored(capsys, monkeypatch):
    """A signal whose handler runs inside an object's ``__del__`` (a ZipFile collected, say): Python ignores the
    exception raised there; the command still ends with that ``Interrupted``, and nothing else is printed."""
    from denoise.cli.signals import Interrupted, interruptible

    class Collected:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)  # the handler runs here, inside the finalizer

    monkeypatch.setattr(sys, "unraisablehook", sys.__unraisablehook__)  # Python's own, which prints; not pytest's
    with pytest.raises(Interrupted) as stopped:
        with interruptible():
            Collected()
    assert stopped.value.exit_code == 130 and capsys.readouterr().err == ""


def test_a_signal_while_a_lock_is_taken_waits_until_it_is_recorded_then_releases_it(tmp_path, monkeypatch):
    """The signal comes from another process while another thread runs (as torch's do), so the kernel may hand it
    to that thread: masking it in the main thread, as ``hold`` once did, left the lock file behind."""
    import threading

    from denoise.cli.files import lock
    from denoise.cli.signals import Interrupted, interruptible

    acquire, taken = lock._acquire, []

    def acquire_then_signal(path, lock_file):
        taken.append(acquire(path, lock_file))
        subprocess.run(["kill", "-TERM", str(os.getpid())], check=True)
        time.sleep(0.2)  # the handler runs here
        return taken[-1]

    other = threading.Event()
    waiter = threading.Thread(target=other.wait, daemon=True)
    waiter.start()
    monkeypatch.setattr(lock, "_acquire", acquire_then_signal)
    out, ran = tmp_path / "partition.npz", []
    try:
        with pytest.raises(Interrupted), interruptible(), lock.hold(out, directory=False, command="denoise partition"):
            ran.append("command")
    finally:
        other.set()
    assert taken and ran == [] and list(tmp_path.iterdir()) == [], "the lock file stayed"


LOADER_INTERRUPTED = """
import os, signal, sys, time
from torch.utils.data import DataLoader, Dataset
from denoise.cli.signals import Interrupted, interruptible

class Slow(Dataset):
    def __len__(self):
        return 1000

    def __getitem__(self, i):
        time.sleep(0.01)
        return i

try:
    with interruptible():
        for i, _ in enumerate(DataLoader(Slow(), batch_size=None, num_workers=2)):
            if i == 5:
                os.killpg(0, signal.SIGINT)  # Ctrl-C: the loader processes get it too
                time.sleep(0.5)
except Interrupted as exc:
    print(exc, file=sys.stderr)
    sys.exit(exc.exit_code)
"""


def test_ctrl_c_reaches_the_loader_processes_too_and_only_the_command_reports_it():
    """Forked DataLoader workers had this process's handler: each raised ``Interrupted`` and printed its
    traceback, then the loader reported them dead (a RuntimeError's traceback more)."""
    process = subprocess.Popen([sys.executable, "-c", LOADER_INTERRUPTED], cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130 and err.strip() == "denoise: interrupted (SIGINT)", err


@pytest.mark.parametrize("signum,code", SIGNALS, ids=SIGNAL_IDS)
def test_a_signal_while_python_still_imports_ends_with_the_same_line(signum, code):
    process = cli_process("attribute", "--help")
    status = f"/proc/{process.pid}/status"
    while process.poll() is None and not _catches_sigterm(status):  # the handlers are set, the imports begin
        time.sleep(0.001)
    process.send_signal(signum)
    _, err = process.communicate(timeout=60)
    assert process.returncode == code and err.strip() == f"denoise: interrupted ({signal.Signals(signum).name})"


def _catches_sigterm(status):
    """Whether the process whose /proc status file this is has a handler for SIGTERM (Python sets none itself)."""
    caught = next(line for line in open(status) if line.startswith("SigCgt:")).split()[1]
    return bool(int(caught, 16) & (1 << (signal.SIGTERM - 1)))


@pytest.fixture(scope="module")
def trained_uninterrupted(noisy_digits, tmp_path_factory):
    """The train command of the signal tests, run to its end: (its arguments, its weights)."""
    args = ["train", "--data", "digits", "--noise", noisy_digits / "noise.npz", "--arch", "mlp", "--epochs", 15,
            "--batch-size", 16, "--seed", 3, "--device", "cpu"]
    out = tmp_path_factory.mktemp("train") / "reference.safetensors"
    process = cli_process(*args, "--out", out)
    assert process.wait(timeout=600) == 0, process.stderr.read()
    return args, _tensors(out)


@pytest.mark.slow
@pytest.mark.parametrize("signum,code", SIGNALS, ids=SIGNAL_IDS)
def test_train_interrupted_by_a_signal_resumes_to_identical_weights(trained_uninterrupted, tmp_path, signum, code):
    args, expected = trained_uninterrupted
    out, state = tmp_path / "model.safetensors", tmp_path / "model.safetensors.resume.safetensors"
    process = cli_process(*args, "--out", out)
    seconds, err = _interrupt(process, state, signum)  # after its first epoch
    _assert_interrupted(process, seconds, err, signum, code)
    assert [p.name for p in tmp_path.iterdir()] == [state.name], "only the resume state may stay"

    resumed = cli_process(*args, "--out", out, "--resume")
    assert resumed.wait(timeout=600) == 0, resumed.stderr.read()
    final = _tensors(out)
    assert final.keys() == expected.keys() and all(torch.equal(final[k], expected[k]) for k in final)


RUN_ARGS = ["--data", "digits", "--rounds", 1, "--epochs", 2, "--device", "cpu", "--json"]


def _run_args(folder, workdir):
    return ["run", "--model", folder / "noisy.safetensors", "--noise", folder / "noise.npz", "--workdir", workdir,
            *RUN_ARGS]


def _outcome(workdir):
    """What a run in ``workdir`` handed back: which model it chose and that model's weights."""
    record = json.loads((workdir / "run.json").read_text())
    return record["chosen"], _tensors(record["model"])


def _same_outcome(first, second):
    assert first[0] == second[0]
    assert first[1].keys() == second[1].keys() and all(torch.equal(first[1][k], second[1][k]) for k in first[1])


@pytest.fixture(scope="module")
def lone_run(noisy_digits, tmp_path_factory):
    """The outcome of ``denoise run`` alone in its work directory, uninterrupted."""
    workdir = tmp_path_factory.mktemp("lone") / "work"
    process = cli_process(*_run_args(noisy_digits, workdir))
    assert process.wait(timeout=600) == 0, process.stderr.read()
    return _outcome(workdir)


@pytest.mark.slow
@pytest.mark.parametrize("signum,code", SIGNALS, ids=SIGNAL_IDS)
def test_run_interrupted_by_a_signal_continues_to_the_lone_runs_result(noisy_digits, lone_run, tmp_path, signum,
                                                                        code):
    workdir = tmp_path / "work"
    process = cli_process(*_run_args(noisy_digits, workdir))
    seconds, err = _interrupt(process, workdir / "round1" / "scores.npz", signum)  # in round 1
    _assert_interrupted(process, seconds, err, signum, code)
    assert not (workdir / "run.json").exists() and _leftovers(workdir) == []

    again = cli_process(*_run_args(noisy_digits, workdir))
    out, err = again.communicate(timeout=600)
    assert again.returncode == 0, err
    assert json.loads(out)["rounds"][0]["attribute"].get("skipped"), "the finished stage was not reused"
    _same_outcome(_outcome(workdir), lone_run)


# Locks: one denoise process per work directory or output file.
@pytest.mark.slow
def test_two_runs_in_one_work_directory_one_refuses_at_once_the_other_runs_as_if_alone(noisy_digits, lone_run,
                                                                                      tmp_path):
    workdir = tmp_path / "work"
    runs = [cli_process(*_run_args(noisy_digits, workdir)) for _ in range(2)]  # started together
    _wait_until(lambda: any(run.poll() is not None for run in runs))
    refused, holder = runs if runs[0].poll() is not None else runs[::-1]  # the first to end must be the refusal
    assert holder.poll() is None, "the refusal waited for the holder to end"
    out, err = refused.communicate(timeout=60)
    assert refused.returncode == 4 and out == "" and len(err.strip().splitlines()) == 1, err
    assert f"pid {holder.pid}: denoise run" in err and str(workdir) in err
    _, err = holder.communicate(timeout=600)
    assert holder.returncode == 0, err
    _same_outcome(_outcome(workdir), lone_run)
    assert _leftovers(workdir) == []


def test_an_output_in_use_is_refused_naming_its_holder(denoise, noisy_digits, tmp_path):
    from denoise.cli.files.lock import hold

    out = tmp_path / "partition.npz"
    with hold(out, directory=False, command="denoise partition (the holder)"):
        result = denoise("partition", "--scores", noisy_digits / "scores.npz", "--out", out)
    assert result.code == 4 and len(result.err.strip().splitlines()) == 1
    assert f"pid {os.getpid()}: denoise partition (the holder)" in result.err and str(out) in result.err
    assert not out.exists()
    assert denoise("partition", "--scores", noisy_digits / "scores.npz", "--out", out).code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["partition.npz"], "the lock file stayed"


def test_every_command_that_writes_declares_it_and_holds_its_lock():
    """Every --out and --workdir of a command is declared with ``lock.writes`` (and so locked), but report's
    --workdir, which is only read; no lock is chosen by a parameter's name."""
    import typer

    from denoise.cli.main import app

    def commands(group):
        for name, command in getattr(group, "commands", {}).items():
            yield from commands(command)
            if command.callback is not None:
                yield name, command

    found = dict(commands(typer.main.get_command(app)))
    assert {"run", "partition", "fix", "quality", "perf", "scale"} <= set(found)
    for name, command in found.items():
        flags = {param.name for param in command.params if set(param.opts) & {"--out", "--workdir"}}
        declared = set(getattr(command.callback, "writes", {}))
        assert declared == flags - ({"workdir"} if name == "report" else set()), name


def test_a_stale_lock_of_a_dead_process_is_taken_over(denoise, noisy_digits, tmp_path):
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    workdir = tmp_path / "work"
    workdir.mkdir()
    (workdir / ".denoise.lock").write_text(json.dumps({"pid": ended.pid, "command": "denoise run (killed)"}))
    result = denoise("run", "--model", noisy_digits / "noisy.safetensors", "--noise", noisy_digits / "noise.npz",
                     "--workdir", workdir, *RUN_ARGS)
    assert result.code == 0, result.err
    assert (workdir / "run.json").exists() and not (workdir / ".denoise.lock").exists()
