"""Bring your own model (issue 18): a torchvision model trained elsewhere, at its own input size and normalization,
is imported with them, and `denoise` scores it exactly as its owner's own evaluation does."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import TINY

SIZE = 48  # the owner trains at 48 x 48: not the 32 x 32 imagefolder: reads by default
IMAGENET = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
CLASSES = ("dim", "mid", "bright")


def _ok(result):
    assert result.code == 0, result.err
    return result.json


def _write_folder(root):
    """DIR/{train,test}/CLASS/*.png at SIZE x SIZE: a class is a brightness level under random texture (dark
    images, far from ImageNet's mean, so that statistics computed from the data differ from ImageNet's)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, count in (("train", 16), ("test", 10)):
        for level, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = 0.1 + 0.1 * level + rng.uniform(-0.07, 0.07, (SIZE, SIZE, 3))
                Image.fromarray((pixels * 255).round().astype(np.uint8)).save(folder / f"{i:02d}.png")


def _owner_batch(root, split):
    """The owner's own preprocessing (PIL -> ToTensor -> Normalize), in imagefolder:'s order (classes, then files
    sorted): (N, 3, SIZE, SIZE) inputs and (N,) labels."""
    from PIL import Image
    from torchvision import transforms

    prepare = transforms.Compose([transforms.ToTensor(), transforms.Normalize(*IMAGENET)])
    inputs, labels = [], []
    for label, name in enumerate(sorted(CLASSES)):
        for file in sorted((root / split / name).iterdir()):
            inputs.append(prepare(Image.open(file).convert("RGB")))
            labels.append(label)
    return torch.stack(inputs), torch.tensor(labels)


@pytest.fixture(scope="module")
def owned(tmp_path_factory):
    """The owner's side, in plain torch: an image folder, a torchvision ResNet-18 trained on it a few steps at 48 x 48
    with ImageNet normalization, its state dict saved as .pt, and its own test-split logits."""
    import torchvision

    root = tmp_path_factory.mktemp("owned")
    _write_folder(root / "imgs")
    inputs, labels = _owner_batch(root / "imgs", "train")
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=len(CLASSES))
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = None  # running statistics: the average over the few steps taken
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for step in range(12):
        rows = torch.randperm(len(labels), generator=torch.Generator().manual_seed(step))[:24]
        optimizer.zero_grad()
        F.cross_entropy(model(inputs[rows]), labels[rows]).backward()
        optimizer.step()
    model.eval()
    test_inputs, test_labels = _owner_batch(root / "imgs", "test")
    with torch.no_grad():
        logits = model(test_inputs)
    torch.save(model.state_dict(), root / "resnet18.pt")
    return {"root": root, "weights": root / "resnet18.pt", "logits": logits, "labels": test_labels,
            "accuracy": float((logits.argmax(1) == test_labels).float().mean())}


def test_imported_with_its_transform_scores_as_its_owner_does(denoise, owned, tmp_path):
    data = f"imagefolder:{owned['root'] / 'imgs'}?size={SIZE}"
    model = tmp_path / "m.safetensors"
    imported = _ok(denoise("import", "--arch", "tv:resnet18", "--weights", owned["weights"], "--data", data,
                           "--normalize", "imagenet", "--check-accuracy", owned["accuracy"], "--out", model, "--json"))
    assert imported["check"]["matches"] and imported["check"]["evaluated"] == pytest.approx(owned["accuracy"])
    assert owned["accuracy"] > 0.5  # a model that learned something (chance: 1/3)
    evaluated = _ok(denoise("evaluate", "--model", model, "--data", data, "--json"))
    assert evaluated["accuracy"] == pytest.approx(owned["accuracy"]) and evaluated["samples"] == len(owned["labels"])
    # attribute's per-sample statistics come from the same logits as the owner's forward pass, sample by sample
    scores = tmp_path / "scores.npz"
    attributed = _ok(denoise("attribute", "--model", model, "--data", data, "--split", "test", "--out", scores,
                             "--json"))
    assert attributed["layer"] == "fc:input"
    with np.load(scores, allow_pickle=False) as arrays:
        assert np.array_equal(arrays["predicted"], owned["logits"].argmax(1).numpy())
        assert np.array_equal(arrays["label"], owned["labels"].numpy())
        loss = F.cross_entropy(owned["logits"], owned["labels"], reduction="none").numpy()
        assert np.allclose(arrays["loss"], loss, atol=1e-4)
        confidence = owned["logits"].softmax(1).gather(1, owned["labels"][:, None])[:, 0].numpy()
        assert np.allclose(arrays["confidence"], confidence, atol=1e-5)
    inspected = _ok(denoise("inspect", model, "--json"))["input_transform"]
    assert inspected["data"]["size"] == SIZE and inspected["normalization"]["mean"] == IMAGENET[0]
    # data read at another size is refused, naming the size the checkpoint records
    other = denoise("evaluate", "--model", model, "--data", f"imagefolder:{owned['root'] / 'imgs'}")
    assert other.code == 2 and "[3, 32, 32]" in other.err and f"?size={SIZE}" in other.err


def test_import_without_its_transform_warns_when_the_owner_states_the_accuracy(denoise, owned, tmp_path):
    out = tmp_path / "m.safetensors"
    result = denoise("import", "--arch", "tv:resnet18", "--weights", owned["weights"], "--data",
                     f"imagefolder:{owned['root'] / 'imgs'}", "--check-accuracy", owned["accuracy"], "--out", out,
                     "--json")
    assert result.code == 0 and not result.json["check"]["matches"]
    assert abs(result.json["check"]["evaluated"] - owned["accuracy"]) > 0.01
    assert "warning" in result.err and "--normalize" in result.err and "?size=" in result.err


@pytest.mark.slow
def test_every_stage_runs_on_the_imported_model_with_its_transform(denoise, owned, tmp_path):
    from denoise.cli.files.checkpoint import read_metadata

    data = f"imagefolder:{owned['root'] / 'imgs'}?size={SIZE}"
    model = tmp_path / "m.safetensors"
    _ok(denoise("import", "--arch", "tv:resnet18", "--weights", owned["weights"], "--data", data,
                "--normalize", "imagenet", "--out", model, "--json"))
    ran = _ok(denoise("run", "--model", model, "--data", data, "--workdir", tmp_path / "work", "--rounds", 2,
                      "--round-epochs", 1, "--epochs", 1, "--batch-size", 16, "--holdout", 0, "--ratio", 0.1,
                      "--json"))  # --ratio given: pruned although the model may generalize
    transform = read_metadata(model)["input_transform"]
    assert transform == {"data": {"source": "imagefolder", "size": SIZE},
                         "normalization": {"mean": IMAGENET[0], "std": IMAGENET[1]}}
    for round_dir in ("round1", "round2"):
        assert (tmp_path / "work" / round_dir / "scores.npz").is_file()
    final = read_metadata(ran["model"])
    assert final["input_transform"] == transform and "fc:input" in final["masks"]  # pruned at the traced head
    evaluated = _ok(denoise("evaluate", "--model", ran["model"], "--data", data, "--json"))
    assert evaluated["samples"] == len(owned["labels"])


def test_default_layer_is_the_head_the_forward_pass_applies(denoise, tmp_path):
    """user_models:head_first registers its head before its backbone and an auxiliary Linear after it."""
    model, scores = tmp_path / "m.safetensors", tmp_path / "s.npz"
    _ok(denoise("train", "--data", f"npz:{TINY}", "--arch", "user_models:head_first", "--epochs", 2, "--out", model,
                "--json"))
    attributed = _ok(denoise("attribute", "--model", model, "--data", f"npz:{TINY}", "--arch",
                             "user_models:head_first", "--out", scores, "--json"))
    assert attributed["layer"] == "head:input" and attributed["units"] == 16


def test_bad_size_and_normalization_are_one_line_usage_errors(denoise, owned, tmp_path):
    folder, out = owned["root"] / "imgs", tmp_path / "m.safetensors"
    for args, problem in (
            (("--data", f"imagefolder:{folder}?size=big"), "size must be a whole number of at least 8"),
            (("--data", f"imagefolder:{folder}?size=4"), "at least 8 and at most 1024"),
            (("--data", f"imagefolder:{folder}", "--normalize", "0.5,0.5/0.2"), "one mean and one std per input"),
            (("--data", f"imagefolder:{folder}", "--normalize", "0.5/0"), "positive finite stds"),
            (("--data", f"imagefolder:{folder}", "--normalize", "imagenets"), "--normalize must be data, imagenet"),
            (("--input-shape", "3,48,48", "--num-classes", "3", "--normalize", "data"), "--normalize data needs --data"),
            (("--data", f"imagefolder:{folder}", "--check-accuracy", "19"), "fraction in [0, 1]")):
        result = denoise("import", "--arch", "tv:resnet18", "--weights", owned["weights"], *args, "--out", out)
        assert result.code == 1 and problem in result.err and len(result.err.strip().splitlines()) == 1, result.err
        assert not out.exists()


def test_train_records_the_normalization_it_is_given(denoise, tmp_path):
    from denoise.cli.files.checkpoint import read_metadata

    model = tmp_path / "m.safetensors"
    _ok(denoise("train", "--data", f"npz:{TINY}", "--arch", "mlp", "--epochs", 1, "--normalize", "0.5/0.25",
                "--out", model, "--json"))
    assert read_metadata(model)["input_transform"]["normalization"] == {"mean": [0.5], "std": [0.25]}
    assert _ok(denoise("evaluate", "--model", model, "--data", f"npz:{TINY}", "--json"))["samples"] > 0
    refused = denoise("train", "--data", f"npz:{TINY}", "--arch", "mlp", "--epochs", 1, "--normalize", "imagenet",
                      "--out", model)
    assert refused.code == 1 and "one mean and one std per input channel (1)" in refused.err


def test_cifar10_and_mnist_take_a_size(tmp_path):
    """The array-backed image readers resize too, and record the size; without ?size= they stay as stored."""
    import struct

    from denoise.cli.data import load_data

    rng = np.random.default_rng(0)
    cifar = tmp_path / "cifar"
    cifar.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        records = rng.integers(0, 256, (4, 3073), dtype=np.uint8)
        records[:, 0] = np.arange(4)
        records.tofile(cifar / f"{name}.bin")
    mnist = tmp_path / "mnist"
    mnist.mkdir()
    for prefix in ("train", "t10k"):
        images = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)
        (mnist / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">BBBBIII", 0, 0, 8, 3, 5, 28, 28)
                                                            + images.tobytes())
        (mnist / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">BBBBI", 0, 0, 8, 1, 5)
                                                            + bytes(range(5)))
    for spec, stored in ((f"cifar10:{cifar}", [3, 32, 32]), (f"mnist:{mnist}", [1, 28, 28])):
        as_stored, resized = load_data(spec, "test"), load_data(f"{spec}?size=40", "test")
        assert list(as_stored.inputs.shape[1:]) == stored and "size" not in as_stored.transform
        assert list(resized.inputs.shape[1:]) == [stored[0], 40, 40] and resized.transform["size"] == 40
        assert torch.equal(resized.labels, as_stored.labels)
        assert abs(float(resized.inputs.mean()) - float(as_stored.inputs.mean())) < 0.02  # the same images, resized


def test_an_architecture_module_that_cannot_be_imported_names_pythonpath(denoise, tmp_path):
    result = denoise("train", "--data", "digits", "--arch", "no_such_module_here:make", "--epochs", 1,
                     "--out", tmp_path / "m.safetensors")
    lines = result.err.strip().splitlines()
    assert result.code != 0 and len(lines) == 1 and "no_such_module_here" in lines[0] and "PYTHONPATH" in lines[0]
