"""Files read a batch at a time: results that do not depend on how they were read, augmentation recorded and
reused, and unreadable files found before any work starts."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from denoise.cli.data import load_data
from denoise.cli.data.source import Inputs, TensorSource, as_inputs
from denoise.cli.files.checkpoint import read_metadata
from denoise.cli.files.stage_files import load_npz
from denoise.core.attribution import attribute_batches
from denoise.core.layers import default_layer

from conftest import ROOT

CIFAR10 = ROOT.parent / "shared" / "datasets" / "cifar10"
SCORES = ("attribution", "loss", "confidence", "margin", "predicted", "input_high_pass", "label", "index")


def _image(label: int, k: int, size: int = 20) -> Image.Image:
    """A class-coloured image with a per-file pattern, so that classes separate and files differ."""
    rng = np.random.default_rng(100 * label + k)
    pixels = rng.integers(0, 60, (size, size, 3)).astype(np.uint8)
    pixels[..., label % 3] += 150
    return Image.fromarray(pixels)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """imagefolder: 3 classes x 10 images (JPEG and PNG) of 20 x 20, and a model trained on it."""
    root = tmp_path_factory.mktemp("images")
    for label in range(3):
        (root / f"c{label}").mkdir()
        for k in range(10):
            _image(label, k).save(root / f"c{label}" / f"{k:02d}.{'png' if k % 3 == 0 else 'jpg'}")
    return root


def _trained(denoise, tmp_path, data, *extra):
    model = tmp_path / "model.safetensors"
    result = denoise("train", "--data", data, "--arch", "cnn", "--epochs", 2, "--batch-size", 8, "--out", model,
                     "--json", *extra)
    assert result.code == 0, result.err
    return model


def _scores(denoise, model, data, out, *extra):
    result = denoise("attribute", "--model", model, "--data", data, "--out", out, "--json", *extra)
    assert result.code == 0, result.err
    return load_npz(out, "scores")[0]


def test_score_files_do_not_depend_on_workers_batch_size_or_the_cache(denoise, folder, tmp_path, monkeypatch):
    data = f"imagefolder:{folder}?size=16"
    model = _trained(denoise, tmp_path, data)
    cached = _scores(denoise, model, data, tmp_path / "cached.npz", "--workers", 0)
    monkeypatch.setattr("denoise.cli.data.source.cache_budget_bytes", lambda: 1000)
    assert not isinstance(load_data(data).inputs.source, TensorSource), "the small budget should stream"
    for workers in (0, 2):
        streamed = _scores(denoise, model, data, tmp_path / f"w{workers}.npz", "--workers", workers)
        for name in SCORES:
            assert np.array_equal(streamed[name], cached[name]), (name, workers)
    # another batch size: the same samples, in order; values up to the convolution kernels' float reordering
    other = _scores(denoise, model, data, tmp_path / "b7.npz", "--workers", 2, "--batch-size", 7)
    for name in SCORES:
        assert np.allclose(other[name], cached[name], rtol=1e-5, atol=1e-6), name
    assert np.array_equal(other["predicted"], cached["predicted"]) and np.array_equal(other["index"], cached["index"])


def test_in_memory_arrays_and_their_lazy_view_give_the_same_scores(denoise, tmp_path):
    model = tmp_path / "model.safetensors"
    assert denoise("train", "--data", "digits", "--arch", "mlp", "--epochs", 2, "--out", model).code == 0
    from denoise.cli.data.samples import load_samples
    from denoise.cli.files.checkpoint import load_checkpoint

    checkpoint = load_checkpoint(model)
    samples = load_samples("digits", "train", checkpoint.info)
    tensor = samples.inputs[:]
    layer = default_layer(checkpoint.model, tensor)
    whole = list(attribute_batches(checkpoint.model, tensor, samples.labels, layer))
    lazy = list(attribute_batches(checkpoint.model, as_inputs(tensor), samples.labels, layer))
    for (s, a), (t, b) in zip(whole, lazy):
        assert s == t and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.skipif(not CIFAR10.is_dir(), reason=f"CIFAR-10 JPEG folder not found at {CIFAR10} (../shared/datasets)")
def test_cifar10_folder_cached_and_streamed_give_the_same_score_file(denoise, tmp_path, monkeypatch):
    data = f"imagefolder:{CIFAR10}?per_class=15"
    model = _trained(denoise, tmp_path, data)
    cached = _scores(denoise, model, data, tmp_path / "cached.npz")
    monkeypatch.setattr("denoise.cli.data.source.cache_budget_bytes", lambda: 1000)
    streamed = _scores(denoise, model, data, tmp_path / "streamed.npz", "--workers", 2)
    for name in SCORES:
        assert np.array_equal(streamed[name], cached[name]), name


def test_a_lazy_view_reads_like_the_tensor_it_views():
    tensor = torch.arange(2 * 5 * 3, dtype=torch.uint8).reshape(10, 3)
    view = Inputs.of(TensorSource(tensor)).normalized({"mean": [0.5], "std": [2.0]})
    expected = (tensor.float() / 255 - 0.5) / 2.0
    rows = np.array([7, 2, 2])
    assert torch.equal(view[rows], expected[rows]) and torch.equal(view[3], expected[3])
    assert torch.equal(view.take(rows)[1:], expected[rows][1:])
    assert torch.equal(view[torch.arange(10) % 3 == 0], expected[::3]) and view.shape == (10, 3)


def test_augmentation_is_recorded_reused_and_the_same_with_any_workers(denoise, folder, tmp_path):
    data = f"imagefolder:{folder}?size=16"
    models = {}
    for workers in (0, 2):
        out = tmp_path / f"flip{workers}.safetensors"
        result = denoise("train", "--data", data, "--arch", "cnn", "--epochs", 2, "--batch-size", 8, "--augment",
                         "flip-crop", "--workers", workers, "--out", out)
        assert result.code == 0, result.err
        models[workers] = out
    assert read_metadata(models[0])["augment"] == "flip-crop"
    from safetensors.torch import load_file

    zero, two = load_file(models[0]), load_file(models[2])
    assert all(torch.equal(zero[k], two[k]) for k in zero), "augmentation must not depend on the loader workers"
    plain = _trained(denoise, tmp_path, data)
    assert not all(torch.equal(zero[k], v) for k, v in load_file(plain).items()), "flip-crop changed nothing"

    # finetune reuses the recorded recipe unless told otherwise
    scores = _scores(denoise, models[0], data, tmp_path / "scores.npz")
    assert len(scores["label"]) == 30
    assert denoise("partition", "--scores", tmp_path / "scores.npz", "--out", tmp_path / "p.npz").code == 0
    for given, expected in ((None, "flip-crop"), ("none", "none")):
        out = tmp_path / f"tuned-{given}.safetensors"
        extra = () if given is None else ("--augment", given)
        result = denoise("finetune", "--model", models[0], "--data", data, "--partition", tmp_path / "p.npz",
                         "--epochs", 1, "--out", out, *extra)
        assert result.code == 0, result.err
        meta = read_metadata(out)
        assert meta["provenance"]["options"]["augment"] == expected and meta["augment"] == "flip-crop"


def test_augmentation_of_inputs_that_are_not_images_is_refused(denoise, tmp_path):
    flat = tmp_path / "flat.npz"
    np.savez(flat, x=np.random.default_rng(0).normal(size=(40, 6)).astype(np.float32), y=np.arange(40) % 2)
    result = denoise("train", "--data", f"npz:{flat}", "--arch", "mlp", "--epochs", 1, "--augment", "flip-crop",
                     "--out", tmp_path / "m.safetensors")
    assert result.code == 1 and "--augment" in result.err and not (tmp_path / "m.safetensors").exists()


def _truncate(file, keep: float = 0.5):
    data = file.read_bytes()
    file.write_bytes(data[: int(len(data) * keep)])


def test_a_truncated_jpeg_is_named_before_training_starts(denoise, folder, tmp_path, monkeypatch):
    import shutil

    broken = tmp_path / "images"
    shutil.copytree(folder, broken)
    _truncate(broken / "c1" / "04.jpg")

    def decode(*_args, **_kwargs):
        raise AssertionError("an image was decoded for training before every file was checked")

    monkeypatch.setattr("denoise.cli.data.source.cache_budget_bytes", lambda: 1000)  # streamed: decoded as training reads
    monkeypatch.setattr("denoise.cli.data.images.decode_image", decode)
    out = tmp_path / "model.safetensors"
    result = denoise("train", "--data", f"imagefolder:{broken}", "--arch", "cnn", "--epochs", 1, "--out", out)
    lines = result.err.strip().splitlines()
    assert result.code == 2 and len(lines) == 1 and "c1/04.jpg" in lines[0], result.err
    assert not out.exists() and list(tmp_path.glob("model*")) == []


def test_skip_unreadable_records_what_it_skipped(denoise, folder, tmp_path):
    import shutil

    broken = tmp_path / "images"
    shutil.copytree(folder, broken)
    _truncate(broken / "c2" / "05.jpg")
    (broken / "c0" / "01.jpg").write_bytes(b"not an image at all")
    data = f"imagefolder:{broken}?size=16"
    model = _trained(denoise, tmp_path, data, "--skip-unreadable")
    skipped = read_metadata(model)["provenance"]["results"]["skipped_files"]
    assert sorted(entry["path"] for entry in skipped) == ["c0/01.jpg", "c2/05.jpg"]
    assert all(entry["problem"] for entry in skipped)
    result = denoise("attribute", "--model", model, "--data", data, "--out", tmp_path / "s.npz", "--json",
                     "--skip-unreadable")
    assert result.code == 0 and result.json["samples"] == 28, result.err
    meta = load_npz(tmp_path / "s.npz", "scores")[1]
    assert json.dumps(meta["results"]["skipped_files"]) == json.dumps(skipped)
    assert "skipped 2 unreadable" in result.err


def _shards(folder, out, per_shard: int = 7):
    """The folder's images written as WebDataset shards (``KEY.jpg|png`` + ``KEY.cls`` class names)."""
    import webdataset

    out.mkdir()
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    with webdataset.ShardWriter(str(out / "train-%06d.tar"), maxcount=per_shard, verbose=0) as sink:
        for k, file in enumerate(files):
            sink.write({"__key__": f"{k:05d}", file.suffix[1:]: file.read_bytes(), "cls": file.parent.name})
    return len(list(out.glob("*.tar")))


