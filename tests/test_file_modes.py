"""Files denoise writes get the mode ``open`` would give them, ``0o666`` less the umask, not the private ``0o600`` of
the temporary file each is written to before its atomic rename (``denoise.cli.files.paths.atomic_write``)."""

import os
import stat

import pytest


@pytest.fixture(params=[0o027, 0o022], ids=["umask027", "umask022"])
def umask(request):
    """Run the test under this umask, restored after."""
    previous = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(previous)


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_stage_outputs_honour_the_umask(denoise, umask, tmp_path):
    noise, model, scores = tmp_path / "noise.npz", tmp_path / "model.safetensors", tmp_path / "scores.npz"
    assert denoise("inject-noise", "--data", "digits", "--kind", "symmetric", "--rate", 0.2, "--out", noise).code == 0
    assert denoise("train", "--data", "digits", "--noise", noise, "--arch", "mlp", "--epochs", 1, "--device", "cpu",
                   "--out", model).code == 0
    assert denoise("attribute", "--model", model, "--data", "digits", "--noise", noise, "--device", "cpu",
                   "--out", scores).code == 0  # an .npz streamed by NpzStream
    expected = 0o666 & ~umask
    assert {path.name: oct(_mode(path)) for path in tmp_path.iterdir()} == {
        name: oct(expected) for name in ("noise.npz", "model.safetensors", "scores.npz")}


def test_the_umask_is_read_without_being_changed(umask):
    from denoise.cli.files.paths import current_umask, file_mode

    assert current_umask() == umask and file_mode() == 0o666 & ~umask
    assert os.umask(umask) == umask, "reading it changed it"


def test_an_overwritten_output_takes_the_umask_of_its_writer(umask, tmp_path):
    from denoise.cli.files.paths import atomic_write

    out = tmp_path / "out.txt"
    out.write_text("old")
    os.chmod(out, 0o600)
    atomic_write(out, lambda tmp: tmp.write_text("new"))
    assert out.read_text() == "new" and _mode(out) == 0o666 & ~umask
