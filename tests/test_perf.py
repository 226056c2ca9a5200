"""Performance machinery: batched vs looped attribution, streamed scores, streamed sensitivity, the benchmark.

Timings live in `denoise bench perf`, never here.
"""

import json
import zipfile

import numpy as np
import pytest
import torch

from denoise.cli import stages
from denoise.cli.bench.synthetic import SyntheticImages
from denoise.cli.data.noise import inject_noise
from denoise.cli.files.stage_files import load_npz, read_npz_arrays
from denoise.cli.files.streaming import NpzStream, StoredRows
from denoise.cli.model_commands import train
from denoise.core.batches import autocast, device_batches
from denoise.core import attribution as attr
from denoise.core.models import create_model
from denoise.core.training import Recipe
from denoise.core.sensitivity import UnitMoments, unit_sensitivity


def _model(arch, shape):
    torch.manual_seed(0)
    return create_model(arch, shape, 5).eval()


@pytest.mark.parametrize("arch,shape,layer,kind", [
    ("mlp", (12,), "features.1", torch.nn.Linear),            # a Linear layer's output
    ("cnn", (1, 8, 8), "features.0", torch.nn.Conv2d),        # a Conv2d layer's output
    ("resnet18-cifar", (3, 8, 8), "layer3.1.conv2", torch.nn.Conv2d),
])
def test_batched_and_looped_attributions_agree_on_linear_and_conv(arch, shape, layer, kind):
    model = _model(arch, shape)
    assert isinstance(dict(model.named_modules())[layer], kind)
    inputs, labels = torch.randn(6, *shape), torch.tensor([0, 1, 2, 3, 4, 2])
    fast, logits = attr.gradient_x_activation(model, inputs, labels, layer)
    slow, slow_logits = attr.gradient_x_activation_loop(model, inputs, labels, layer)
    assert (fast - slow).abs().max() < 1e-5
    assert torch.equal(logits, slow_logits)


