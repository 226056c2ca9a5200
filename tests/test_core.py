"""denoise.core: the method's pure functions."""

import numpy as np
import pytest
import torch

from conftest import FIXTURES
from denoise.core import attribution as attr
from denoise.core.layers import LayerError, apply_unit_masks, classifier_name, default_layer, layer_hook
from denoise.core.models import ModelError, create_model
from denoise.core.noise import asymmetric_noise, gaussian_input_noise, instance_noise, symmetric_noise
from denoise.core.metrics import classification_metrics, detection_metrics
from denoise.core.partition import clean_probability, prototype_margin
from denoise.core.pruning import prune_mask
from denoise.core.sensitivity import unit_sensitivity
from denoise.core.training import (epoch_order, make_optimizer, shrink_parameters,
                                   train_epoch)


def _model(arch, shape, seed=0):
    torch.manual_seed(seed)
    return create_model(arch, shape, 5).eval()


@pytest.mark.parametrize("arch,shape,layer", [
    ("mlp", (12,), "features.1"),          # a hidden Linear block's post-activation output
    ("mlp", (12,), "features.2:input"),
    ("cnn", (1, 8, 8), "features.2"),       # a Conv2d block's output: per-channel reduction
    ("kws", (1, 8, 8), "features.7"),
    ("resnet18-cifar", (3, 8, 8), "layer3"),
])
def test_batched_attribution_matches_per_class_loop(arch, shape, layer):
    model = _model(arch, shape)
    inputs = torch.randn(7, *shape)
    labels = torch.tensor([0, 1, 2, 3, 4, 0, 1])
    for target in (labels, "max"):
        fast, logits = attr.gradient_x_activation(model, inputs, target, layer)
        slow, slow_logits = attr.gradient_x_activation_loop(model, inputs, target, layer)
        assert fast.shape == slow.shape and fast.shape[0] == 7
        assert torch.allclose(fast, slow, atol=1e-6)
        assert torch.allclose(logits, slow_logits)
        assert (fast >= 0).all()


def test_closed_form_head_matches_autograd():
    model = _model("mlp", (12,))
    inputs, labels = torch.randn(9, 12), torch.randint(0, 5, (9,))
    head = default_layer(model, inputs)
    assert head == "head:input"
    fast, _ = attr.gradient_x_activation(model, inputs, labels, head)
    slow, _ = attr.gradient_x_activation_loop(model, inputs, labels, head)
    assert torch.allclose(fast, slow, atol=1e-6)


def test_classifier_is_the_linear_whose_output_the_forward_pass_returns(monkeypatch):
    monkeypatch.syspath_prepend(str(FIXTURES))
    from user_models import head_first

    model = head_first((12,), 5).train()
    inputs, labels = torch.randn(9, 12), torch.randint(0, 5, (9,))
    assert [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)][-1] == "aux"
    assert classifier_name(model, inputs) == "head" and model.training  # traced in eval mode, mode restored
    fast, _ = attr.gradient_x_activation(model.eval(), inputs, labels, "head:input")
    slow, _ = attr.gradient_x_activation_loop(model, inputs, labels, "head:input")
    assert torch.allclose(fast, slow, atol=1e-6)
    # a hidden Linear's input is not the classifier's: the backward path, still exact
    fast, _ = attr.gradient_x_activation(model, inputs, labels, "backbone.1:input")
    slow, _ = attr.gradient_x_activation_loop(model, inputs, labels, "backbone.1:input")
    assert torch.allclose(fast, slow, atol=1e-6)


def test_output_not_from_a_linear_layer_names_the_candidates():
    model = torch.nn.Sequential(torch.nn.Linear(12, 8), torch.nn.ReLU(), torch.nn.Linear(8, 5), torch.nn.Softmax(1))
    with pytest.raises(LayerError, match=r"does not come from an nn.Linear layer \(Linear layers applied: 0, 2\)"):
        default_layer(model, torch.randn(3, 12))


