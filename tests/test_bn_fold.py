"""Tests for cwhawq.bn_fold: folded models compute the same function without BatchNorm modules."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cwhawq.bn_fold import bake_parametrized_weights, fold_batchnorm
from cwhawq.layers import discover_layers
from cwhawq.models import build_builtin


def randomize_batchnorm(model: nn.Module, seed: int) -> None:
    """Give every BatchNorm non-trivial running statistics and affine parameters."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                n = module.num_features
                module.running_mean.copy_(torch.randn(n, generator=generator))
                module.running_var.copy_(torch.rand(n, generator=generator) * 2 + 0.2)
                module.weight.copy_(torch.rand(n, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(n, generator=generator))


def has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


class ConvBN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1d = nn.Conv1d(1, 4, 3, padding=1)
        self.bn1d = nn.BatchNorm1d(4)
        self.conv = nn.Conv2d(1, 5, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(5)
        self.dw = nn.Conv2d(5, 5, 3, groups=5)
        self.bn_dw = nn.BatchNorm2d(5)
        self.fc = nn.Linear(4 * 16 + 5 * 2 * 2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = torch.relu(self.bn1d(self.conv1d(x.flatten(2))))
        b = torch.relu(self.bn_dw(self.dw(torch.relu(self.bn(self.conv(x))))))
        return self.fc(torch.cat([a.flatten(1), b.flatten(1)], 1))


def test_random_conv_bn_model_output_preserved() -> None:
    torch.manual_seed(0)
    model = ConvBN()
    randomize_batchnorm(model, seed=1)
    model.eval()
    x = torch.randn(8, 1, 4, 4)
    folded = fold_batchnorm(model)
    assert not has_batchnorm(folded)
    assert not folded.training
    torch.testing.assert_close(folded(x), model(x), rtol=1e-5, atol=1e-5)
    # the folding really changed the weights (so the test above could fail)
    assert not torch.equal(folded.get_submodule("conv").weight, model.conv.weight)


def test_conv3d_bn_folded() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.BatchNorm3d(4), nn.ReLU())
    randomize_batchnorm(model, seed=3)
    model.eval()
    x = torch.randn(2, 1, 3, 5, 5)
    folded = fold_batchnorm(model)
    assert not has_batchnorm(folded)
    torch.testing.assert_close(folded(x), model(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_transposed_conv_bn_folded_but_not_grouped_ones(dims: int) -> None:
    torch.manual_seed(0)
    transposed = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)[dims - 1]
    norm = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)[dims - 1]
    model = nn.Sequential(
        transposed(3, 4, 3, stride=2), norm(4), nn.ReLU(), transposed(4, 6, 2, groups=2), norm(6), nn.ReLU()
    )
    randomize_batchnorm(model, seed=4)
    model.eval()
    x = torch.randn(2, 3, *[4] * dims)
    folded = fold_batchnorm(model)
    torch.testing.assert_close(folded(x), model(x), rtol=1e-5, atol=1e-5)
    kinds = [type(module) for module in folded.children()]
    assert kinds.count(norm) == 1  # the grouped convolution's BatchNorm stays
    assert not torch.equal(folded.get_submodule("0").weight, model[0].weight)
    assert [layer.name for layer in discover_layers(folded, x)] == ["0", "3"]


def test_resnet_mini_output_preserved_and_names_kept() -> None:
    torch.manual_seed(0)
    model = build_builtin("resnet_mini", 10, (1, 28, 28))
    randomize_batchnorm(model, seed=2)
    model.train()  # fold must work from a training-mode model and leave it as it was
    x = torch.rand(4, 1, 28, 28)
    folded = fold_batchnorm(model)
    assert model.training and has_batchnorm(model)
    assert not has_batchnorm(folded)
    expected = model.eval()(x)
    torch.testing.assert_close(folded(x), expected, rtol=1e-5, atol=1e-5)
    names = [layer.name for layer in discover_layers(model, x)]
    assert [layer.name for layer in discover_layers(folded, x)] == names
    assert "layer2.shortcut.0" in names


def test_original_model_untouched() -> None:
    torch.manual_seed(0)
    model = ConvBN()
    randomize_batchnorm(model, seed=3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fold_batchnorm(model)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


class Untraceable(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3)
        self.bn = nn.BatchNorm2d(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn(self.conv(x))
        if y.sum() > 0:  # data-dependent control flow: torch.fx cannot trace it
            return y
        return -y


def test_untraceable_model_falls_back_with_warning() -> None:
    torch.manual_seed(0)
    model = Untraceable()
    randomize_batchnorm(model, seed=4)
    model.train()
    x = torch.randn(2, 1, 5, 5)
    with pytest.warns(UserWarning, match="BatchNorm was not folded"):
        folded = fold_batchnorm(model)
    assert folded is not model and not folded.training and model.training
    assert has_batchnorm(folded)
    torch.testing.assert_close(folded(x), model.eval()(x), rtol=0, atol=0)


def _normalised(kind: str) -> nn.Module:
    """Conv and Linear layers whose weights torch recomputes from other tensors at every forward."""
    torch.manual_seed(0)
    conv, linear = nn.Conv2d(1, 4, 3, padding=1), nn.Linear(4 * 8 * 8, 10)
    wrap = {
        "weight_norm": nn.utils.parametrizations.weight_norm,
        "spectral_norm": nn.utils.parametrizations.spectral_norm,
        "hook_weight_norm": nn.utils.weight_norm,
        "hook_spectral_norm": nn.utils.spectral_norm,
    }[kind]
    return nn.Sequential(wrap(conv), nn.ReLU(), nn.Flatten(), wrap(linear))


@pytest.mark.filterwarnings("ignore:`torch.nn.utils.weight_norm` is deprecated:FutureWarning")
@pytest.mark.parametrize("kind", ["weight_norm", "spectral_norm", "hook_weight_norm", "hook_spectral_norm"])
def test_parametrized_weights_are_baked_into_plain_parameters(kind: str) -> None:
    model = _normalised(kind)
    x = torch.randn(3, 1, 8, 8)
    model(x).sum().backward()  # as after training: the hook-based forms keep a weight with an autograd graph
    model.eval()
    with torch.no_grad():
        expected = model(x)
    model(x)
    baked = bake_parametrized_weights(model)
    assert baked is not model
    for index in (0, 3):
        weight = baked[index].weight
        assert isinstance(weight, nn.Parameter) and weight.is_leaf
        assert not baked[index]._forward_pre_hooks
    with torch.no_grad():
        torch.testing.assert_close(baked(x), expected)
        baked[3].weight.zero_()  # an in-place write, as the quantizer makes, stays until the next forward
        assert torch.count_nonzero(baked(x) - baked[3].bias) == 0
    # the user's model keeps its parametrization
    assert nn.utils.parametrize.is_parametrized(model[0], "weight") or model[0]._forward_pre_hooks


def test_plain_model_is_returned_as_is() -> None:
    model = build_builtin("digits_cnn", 10, (1, 8, 8))
    assert bake_parametrized_weights(model) is model