def test_npz_stream_reads_like_save_npz(tmp_path):
    rng = np.random.default_rng(0)
    attribution = rng.random((10, 4)).astype(np.float32)
    loss = rng.random(10).astype(np.float32)
    with NpzStream(tmp_path / "s.npz", 10) as stream:
        for start in (6, 0, 3):  # any order of blocks
            stop = {0: 3, 3: 6, 6: 10}[start]
            stream.write("attribution", start, attribution[start:stop])
            stream.write("loss", start, loss[start:stop])
        stream.finish({"index": np.arange(10)}, {"kind": "test"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.npz"]  # the parts are gone
    with np.load(tmp_path / "s.npz", allow_pickle=False) as archive:
        assert np.array_equal(archive["attribution"], attribution) and np.array_equal(archive["loss"], loss)
        assert json.loads(str(archive["meta"])) == {"kind": "test"}
    with zipfile.ZipFile(tmp_path / "s.npz") as archive:
        assert {info.compress_type for info in archive.infolist()} == {zipfile.ZIP_STORED}


def test_stored_rows_read_exactly_the_rows_asked_for(tmp_path):
    rng = np.random.default_rng(1)
    attribution = rng.normal(size=(500, 6)).astype(np.float32)
    with NpzStream(tmp_path / "s.npz", 500) as stream:  # zip64 members, as attribute writes them
        stream.write("attribution", 0, attribution)
        stream.finish({"label": np.arange(500)}, {"kind": "test"})
    np.savez_compressed(tmp_path / "c.npz", attribution=attribution)
    rows = read_npz_arrays(tmp_path / "s.npz", ("attribution",))["attribution"]
    assert isinstance(rows, StoredRows) and rows.shape == (500, 6) and rows.dtype == np.float32
    rows.block_rows = 7  # many blocks, some requested rows in each, some blocks skipped
    for wanted in (np.array([499, 3, 0, 3, 250]), np.flatnonzero(rng.random(500) < 0.05), slice(10, 400), slice(None)):
        assert np.array_equal(rows[wanted], attribution[wanted])
    with pytest.raises(IndexError):
        rows[np.array([500])]
    compressed = read_npz_arrays(tmp_path / "c.npz", ("attribution",))["attribution"]
    assert isinstance(compressed, np.ndarray) and np.array_equal(compressed, attribution)  # read whole instead


def test_npz_stream_refuses_missing_rows_and_misfit_blocks(tmp_path):
    with NpzStream(tmp_path / "s.npz", 4) as stream:
        stream.write("x", 0, np.zeros((2, 3)))
        with pytest.raises(ValueError, match="does not fit"):
            stream.write("x", 2, np.zeros((2, 5)))
        with pytest.raises(ValueError, match="received 2 of 4 rows"):
            stream.finish({}, {})
    assert not (tmp_path / "s.npz").exists() and not list(tmp_path.iterdir())


def test_unit_moments_in_blocks_equal_one_block():
    rng = np.random.default_rng(2)
    x, y = rng.normal(2, 1, (300, 7)), rng.random(300) < 0.3
    x[:, 2] = 5.0
    whole = unit_sensitivity(x, y)
    moments = UnitMoments()
    for start in range(0, 300, 37):
        moments.update(x[start:start + 37], y[start:start + 37])
    blocks = moments.solve()
    for name in whole:
        assert np.allclose(whole[name], blocks[name], atol=1e-10), name


def test_synthetic_images_are_the_same_however_indexed():
    images = SyntheticImages(50, (3, 4, 4), seed=1)
    mask = torch.zeros(50, dtype=torch.bool)
    mask[[3, 7, 40]] = True
    assert torch.equal(images[[3, 7, 40]], images[mask])
    assert torch.equal(images[5:9][2], images[7:8][0])
    batches = [batch for _, batch in device_batches(images, 16, torch.device("cpu"))]
    assert torch.equal(torch.cat(batches), images[0:50])


@pytest.mark.parametrize("arch,shape,layer", [
    ("mlp", (64,), "features.1"), ("cnn", (1, 8, 8), "features.2"), ("resnet18-cifar", (3, 16, 16), "layer3"),
])
def test_bf16_autocast_stays_within_the_stated_tolerance(arch, shape, layer):
    """The README's tolerance: bf16 autocast changes a batch's attributions by at most 10 % in relative norm."""
    model = _model(arch, shape)
    for seed in range(3):
        generator = torch.Generator().manual_seed(seed)
        inputs, labels = torch.randn(32, *shape, generator=generator), torch.randint(0, 5, (32,), generator=generator)
        exact, _ = attr.gradient_x_activation(model, inputs, labels, layer)
        with autocast(torch.device("cpu"), "bf16"):
            rough, _ = attr.gradient_x_activation(model, inputs, labels, layer)
        assert (rough.float() - exact).norm() <= 0.1 * exact.norm()


def _trained_mlp(tmp_path):
    noise, model = tmp_path / "noise.npz", tmp_path / "m.safetensors"
    inject_noise("digits", "symmetric", 0.4, 0, noise)
    train("digits", "mlp", model, Recipe(epochs=1), noise=noise, device="cpu")
    return noise, model


def test_streamed_stages_float16_and_float32(tmp_path):
    noise, model = _trained_mlp(tmp_path)
    for dtype in ("float32", "float16"):
        out = tmp_path / f"scores-{dtype}.npz"
        summary = stages.attribute(model, "digits", out, noise=noise, dtype=dtype, device="cpu")
        arrays, meta = load_npz(out, "scores")
        assert arrays["attribution"].dtype == np.dtype(dtype) and summary["units"] == arrays["attribution"].shape[1]
        assert set(arrays) == {"attribution", "loss", "confidence", "margin", "predicted", "label", "index",
                               "input_high_pass"}
    wide, _ = load_npz(tmp_path / "scores-float32.npz", "scores")
    narrow, _ = load_npz(tmp_path / "scores-float16.npz", "scores")
    assert np.allclose(narrow["attribution"], wide["attribution"], rtol=1e-3, atol=1e-4)
    assert np.array_equal(narrow["loss"], wide["loss"])
    split = tmp_path / "partition.npz"
    stages.partition(tmp_path / "scores-float16.npz", split)
    result = stages.sensitivity(model, "digits", split, tmp_path / "sens.npz", noise=noise, device="cpu")
    assert result["units"] == 128


def test_sensitivity_stage_matches_the_in_memory_regression(tmp_path):
    noise, model = _trained_mlp(tmp_path)
    split = tmp_path / "partition.npz"
    stages.attribute(model, "digits", tmp_path / "scores.npz", noise=noise, device="cpu")
    stages.partition(tmp_path / "scores.npz", split)
    stages.sensitivity(model, "digits", split, tmp_path / "sens.npz", noise=noise, batch_size=100, device="cpu")
    streamed, _ = load_npz(tmp_path / "sens.npz", "sensitivity")
    from denoise.cli.data.samples import load_samples
    from denoise.cli.files.checkpoint import load_checkpoint

    checkpoint = load_checkpoint(model)
    samples = load_samples("digits", "train", checkpoint.info, noise)
    units, _ = attr.layer_activations(checkpoint.model, samples.inputs[:], "head:input")
    whole = unit_sensitivity(units.numpy(), ~load_npz(split, "partition")[0]["is_clean"])
    assert np.allclose(streamed["coefficient"], whole["coefficient"], atol=1e-8)


@pytest.mark.slow
def test_bench_perf_reports_the_five_ratios(denoise):
    result = denoise("bench", "perf", "--arch", "mlp", "--data", "digits", "--train-steps", "3", "--loop-batches", "1",
                     "--repeats", "2", "--device", "cpu", "--json")
    assert result.code == 0, result.err
    record = result.json
    for key in ("attribution_vs_inference", "batched_vs_loop", "max_abs_diff", "rss_10n_vs_n", "pipeline_vs_retrain"):
        assert np.isfinite(record[key]) and record[key] >= 0, key
    assert record["max_abs_diff"] < 1e-5
    assert set(record["stages"]) == {"inference", "attribution", "attribute", "partition", "sensitivity", "prune",
                                     "finetune", "finetune-head", "retrain"}


def test_bench_perf_rejects_an_architecture_without_a_mid_layer(denoise):
    result = denoise("bench", "perf", "--arch", "tv:resnet18", "--n", "4", "--json")
    assert result.code != 0 and "--mid-layer" in result.err