def test_attribution_leaves_parameters_trainable():
    model = _model("mlp", (12,))
    attr.gradient_x_activation(model, torch.randn(3, 12), "max", "features.1")
    assert all(p.requires_grad for p in model.parameters())


def test_reused_module_is_refused():
    model = create_model("tv:resnet18", (3, 16, 16), 4).eval()
    with pytest.raises(LayerError, match="more than once"):
        attr.gradient_x_activation(model, torch.randn(2, 3, 16, 16), "max", "layer1.0.relu")
    scores, _ = attr.gradient_x_activation(model, torch.randn(2, 3, 16, 16), "max", "layer3")
    assert scores.shape == (2, 256)


def test_unknown_layer_and_architecture():
    model = _model("mlp", (12,))
    with pytest.raises(LayerError, match="unknown layer"):
        with layer_hook(model, "nope", lambda t: None):
            pass
    with pytest.raises(ModelError, match="unknown architecture"):
        create_model("nope", (12,), 3)
    with pytest.raises(ModelError, match="unknown torchvision"):
        create_model("tv:nope", (3, 8, 8), 3)


def test_masks_survive_training():
    model = _model("cnn", (1, 8, 8))
    keep = torch.ones(32, dtype=torch.bool)
    keep[[0, 5, 9]] = False
    head = classifier_name(model, torch.randn(1, 1, 8, 8))
    apply_unit_masks(model, {"features.0": keep, f"{head}:input": torch.arange(128) % 2 == 0})
    optimizer, _ = make_optimizer(model.parameters(), 3, lr=0.05)
    batches = [(torch.randn(8, 1, 8, 8), torch.randint(0, 5, (8,))) for _ in range(4)]
    for epoch in range(3):
        train_epoch(model, optimizer, batches, seed=0, epoch=epoch)
    activations, _ = attr.layer_activations(model.eval(), torch.randn(4, 1, 8, 8), "features.0")
    assert (activations[:, ~keep] == 0).all()
    assert (activations[:, keep] != 0).any()
    head_input, _ = attr.layer_activations(model, torch.randn(4, 1, 8, 8), "head:input")
    assert (head_input[:, 1::2] == 0).all()


def _two_clusters(n=400, units=6, seed=0):
    rng = np.random.default_rng(seed)
    is_noisy = rng.random(n) < 0.3
    attribution = np.abs(rng.normal(1.0, 0.3, (n, units)))
    attribution[is_noisy] *= 3
    loss = np.where(is_noisy, rng.gamma(4, 1.0, n), rng.gamma(1, 0.1, n))
    labels = rng.integers(0, 2, n)
    return {"attribution": attribution, "loss": loss}, labels, is_noisy


@pytest.mark.parametrize("per_class", [True, False])
def test_partition_finds_the_noisy_cluster_without_truth(per_class):
    scores, labels, is_noisy = _two_clusters()
    clean = clean_probability(scores, labels, per_class=per_class)
    assert clean.shape == (400,) and ((0 <= clean) & (clean <= 1)).all()
    metrics = detection_metrics(is_noisy, clean >= 0.5, clean)
    assert metrics["f1"] > 0.9 and metrics["auroc"] > 0.95


def test_prototype_margin_flags_samples_that_look_like_another_class():
    rng = np.random.default_rng(0)
    classes, per_class, units = 4, 60, 32
    patterns = rng.uniform(0, 3, (classes, units)) * (rng.uniform(size=(classes, units)) < 0.3)
    true = np.repeat(np.arange(classes), per_class)
    attribution = patterns[true] + rng.uniform(0, 0.3, (len(true), units))
    labels = true.copy()
    flipped = rng.uniform(size=len(true)) < 0.3
    labels[flipped] = (true[flipped] + rng.integers(1, classes, flipped.sum())) % classes
    margin = prototype_margin(attribution, labels)
    assert margin.shape == (len(true),) and (np.abs(margin) <= 2).all()
    assert margin[flipped].min() > margin[~flipped].max()
    clean = clean_probability({"attribution": attribution, "loss": rng.uniform(0, 1, len(true))}, labels,
                              features=("prototype",))
    assert detection_metrics(flipped, clean >= 0.5, clean)["f1"] > 0.95  # oriented by the margin, not by the (random) loss
    assert (prototype_margin(attribution[:10], np.zeros(10)) <= 0).all()  # one class: no other prototype


