"""Tests for cwhawq.quantizer: the vectorized per-channel fake quantizer and the in-place WeightQuantizer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from cwhawq.data import Split
from cwhawq.errors import CwhawqError
from cwhawq.evaluation import log_probs
from cwhawq.layers import LayerInfo, discover_layers
from cwhawq.quantizer import WeightQuantizer, integer_codes, quantize_per_channel
from tests.toy_models import DigitsTransformer

# Realistic weight magnitudes plus exact zeros; subnormal channel maxima are out of scope (their scale underflows).
values = st.one_of(
    st.just(0.0),
    st.floats(2.0**-20, 2.0**10, width=32),
    st.floats(-(2.0**10), -(2.0**-20), width=32),
)


@st.composite
def weights_and_bits(draw: st.DrawFn) -> tuple[torch.Tensor, torch.Tensor]:
    """A float32 weight of 1 to 4 dims (some channels all zero) and random per-channel bits in [2, 16]."""
    shape = draw(st.lists(st.integers(1, 4), min_size=1, max_size=4))
    n = int(np.prod(shape))
    w = torch.tensor(draw(st.lists(values, min_size=n, max_size=n)), dtype=torch.float32).reshape(shape)
    zero_rows = draw(st.lists(st.booleans(), min_size=shape[0], max_size=shape[0]))
    w[torch.tensor(zero_rows)] = 0.0
    bits = torch.tensor(draw(st.lists(st.integers(2, 16), min_size=shape[0], max_size=shape[0])))
    return w, bits


def reference_quantize(w: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
    """Per-channel Python loop straight from the formula, the oracle for the vectorized version."""
    out = torch.empty_like(w)
    for c in range(w.shape[0]):
        m = w[c].abs().max()
        levels = 2 ** (int(bits[c]) - 1) - 1
        if m == 0:
            out[c] = 0.0
            continue
        s = m / levels
        out[c] = torch.clamp(torch.round(w[c] / s), -levels, levels) * s
    return out


def layer_info(name: str, module: nn.Module) -> LayerInfo:
    """A LayerInfo for tests, built directly; only name and out_channels matter to the quantizer."""
    w = module.weight
    return LayerInfo(
        name=name, kind="linear" if isinstance(module, nn.Linear) else "conv", dims=w.dim() - 2 if w.dim() > 2 else 0,
        in_channels=w.shape[1], out_channels=w.shape[0], kernel_size=tuple(w.shape[2:]), stride=(1,) * (w.dim() - 2),
        groups=1, params=w.numel(), params_per_channel=w[0].numel(), macs=0, input_size=(), pinned_bits=None,
    )


class SmallNet(nn.Module):
    """Five quantizable layers of mixed kinds, about 100k weights in all."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Conv2d(1, 16, 3)
        self.conv2 = nn.Conv2d(16, 64, 3)
        self.conv3 = nn.Conv1d(64, 64, 5)
        self.fc1 = nn.Linear(768, 96)
        self.fc2 = nn.Linear(96, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv2(torch.relu(self.conv1(x)))
        x = self.conv3(torch.relu(x).flatten(2))  # the 4x4 map as a length-16 sequence
        return self.fc2(torch.relu(self.fc1(torch.relu(x).flatten(1))))


def model_and_layers() -> tuple[SmallNet, list[LayerInfo]]:
    model = SmallNet()
    names = ["conv1", "conv2", "conv3", "fc1", "fc2"]
    return model, [layer_info(n, model.get_submodule(n)) for n in names]


def random_assignment(layers: list[LayerInfo], seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {layer.name: rng.integers(2, 9, size=layer.out_channels) for layer in layers}


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def assert_bit_exact(model: nn.Module, saved: dict[str, torch.Tensor]) -> None:
    for k, v in model.state_dict().items():
        assert torch.equal(v, saved[k]), k


# --- quantize_per_channel -------------------------------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(weights_and_bits())
def test_matches_per_channel_reference_loop(case: tuple[torch.Tensor, torch.Tensor]) -> None:
    w, bits = case
    assert torch.equal(quantize_per_channel(w, bits), reference_quantize(w, bits))


@settings(max_examples=100, deadline=None)
@given(weights_and_bits())
def test_values_on_grid_and_within_channel_range(case: tuple[torch.Tensor, torch.Tensor]) -> None:
    w, bits = case
    q = quantize_per_channel(w, bits)
    for c in range(w.shape[0]):
        m = w[c].abs().max().double()
        levels = 2 ** (int(bits[c]) - 1) - 1
        if m == 0:
            assert torch.all(q[c] == 0)
            continue
        codes = q[c].double() / (m / levels)
        assert torch.allclose(codes, codes.round(), atol=1e-3)
        assert torch.all(codes.round().abs() <= levels)
        assert torch.all(q[c].double().abs() <= m * (1 + 1e-6))


@settings(max_examples=100, deadline=None)
@given(weights_and_bits())
def test_error_bound_shrinks_with_bits(case: tuple[torch.Tensor, torch.Tensor]) -> None:
    # The max error of one channel is not monotone in the bits (a value can sit on the 3-bit grid but not on the
    # 4-bit one), but it never exceeds half a step, s_b / 2, which strictly shrinks as b grows.
    w, _ = case
    m = w.abs().reshape(w.shape[0], -1).amax(dim=1).double()
    previous_bound = torch.full_like(m, float("inf"))
    for b in range(2, 17):
        q = quantize_per_channel(w, torch.full((w.shape[0],), b))
        err = (q.double() - w.double()).abs().reshape(w.shape[0], -1).amax(dim=1)
        bound = m / (2 ** (b - 1) - 1) / 2
        assert torch.all(err <= bound + m * 1e-6)  # slack for float32 rounding of w / s and of round(.) * s
        assert torch.all((bound < previous_bound) | (m == 0))
        previous_bound = bound


@settings(max_examples=100, deadline=None)
@given(weights_and_bits())
def test_integer_codes_times_scales_are_the_quantized_weight(case: tuple[torch.Tensor, torch.Tensor]) -> None:
    w, bits = case
    codes, scales = integer_codes(w, bits)
    assert codes.dtype == (torch.int8 if int(bits.max()) <= 8 else torch.int16)
    rebuilt = codes.to(torch.float32) * scales.view(-1, *([1] * (w.dim() - 1)))
    assert torch.equal(rebuilt, quantize_per_channel(w, bits))
    limit = (2 ** (bits - 1) - 1).view(-1, *([1] * (w.dim() - 1)))
    assert bool((codes.abs() <= limit).all())


def test_mean_squared_error_decreases_with_bits() -> None:
    w = torch.randn(32, 64, generator=torch.Generator().manual_seed(0))
    mse = [float(((quantize_per_channel(w, torch.full((32,), b)) - w) ** 2).mean()) for b in range(2, 17)]
    assert all(a > b for a, b in zip(mse, mse[1:]))


def test_known_values() -> None:
    w = torch.tensor([[1.0, -0.4, 0.2, 0.6], [0.0, 0.0, 0.0, 0.0], [-3.0, 1.1, 0.0, 2.0]])
    q = quantize_per_channel(w, torch.tensor([2, 8, 3]))
    # 2 bits: grid {-1, 0, 1}; 3 bits with max 3: step 1.
    assert torch.equal(q[0], torch.tensor([1.0, 0.0, 0.0, 1.0]))
    assert torch.equal(q[1], torch.zeros(4))
    assert torch.equal(q[2], torch.tensor([-3.0, 1.0, 0.0, 2.0]))


def test_codes_are_clamped_when_the_scale_is_inexact() -> None:
    # A subnormal channel maximum makes s = m / L inexact, so m / s can round past L: the clamp must catch it.
    w = torch.tensor([[1e-40, -1e-40, 5e-41], [1e-40, 0.0, -2e-41]])
    bits = torch.tensor([16, 12])
    q = quantize_per_channel(w, bits)
    assert torch.equal(q, reference_quantize(w, bits))
    for c, b in enumerate(bits.tolist()):
        levels = 2 ** (b - 1) - 1
        s = w[c].abs().max() / levels
        assert torch.all(torch.round(q[c] / s).abs() <= levels)


def test_does_not_modify_input_and_keeps_dtype() -> None:
    w = torch.randn(3, 5, dtype=torch.float64)
    before = w.clone()
    q = quantize_per_channel(w, torch.tensor([2, 4, 8]))
    assert torch.equal(w, before) and q.dtype == torch.float64


@pytest.mark.parametrize(
    "bits", [torch.tensor([1, 4, 8]), torch.tensor([2, 4, 17]), torch.tensor([2.0, 4.0, 8.0]), torch.tensor([2, 4])]
)
def test_rejects_invalid_bits(bits: torch.Tensor) -> None:
    with pytest.raises(CwhawqError):
        quantize_per_channel(torch.randn(3, 5), bits)


# --- WeightQuantizer ------------------------------------------------------------------------------------------------


def test_apply_quantizes_listed_layers_like_quantize_per_channel() -> None:
    model, layers = model_and_layers()
    saved = snapshot(model)
    assignment = random_assignment(layers, seed=1)
    del assignment["fc2"]
    WeightQuantizer(model, layers).apply(assignment)
    for name, bits in assignment.items():
        expected = quantize_per_channel(saved[f"{name}.weight"], torch.from_numpy(bits))
        assert torch.equal(model.get_submodule(name).weight, expected), name
        assert torch.equal(model.get_submodule(name).bias, saved[f"{name}.bias"])
    assert torch.equal(model.fc2.weight, saved["fc2.weight"])


def test_apply_then_restore_is_bit_exact() -> None:
    model, layers = model_and_layers()
    saved = snapshot(model)
    quantizer = WeightQuantizer(model, layers)
    for seed in range(3):
        quantizer.apply(random_assignment(layers, seed))
        assert not torch.equal(model.conv2.weight, saved["conv2.weight"])
    quantizer.restore()
    assert_bit_exact(model, saved)


def test_apply_resets_layers_left_out_of_a_later_assignment() -> None:
    model, layers = model_and_layers()
    saved = snapshot(model)
    quantizer = WeightQuantizer(model, layers)
    quantizer.apply(random_assignment(layers, seed=0))
    quantizer.apply({"conv1": np.full(16, 4)})
    assert torch.equal(model.conv1.weight, quantize_per_channel(saved["conv1.weight"], torch.full((16,), 4)))
    for name in ["conv2", "conv3", "fc1", "fc2"]:
        assert torch.equal(model.get_submodule(name).weight, saved[f"{name}.weight"]), name


def test_quantized_context_restores_even_on_exception() -> None:
    model, layers = model_and_layers()
    saved = snapshot(model)
    quantizer = WeightQuantizer(model, layers)
    x = torch.randn(2, 1, 8, 8)
    with quantizer.quantized(random_assignment(layers, seed=0)) as m:
        assert m is model
        quantized_out = m(x)
    assert_bit_exact(model, saved)
    assert not torch.equal(quantized_out, model(x))
    with pytest.raises(RuntimeError, match="boom"):
        with quantizer.quantized(random_assignment(layers, seed=1)):
            raise RuntimeError("boom")
    assert_bit_exact(model, saved)


def test_apply_layer_quantizes_one_layer_and_keeps_the_others() -> None:
    model, layers = model_and_layers()
    saved = snapshot(model)
    quantizer = WeightQuantizer(model, layers)
    quantizer.apply({"fc1": np.full(96, 3)})
    bits = np.arange(64) % 7 + 2
    quantizer.apply_layer("conv2", bits)
    assert torch.equal(model.conv2.weight, quantize_per_channel(saved["conv2.weight"], torch.from_numpy(bits)))
    assert torch.equal(model.fc1.weight, quantize_per_channel(saved["fc1.weight"], torch.full((96,), 3)))
    assert torch.equal(model.conv1.weight, saved["conv1.weight"])
    quantizer.restore()
    assert_bit_exact(model, saved)


def test_invalid_assignment_raises_and_leaves_model_untouched() -> None:
    model, layers = model_and_layers()
    saved = snapshot(model)
    quantizer = WeightQuantizer(model, layers)
    bad = [
        {"conv1": np.full(16, 4), "nope": np.full(3, 4)},
        {"conv1": np.full(16, 4), "conv2": np.full(63, 4)},
        {"conv1": np.full(16, 4), "conv2": np.full(64, 1)},
        {"conv1": np.full(16, 4), "conv2": np.full(64, 4.0)},
    ]
    for assignment in bad:
        with pytest.raises(CwhawqError):
            quantizer.apply(assignment)
        assert_bit_exact(model, saved)
    with pytest.raises(CwhawqError, match="unknown layer"):
        quantizer.apply_layer("nope", np.full(3, 4))


def test_layer_at_32_bits_keeps_its_fp32_weights() -> None:
    # problem.pinned_assignment lists a layer pinned at 32 with 32 bits on every channel: it must stay unquantized.
    model, layers = model_and_layers()
    saved = snapshot(model)
    quantizer = WeightQuantizer(model, layers)
    quantizer.apply(random_assignment(layers, seed=0))
    quantizer.apply({"conv1": np.full(16, 32), "fc2": np.full(10, 4)})
    assert torch.equal(model.conv1.weight, saved["conv1.weight"])
    assert torch.equal(model.fc2.weight, quantize_per_channel(saved["fc2.weight"], torch.full((10,), 4)))
    quantizer.apply_layer("fc2", np.full(10, 32))
    assert_bit_exact(model, saved)
    with pytest.raises(CwhawqError):
        quantizer.apply({"conv1": np.array([32] * 15 + [8])})  # 32 means a whole FP32 layer, not one channel


def test_all_zero_channel_stays_zero_in_model() -> None:
    model, layers = model_and_layers()
    with torch.no_grad():
        model.fc2.weight[3] = 0.0
    quantizer = WeightQuantizer(model, layers)
    quantizer.apply({"fc2": np.full(10, 2)})
    assert torch.equal(model.fc2.weight[3], torch.zeros(96))
    assert torch.all(torch.isfinite(model.fc2.weight))


def test_constructor_rejects_layers_not_in_model_and_tied_weights() -> None:
    model, layers = model_and_layers()
    with pytest.raises(CwhawqError, match="has no layer .missing."):
        WeightQuantizer(model, [*layers, layer_info("missing", nn.Linear(2, 2))])
    with pytest.raises(CwhawqError, match="output channels"):
        WeightQuantizer(model, [layer_info("fc1", nn.Linear(768, 7))])
    tied = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    tied[1].weight = tied[0].weight
    with pytest.raises(CwhawqError, match="share one weight"):
        WeightQuantizer(tied, [layer_info("0", tied[0]), layer_info("1", tied[1])])


def test_apply_does_not_track_gradients() -> None:
    model, layers = model_and_layers()
    WeightQuantizer(model, layers).apply(random_assignment(layers, seed=0))
    assert model.conv1.weight.requires_grad and model.conv1.weight.grad_fn is None
    assert model.conv1.weight.is_leaf


def test_fused_attention_path_sees_the_quantized_weights() -> None:
    # Without hooks, a TransformerEncoderLayer in eval mode runs one fused kernel that reads the Linear weights
    # directly; the quantizer writes them in place, so the fused and the per-module paths must agree.
    torch.manual_seed(0)
    model = DigitsTransformer().eval()
    split = Split(torch.randn(32, 1, 8, 8), torch.zeros(32, dtype=torch.int64))
    layers = discover_layers(model, split.x)
    assert "encoder.self_attn.in_proj_weight" in [layer.name for layer in layers]  # read by the fused kernel too
    quantizer = WeightQuantizer(model, layers)
    full = log_probs(model, split)
    with quantizer.quantized({layer.name: np.full(layer.out_channels, 2) for layer in layers}):
        fused = log_probs(model, split)
        torch.backends.mha.set_fastpath_enabled(False)
        try:
            per_module = log_probs(model, split)
        finally:
            torch.backends.mha.set_fastpath_enabled(True)
    assert torch.allclose(fused, per_module, atol=1e-5)
    assert not torch.allclose(fused, full, atol=1e-3)