def test_wds_shards_give_the_data_of_the_folder_they_were_written_from(folder, tmp_path):
    count = _shards(folder, tmp_path / "shards")
    pattern = f"wds:{tmp_path}/shards/train-{{000000..{count - 1:06d}}}.tar?size=16"
    shards, images = load_data(pattern), load_data(f"imagefolder:{folder}?size=16")
    assert count > 1 and shards.classes == images.classes and torch.equal(shards.labels, images.labels)
    assert torch.equal(shards.inputs[:], images.inputs[:])
    assert shards.origin.paths[0].endswith("train-000000.tar/00000.png")


def test_wds_names_a_missing_shard_and_a_sample_without_label(folder, tmp_path):
    import tarfile

    count = _shards(folder, tmp_path / "shards")
    with tarfile.open(tmp_path / "bad.tar", "w") as archive:
        archive.add(folder / "c0" / "00.png", arcname="x.png")
    with pytest.raises(Exception, match=r"bad.tar#x: needs an image"):
        load_data(f"wds:{tmp_path}/bad.tar")
    with pytest.raises(Exception, match=f"train-{count:06d}.tar: no such shard file"):
        load_data(f"wds:{tmp_path}/shards/train-{{000000..{count:06d}}}.tar")


@pytest.mark.slow
def test_bench_scale_prints_its_figures(denoise, tmp_path):
    result = denoise("bench", "scale", "--n", 10, "--size", 32, "--batch-size", 16, "--workdir", tmp_path, "--json")
    assert result.code == 0, result.err
    record = result.json
    assert set(record["peak_rss_mb"]) == {"attribute_10", "attribute_80", "finetune_10", "finetune_80"}
    assert all(value > 0 for value in record["rss_8n_vs_n"].values())
    assert record["attribute_vs_loop"] > 0 and set(record["workers_images_per_s"]) == {"1", "2", "4"}
    assert len(list((tmp_path / "images-80").rglob("*.jpg"))) == 80