def test_auto_orientation_flags_corrupted_inputs_when_no_label_looks_wrong():
    """Correct labels, half the inputs corrupted: no sample is closer to another class's pattern, the
    corrupted ones carry more attribution energy and, memorized, a lower loss; auto flags them."""
    rng = np.random.default_rng(0)
    classes, per_class, units = 4, 80, 32
    patterns = rng.uniform(1, 3, (classes, units)) * (rng.uniform(size=(classes, units)) < 0.3)
    labels = np.repeat(np.arange(classes), per_class)
    attribution = patterns[labels] + rng.uniform(0, 0.3, (len(labels), units))
    corrupted = rng.uniform(size=len(labels)) < 0.5
    attribution[corrupted] = attribution[corrupted] * 4 + rng.uniform(0, 2, (corrupted.sum(), units))
    loss = np.where(corrupted, rng.uniform(1e-8, 1e-7, len(labels)), rng.uniform(1e-5, 1e-4, len(labels)))
    scores = {"attribution": attribution, "loss": loss}
    assert (prototype_margin(attribution, labels) <= 0).all()
    auto = clean_probability(scores, labels, features=("prototype", "loss"))
    assert detection_metrics(corrupted, auto >= 0.5, auto)["f1"] > 0.95
    by_loss = clean_probability(scores, labels, features=("prototype", "loss"), orient="loss")
    assert detection_metrics(corrupted, by_loss >= 0.5, by_loss)["f1"] < 0.05  # the higher-loss side is the clean one here
    with pytest.raises(ValueError, match="orient must be one of"):
        clean_probability(scores, labels, orient="nope")


def test_partition_rejects_unknown_features():
    scores, labels, _ = _two_clusters()
    with pytest.raises(ValueError, match="features must be a comma list"):
        clean_probability(scores, labels, features=("nope",))


def test_sensitivity_finds_the_noise_unit():
    rng = np.random.default_rng(1)
    is_noisy = rng.random(500) < 0.4
    units = rng.normal(size=(500, 8))
    units[:, 3] += 2 * is_noisy
    units[:, 6] -= 2 * is_noisy
    units[:, 7] = 1.0  # constant
    result = unit_sensitivity(units, is_noisy)
    assert result["rank_noisy"][3] == 0 and result["coefficient"][6] < 0 and result["coefficient"][7] == 0
    assert set(np.flatnonzero(result["rank"] < 2)) == {3, 6}
    assert 0.3 < result["r2"] <= 1


def test_prune_mask_by_sign_and_abs():
    coefficient = np.array([0.5, -0.9, 0.1, 0.0, 0.3])
    assert prune_mask(coefficient, count=2).tolist() == [False, True, True, True, False]
    assert prune_mask(coefficient, count=2, by="abs").tolist() == [False, False, True, True, True]
    assert prune_mask(coefficient, count=5).sum() == 2  # only the units pointing toward noisy
    again = prune_mask(coefficient, count=1, keep=np.array([False, True, True, True, True]))
    assert again.tolist() == [False, True, True, True, False]
    with pytest.raises(ValueError):
        prune_mask(coefficient, ratio=1.5)


