"""The CUDA path: the same attributions, scores and masks on a GPU as on the CPU.

Skipped where torch sees no CUDA device (CI has none); run where a GPU is lent. On one device the batched and
looped attributions agree to float32 rounding; across devices they differ more, because cuDNN convolves in TF32
(10 mantissa bits) by default, so CPU and GPU are compared in relative norm.
"""

import numpy as np
import pytest
import torch

from denoise.cli.files.checkpoint import load_checkpoint, read_metadata
from denoise.core.batches import autocast
from denoise.core import attribution as attr
from denoise.core.attribution import layer_activations
from denoise.core.models import create_model
from conftest import TINY

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device: the GPU path is not checked")
CUDA = torch.device("cuda")
RELATIVE = 1e-3  # same device, another summation order
ACROSS_DEVICES = 1e-2  # relative norm, CPU float32 vs GPU TF32 convolutions


def _model(arch, shape):
    torch.manual_seed(0)
    return create_model(arch, shape, 5).eval()


def _relative_gap(a, b):
    """Largest difference relative to the largest value of ``b``."""
    return float((a.float().cpu() - b.float().cpu()).abs().max() / b.float().abs().max().clamp_min(1e-12))


def _relative_norm(a, b):
    """||a - b|| / ||b||."""
    return float((a.float().cpu() - b.float().cpu()).norm() / b.float().norm().clamp_min(1e-12))


@pytest.mark.parametrize("arch,shape,layer", [
    ("mlp", (12,), "features.1"),
    ("cnn", (1, 8, 8), "features.0"),
    ("resnet18-cifar", (3, 32, 32), "layer3"),
])
def test_cuda_attributions_match_the_loop_and_the_cpu(arch, shape, layer):
    model = _model(arch, shape)
    inputs, labels = torch.randn(32, *shape), torch.randint(0, 5, (32,))
    on_cpu, _ = attr.gradient_x_activation(model, inputs, labels, layer)
    model.to(CUDA)
    fast, logits = attr.gradient_x_activation(model, inputs.to(CUDA), labels.to(CUDA), layer)
    slow, slow_logits = attr.gradient_x_activation_loop(model, inputs.to(CUDA), labels.to(CUDA), layer)
    again, _ = attr.gradient_x_activation(model, inputs.to(CUDA), labels.to(CUDA), layer)
    assert fast.device.type == "cuda"
    print(f"{arch} {layer}: batched vs loop {_relative_gap(fast, slow):.2e}, repeat {_relative_gap(again, fast):.2e}, "
          f"GPU vs CPU {_relative_norm(fast, on_cpu):.2e} (relative norm)")
    assert _relative_gap(fast, slow) <= RELATIVE
    assert _relative_gap(again, fast) <= RELATIVE  # repeatable up to summation order
    assert torch.allclose(logits, slow_logits, rtol=RELATIVE, atol=RELATIVE)
    assert _relative_norm(fast, on_cpu) <= ACROSS_DEVICES


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_cuda_autocast_stays_within_the_stated_tolerance(precision):
    model = _model("cnn", (1, 8, 8)).to(CUDA)
    inputs, labels = torch.randn(64, 1, 8, 8, device=CUDA), torch.randint(0, 5, (64,), device=CUDA)
    exact, _ = attr.gradient_x_activation(model, inputs, labels, "features.2")
    with autocast(CUDA, precision):
        rough, _ = attr.gradient_x_activation(model, inputs, labels, "features.2")
    print(f"{precision}: {_relative_norm(rough, exact):.2e} (relative norm)")
    assert _relative_norm(rough, exact) <= 0.1  # the README's tolerance, as on the CPU


def test_stages_on_cuda_agree_with_cpu_and_keep_pruned_units_removed(denoise, tmp_path):
    data, noise, model = f"npz:{TINY}", tmp_path / "noise.npz", tmp_path / "noisy.safetensors"
    assert denoise("inject-noise", "--data", data, "--kind", "symmetric", "--rate", 0.3, "--out", noise).code == 0
    assert denoise("train", "--data", data, "--noise", noise, "--arch", "cnn", "--epochs", 20, "--out", model,
                   "--device", "cuda").code == 0
    for device in ("cpu", "cuda"):
        result = denoise("attribute", "--model", model, "--data", data, "--noise", noise, "--layer", "features.4",
                         "--device", device, "--out", tmp_path / f"scores-{device}.npz")
        assert result.code == 0, result.err
    with np.load(tmp_path / "scores-cpu.npz") as cpu, np.load(tmp_path / "scores-cuda.npz") as gpu:
        for name in ("attribution", "loss"):
            gap = np.linalg.norm(cpu[name] - gpu[name]) / np.linalg.norm(cpu[name])
            print(f"scores file, {name}: GPU vs CPU {gap:.2e} (relative norm)")
            assert gap <= ACROSS_DEVICES, name
    steps = [("partition", "--scores", tmp_path / "scores-cuda.npz", "--out", tmp_path / "partition.npz"),
             ("sensitivity", "--model", model, "--data", data, "--noise", noise, "--layer", "features.4",
              "--partition", tmp_path / "partition.npz", "--device", "cuda", "--out", tmp_path / "sensitivity.npz"),
             ("prune", "--model", model, "--sensitivity", tmp_path / "sensitivity.npz", "--count", 3,
              "--out", tmp_path / "pruned.safetensors"),
             ("finetune", "--model", tmp_path / "pruned.safetensors", "--data", data, "--noise", noise,
              "--partition", tmp_path / "partition.npz", "--epochs", 3, "--device", "cuda",
              "--out", tmp_path / "clean.safetensors")]
    for step in steps:
        result = denoise(*step)
        assert result.code == 0, result.err
    masks = read_metadata(tmp_path / "clean.safetensors")["masks"]
    removed = torch.as_tensor(masks["features.4"]["removed"])
    assert len(removed) == 3
    checkpoint = load_checkpoint(tmp_path / "clean.safetensors", CUDA)
    units, _ = layer_activations(checkpoint.model.eval(), torch.randn(16, *checkpoint.info.input_shape, device=CUDA),
                                 "features.4")
    assert torch.count_nonzero(units[:, removed.to(CUDA)]) == 0, "a pruned unit is active after fine-tuning on CUDA"