@pytest.mark.slow
def test_bench_scale_runs_train_and_run_end_to_end(denoise, tmp_path):
    result = denoise("bench", "scale", "--run-n", 40, "--size", 32, "--workdir", tmp_path, "--json")
    assert result.code == 0, result.err
    record = result.json
    assert record["n"] == 40 and record["train_peak_rss_mb"] > 0 and record["run_peak_rss_mb"] > 0
    assert {"attribute", "partition", "sensitivity", "prune", "finetune"} <= set(record["stage_seconds"])
    assert record["chosen"] in ("input", "round1") and (tmp_path / "run-40" / "run.json").is_file()


def test_take_keeps_a_tensor_a_tensor_and_a_view_a_view():
    from denoise.core.batches import take

    tensor = torch.arange(12.0).reshape(6, 2)
    rows = np.array([4, 1])
    assert torch.equal(take(tensor, rows), tensor[[4, 1]])  # not torch.Tensor.take (flat indices)
    view = take(as_inputs(tensor), np.arange(6) % 2 == 0)
    assert isinstance(view, Inputs) and torch.equal(view[:], tensor[::2])


def test_a_killed_attribute_resumes_from_what_it_had_written(denoise, tmp_path, monkeypatch):
    import denoise.cli.stages as stages

    model = tmp_path / "model.safetensors"
    assert denoise("train", "--data", "digits", "--arch", "mlp", "--epochs", 2, "--out", model).code == 0
    whole = _scores(denoise, model, "digits", tmp_path / "whole.npz", "--batch-size", 100)
    real, seen = stages.attribute_batches, []

    def killed_after_three(*args, **kwargs):
        for k, batch in enumerate(real(*args, **kwargs)):
            if k == 3:
                raise KeyboardInterrupt
            yield batch

    def counted(*args, **kwargs):
        for batch in real(*args, **kwargs):
            seen.append(batch[0])
            yield batch

    out = tmp_path / "scores.npz"
    monkeypatch.setattr(stages, "attribute_batches", killed_after_three)
    with pytest.raises(KeyboardInterrupt):
        stages.attribute(model, "digits", out, batch_size=100, resume=True)
    assert not out.exists() and json.loads((tmp_path / ".scores.npz.resume" / "state.json").read_text())["done"] == 300
    monkeypatch.setattr(stages, "attribute_batches", counted)
    stages.attribute(model, "digits", out, batch_size=100, resume=True)
    assert sum(s.stop - s.start for s in seen) == 1437 - 300, "the resumed run scored the written rows again"
    resumed = load_npz(out, "scores")[0]
    assert all(np.array_equal(resumed[name], whole[name]) for name in SCORES)
    assert not (tmp_path / ".scores.npz.resume").exists()
    # a resume state of other options is not continued
    monkeypatch.setattr(stages, "attribute_batches", killed_after_three)
    with pytest.raises(KeyboardInterrupt):
        stages.attribute(model, "digits", out, batch_size=100, resume=True, target="max")
    seen.clear()
    monkeypatch.setattr(stages, "attribute_batches", counted)
    stages.attribute(model, "digits", out, batch_size=100, resume=True)
    assert sum(s.stop - s.start for s in seen) == 1437


def test_an_unreadable_recording_is_checked_and_skipped_like_an_image(tmp_path):
    import soundfile

    from denoise.cli.data.source import set_reading

    rng = np.random.default_rng(0)
    for digit in range(2):
        for k in range(5, 9):  # index 5 and above: the train split
            soundfile.write(tmp_path / f"{digit}_ann_{k}.wav", rng.normal(0, 0.1, 8000).astype(np.float32), 8000)
    soundfile.write(tmp_path / "1_ann_9.wav", np.zeros(800, np.float32), 16000)  # another sample rate
    (tmp_path / "0_ann_9.wav").write_bytes(b"RIFF\x00\x00not audio")
    spec = f"fsdd:{tmp_path}"
    with pytest.raises(Exception, match="0_ann_9.wav: is not a readable audio file.*skip-unreadable"):
        load_data(spec)
    set_reading(skip_unreadable=True)
    try:
        data = load_data(spec)
    finally:
        set_reading()
    assert len(data.labels) == 8 and sorted(e["path"] for e in data.origin.skipped) == ["0_ann_9.wav", "1_ann_9.wav"]