def test_noise_kinds_flip_exactly_the_rate():
    labels = np.repeat(np.arange(4), 50)
    noisy, flipped = symmetric_noise(labels, 4, 0.4, 0)
    assert flipped.sum() == 80 and (noisy[flipped] != labels[flipped]).all()
    noisy, flipped = asymmetric_noise(labels, 4, 0.2, 0)
    assert flipped.sum() == 40 and (noisy[flipped] == (labels[flipped] + 1) % 4).all()
    inputs = np.random.default_rng(0).normal(size=(200, 6))
    noisy, flipped = instance_noise(labels, inputs, 4, 0.3, 0)
    assert flipped.sum() == 60 and not np.array_equal(noisy, symmetric_noise(labels, 4, 0.3, 0)[0])
    x = torch.zeros(5, 3)
    mask = np.array([True, False, True, False, False])
    keys = np.arange(5)
    once, twice = gaussian_input_noise(x, keys, mask, 4.5, 1), gaussian_input_noise(x, keys, mask, 4.5, 1)
    assert torch.equal(once, twice) and (once[~mask] == 0).all() and (once[mask] != 0).all()
    # a sample's noise is its own: read alone, in another order or batch, it is the same
    alone = gaussian_input_noise(x[[2]], keys[[2]], mask, 4.5, 1)
    assert torch.equal(alone[0], once[2]) and not torch.equal(once[0], once[2])


def test_epoch_order_and_metrics():
    assert torch.equal(epoch_order(10, 3, 2), epoch_order(10, 3, 2))
    assert not torch.equal(epoch_order(10, 3, 2), epoch_order(10, 3, 1))
    logits = torch.tensor([[3.0, 2.0, 1.0, 0.0], [0.0, 3.0, 2.0, 1.0], [0.0, 1.0, 2.0, 3.0]])
    metrics = classification_metrics(logits, torch.tensor([0, 2, 0]))
    assert metrics["accuracy"] == pytest.approx(1 / 3) and metrics["top3"] == pytest.approx(2 / 3)


def test_head_training_on_cached_features_equals_training_through_a_frozen_backbone():
    from denoise.core.training import classifier_inputs

    inputs, labels = torch.randn(40, 12), torch.randint(0, 5, (40,))
    through, cached = _model("mlp", (12,)), _model("mlp", (12,))
    features = classifier_inputs(cached, "head", [inputs[:16], inputs[16:]])
    for model, learner, data in ((through, through, inputs), (cached, cached.head, features)):
        optimizer, _ = make_optimizer(model.head.parameters(), 3)
        for epoch in range(3):
            order = epoch_order(40, 0, epoch)
            batches = [(data[order[i:i + 8]], labels[order[i:i + 8]]) for i in range(0, 40, 8)]
            train_epoch(learner, optimizer, batches, seed=0, epoch=epoch, frozen_batchnorm=True)
    for (name, a), (_, b) in zip(through.state_dict().items(), cached.state_dict().items()):
        assert torch.allclose(a, b, atol=1e-6), name
    assert not torch.equal(through.state_dict()["head.weight"], _model("mlp", (12,)).state_dict()["head.weight"])


def test_shrink_scales_only_the_trained_parameters_and_keeps_pruned_units_zero():
    model = _model("mlp", (12,))
    apply_unit_masks(model, {"features.1": torch.tensor([False] + [True] * 255)})
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    shrink_parameters(model.head.parameters(), 0.5)
    for name, p in model.named_parameters():
        assert torch.equal(p, before[name] * 0.5 if name.startswith("head.") else before[name])
    shrink_parameters(model.parameters(), 0.25)
    assert torch.allclose(model.features[1].weight, before["features.1.weight"] * 0.25)
    assert (model.features[1].weight[0] == 0).all()
    shrink_parameters(model.parameters(), 1.0)
    assert torch.allclose(model.features[1].weight, before["features.1.weight"] * 0.25)
    for bad in (0.0, 1.5, -1.0):
        with pytest.raises(ValueError):
            shrink_parameters(model.parameters(), bad)


def test_disagreement_flags_the_samples_predicted_as_another_class():
    from denoise.core.detectors import disagreement_split

    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4]])
    is_clean, score = disagreement_split(probs, np.array([0, 0, 2]))
    assert is_clean.tolist() == [True, False, True]
    assert np.allclose(score, [0.5, -0.7, 0.1])
