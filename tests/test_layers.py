"""Tests for cwhawq.layers: layer discovery, kinds, MACs, order and pins."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
import torch
import torchvision
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from cwhawq.errors import CwhawqError
from cwhawq.layers import LayerInfo, discover_layers, layer_weight, unquantized_weights
from cwhawq.quantizer import WeightQuantizer
from tests.toy_models import DigitsLSTM, DigitsPositionEmbedding, DigitsTransformer, TiedTokenModel


class Toy(nn.Module):
    """conv2d -> depthwise -> grouped (strided) -> conv1d -> linear; modules declared out of execution order."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6 * 7, 5)
        self.unused = nn.Linear(3, 3)
        self.conv = nn.Conv2d(4, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.grp = nn.Conv2d(8, 12, 1, stride=2, groups=2)
        self.conv1d = nn.Conv1d(12, 6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.grp(self.dw(torch.relu(self.bn(self.conv(x)))))  # (N, 12, 3, 3)
        x = self.conv1d(x.flatten(2))  # (N, 6, 7)
        return self.fc(x.flatten(1))


def toy_layers(pin: dict[str, int] | None = None) -> dict[str, LayerInfo]:
    torch.manual_seed(0)
    return {layer.name: layer for layer in discover_layers(Toy(), torch.randn(1, 4, 6, 6), pin)}


def test_order_skips_unused_modules() -> None:
    layers = discover_layers(Toy(), torch.randn(1, 4, 6, 6))
    assert [layer.name for layer in layers] == ["conv", "dw", "grp", "conv1d", "fc"]


def test_kinds_and_static_features() -> None:
    layers = toy_layers()
    assert {name: layer.kind for name, layer in layers.items()} == {
        "conv": "conv", "dw": "depthwise", "grp": "grouped", "conv1d": "conv", "fc": "linear",
    }
    assert [layers[n].dims for n in ("conv", "conv1d", "fc")] == [2, 1, 0]
    grp = layers["grp"]
    assert (grp.in_channels, grp.out_channels, grp.kernel_size, grp.stride, grp.groups) == (8, 12, (1, 1), (2, 2), 2)
    assert (grp.params, grp.params_per_channel, grp.input_size) == (12 * 4, 4, (6, 6))
    fc = layers["fc"]
    assert (fc.in_channels, fc.out_channels, fc.kernel_size, fc.stride, fc.groups) == (42, 5, (), (), 1)
    assert fc.input_size == ()
    assert (fc.params, fc.params_per_channel) == (210, 42)
    assert layers["conv1d"].input_size == (9,)
    assert layers["conv1d"].params_per_channel == 12 * 3


def test_macs_hand_computed() -> None:
    layers = toy_layers()
    expected = {
        "conv": (8 * 6 * 6) * 4 * 9,
        "dw": (8 * 6 * 6) * 1 * 9,
        "grp": (12 * 3 * 3) * 4 * 1,
        "conv1d": (6 * 7) * 12 * 3,
        "fc": 5 * 42,
    }
    assert {name: layer.macs for name, layer in layers.items()} == expected


def test_batch_larger_than_one_uses_one_sample() -> None:
    one = discover_layers(Toy(), torch.randn(1, 4, 6, 6))
    many = discover_layers(Toy(), torch.randn(7, 4, 6, 6))
    assert one == many


def test_conv3d_layer_features_and_macs() -> None:
    conv3d = nn.Conv3d(2, 4, (1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))
    model = nn.Sequential(conv3d, nn.Flatten(), nn.Linear(144, 3))
    conv = discover_layers(model, torch.randn(1, 2, 4, 6, 6))[0]
    assert (conv.kind, conv.dims, conv.kernel_size, conv.stride, conv.input_size) == (
        "conv", 3, (1, 3, 3), (1, 2, 2), (4, 6, 6)
    )
    assert conv.macs == (4 * 4 * 3 * 3) * 2 * 9  # outputs (4 channels x 4 x 3 x 3) x inputs per output


@pytest.mark.parametrize("groups", [1, 2])
def test_transposed_conv_channels_are_weight_rows(groups: int) -> None:
    up = nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=groups)
    model = nn.Sequential(up, nn.Flatten(), nn.Linear(6 * 10 * 10, 3))
    layer = discover_layers(model, torch.randn(1, 4, 5, 5))[0]
    # weight (4, 6 / groups, 3, 3): four rows, each quantized as one channel
    assert (layer.out_channels, layer.in_channels, layer.params_per_channel) == (4, 6, 6 // groups * 9)
    assert (layer.kind, layer.input_size) == ("conv" if groups == 1 else "grouped", (5, 5))
    assert layer.macs == (4 * 5 * 5) * (6 // groups) * 9  # every input value meets one kernel per output channel
    quantizer = WeightQuantizer(model, [layer])
    quantizer.apply({layer.name: np.array([2, 3, 4, 8])})
    assert len(torch.unique(up.weight[0])) <= 3  # 2 bits: at most three values in the first row


def test_linear_macs_count_leading_dims() -> None:
    model = nn.Linear(4, 2)
    (layer,) = discover_layers(model, torch.randn(1, 3, 4))
    assert layer.macs == 3 * 2 * 4


class Shared(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Linear(4, 4)
        self.block = nn.Linear(4, 4)
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.block(self.first(self.block(x))))


def test_shared_module_listed_once_with_summed_macs() -> None:
    layers = discover_layers(Shared(), torch.randn(1, 4))
    assert [layer.name for layer in layers] == ["block", "first", "head"]
    assert layers[0].macs == 2 * 16


def test_tied_weights_are_one_layer_with_the_macs_of_every_use() -> None:
    model = TiedTokenModel()
    with pytest.warns(UserWarning, match="'unembed' uses the weight of 'embed' \\(tied weights\\)"):
        layers = {layer.name: layer for layer in discover_layers(model, torch.randint(0, 17, (1, 5)))}
    assert list(layers) == ["embed", "mix", "head"]
    assert layers["embed"].macs == 5 * 17 * 8  # the projection's products; the lookup has none
    assert unquantized_weights(model, list(layers.values())) == {}
    WeightQuantizer(model, list(layers.values()))  # one tensor, one owner


def test_modes_and_buffers_untouched() -> None:
    model = Toy().train()
    model.dw.eval()
    mean = model.bn.running_mean.clone()
    discover_layers(model, torch.randn(2, 4, 6, 6))
    assert model.training and model.conv.training and not model.dw.training
    assert torch.equal(model.bn.running_mean, mean)
    assert model.bn.num_batches_tracked.item() == 0


def test_pins_by_fnmatch_pattern() -> None:
    layers = toy_layers({"conv*": 8, "fc": 4})
    assert {name: layer.pinned_bits for name, layer in layers.items()} == {
        "conv": 8, "dw": None, "grp": None, "conv1d": 8, "fc": 4,
    }


def test_pin_matching_nothing_is_an_error_naming_it() -> None:
    with pytest.raises(CwhawqError, match="'classifier.\\*'") as info:
        toy_layers({"classifier.*": 8})
    assert "\n" not in str(info.value)


def test_conflicting_pins_are_an_error() -> None:
    with pytest.raises(CwhawqError, match="conv1d"):
        toy_layers({"conv*": 8, "*1d": 4})


@pytest.mark.parametrize("bits", [1, 17, 24, 31, 33, 4.0, "8", True])
def test_invalid_pin_bits(bits: object) -> None:
    with pytest.raises(CwhawqError, match="bit-width"):
        toy_layers({"fc": bits})  # type: ignore[dict-item]


def test_no_quantizable_layer_is_an_error() -> None:
    with pytest.raises(CwhawqError, match="no quantizable layer"):
        discover_layers(nn.Sequential(nn.ReLU(), nn.Flatten()), torch.randn(1, 4))


def test_quantizable_layer_that_never_runs_does_not_count() -> None:
    class Skips(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * 2

    with pytest.raises(CwhawqError, match="no quantizable layer"):
        discover_layers(Skips(), torch.randn(1, 4))


@settings(max_examples=25, deadline=None)
@given(
    in_groups=st.integers(1, 3),
    groups=st.integers(1, 3),
    out_mult=st.integers(1, 2),
    kernel=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    stride=st.integers(1, 2),
    padding=st.integers(0, 1),
    size=st.tuples(st.integers(3, 7), st.integers(3, 7)),
)
def test_conv2d_macs_and_params_property(
    in_groups: int, groups: int, out_mult: int, kernel: tuple[int, int], stride: int, padding: int,
    size: tuple[int, int],
) -> None:
    in_ch, out_ch = in_groups * groups, out_mult * groups
    conv = nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=padding, groups=groups)
    (layer,) = discover_layers(conv, torch.randn(1, in_ch, *size))
    out_size = [(s + 2 * padding - k) // stride + 1 for s, k in zip(size, kernel)]
    assert layer.macs == out_ch * math.prod(out_size) * in_groups * math.prod(kernel)
    assert layer.params == out_ch * in_groups * math.prod(kernel) == layer.params_per_channel * out_ch
    expected_kind = "conv" if groups == 1 else ("depthwise" if groups == in_ch else "grouped")
    assert layer.kind == expected_kind
    assert layer.input_size == size


def test_torchvision_resnet18() -> None:
    model = torchvision.models.resnet18(weights=None, num_classes=10)
    layers = discover_layers(model, torch.randn(1, 3, 32, 32))
    assert len(layers) == 21
    assert Counter(layer.kind for layer in layers) == {"conv": 20, "linear": 1}
    assert (layers[0].name, layers[-1].name) == ("conv1", "fc")
    assert layers[0].macs == (64 * 16 * 16) * 3 * 49
    assert all(model.get_submodule(layer.name).weight.numel() == layer.params for layer in layers)


def test_torchvision_mobilenet_v2() -> None:
    model = torchvision.models.mobilenet_v2(weights=None, num_classes=10)
    layers = discover_layers(model, torch.randn(1, 3, 32, 32), pin={"features.0.*": 8})
    assert len(layers) == 53
    assert Counter(layer.kind for layer in layers) == {"conv": 35, "depthwise": 17, "linear": 1}
    assert layers[0].name == "features.0.0" and layers[0].pinned_bits == 8
    assert all(layer.pinned_bits is None for layer in layers[1:])
    assert layers[-1].name == "classifier.1"


def test_transformer_layers_attention_projections_included() -> None:
    # PyTorch's fused encoder path (eval, no grad) calls no Linear, but it is not taken while hooks are attached;
    # attention uses its projections' weights directly, so they are found through the attention module's hook.
    model = DigitsTransformer().eval()
    layers = {layer.name: layer for layer in discover_layers(model, torch.randn(1, 1, 8, 8))}
    assert list(layers) == ["embed", "encoder.self_attn.in_proj_weight", "encoder.self_attn.out_proj",
                            "encoder.linear1", "encoder.linear2", "head"]  # fmt: skip
    packed, out = layers["encoder.self_attn.in_proj_weight"], layers["encoder.self_attn.out_proj"]
    assert (packed.kind, packed.in_channels, packed.out_channels, packed.params) == ("linear", 16, 48, 48 * 16)
    assert packed.macs == (8 + 2 * 8) * 16 * 16  # queries, keys and values of 8 tokens
    assert (out.kind, out.out_channels, out.macs) == ("linear", 16, 8 * 16 * 16)
    assert layer_weight(model, packed.name) is model.encoder.self_attn.in_proj_weight
    assert layer_weight(model, out.name) is model.encoder.self_attn.out_proj.weight


@pytest.mark.parametrize("batch_first", [True, False])
def test_attention_called_with_keywords_and_either_layout(batch_first: bool) -> None:
    class Attend(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attn = nn.MultiheadAttention(8, 2, batch_first=batch_first)
            self.head = nn.Linear(8, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            tokens = x.reshape(1, 8, 8) if batch_first else x.reshape(8, 1, 8)
            memory = tokens[:, :4] if batch_first else tokens[:4]
            attended = self.attn(query=tokens, key=memory, value=memory, need_weights=False)[0]
            return self.head(attended.mean(dim=1 if batch_first else 0))

    layers = {layer.name: layer for layer in discover_layers(Attend(), torch.randn(1, 64))}
    assert layers["attn.in_proj_weight"].macs == (8 + 2 * 4) * 8 * 8  # 8 queries, 4 keys and values
    assert layers["attn.out_proj"].macs == 8 * 8 * 8


@pytest.mark.parametrize("cell", [nn.LSTM, nn.GRU, nn.RNN])
def test_recurrent_weight_matrices_are_layers(cell: type[nn.RNNBase]) -> None:
    class Recurrent(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = cell(8, 6, num_layers=2, batch_first=True, bidirectional=True)
            self.head = nn.Linear(12, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.rnn(x.reshape(x.shape[0], 5, 8))[0][:, -1])

    model = Recurrent()
    layers = {layer.name: layer for layer in discover_layers(model, torch.randn(1, 40))}
    gates = {nn.LSTM: 4, nn.GRU: 3, nn.RNN: 1}[cell]
    matrices = [f"rnn.weight_{kind}_l{depth}{direction}" for depth in (0, 1) for direction in ("", "_reverse")
                for kind in ("ih", "hh")]  # fmt: skip
    assert sorted(layers) == sorted([*matrices, "head"])
    first = layers["rnn.weight_ih_l0"]
    assert (first.kind, first.out_channels, first.in_channels) == ("linear", gates * 6, 8)
    assert first.macs == 5 * gates * 6 * 8  # one matrix-vector product per step of the 5-step sequence
    assert layers["rnn.weight_ih_l1_reverse"].in_channels == 12  # both directions of the layer below
    assert layer_weight(model, "rnn.weight_hh_l1") is model.rnn.weight_hh_l1
    assert unquantized_weights(model, list(layers.values())) == {}


def test_recurrent_cell_called_per_step() -> None:
    class Cell(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.cell = nn.LSTMCell(8, 6)
            self.head = nn.Linear(6, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            state = None
            for step in x.reshape(x.shape[0], 5, 8).unbind(1):
                state = self.cell(step, state)
            return self.head(state[0])

    layers = {layer.name: layer for layer in discover_layers(Cell(), torch.randn(1, 40))}
    assert list(layers) == ["cell.weight_ih", "cell.weight_hh", "head"]
    assert layers["cell.weight_hh"].macs == 5 * 24 * 6  # five calls


def test_packed_sequence_and_attention_with_other_key_widths() -> None:
    class Mixed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.gru = nn.GRU(8, 4)
            self.attn = nn.MultiheadAttention(4, 2, kdim=8, vdim=8)  # separate projections, no packed weight

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            steps = x.reshape(5, 1, 8)
            packed = nn.utils.rnn.pack_padded_sequence(steps, torch.tensor([5]))
            hidden = self.gru(packed)[1]  # (1, 1, 4)
            return self.attn(hidden, steps, steps, need_weights=False)[0].flatten(1)

    model = Mixed()
    layers = {layer.name: layer for layer in discover_layers(model, torch.randn(1, 40))}
    assert list(layers) == ["gru.weight_ih_l0", "gru.weight_hh_l0", "attn.q_proj_weight", "attn.k_proj_weight",
                            "attn.v_proj_weight", "attn.out_proj"]  # fmt: skip
    assert layers["gru.weight_ih_l0"].macs == 5 * 12 * 8  # 5 packed steps
    assert layers["attn.q_proj_weight"].macs == 1 * 4 * 4  # one query
    assert layers["attn.k_proj_weight"].macs == 5 * 4 * 8  # five keys of width 8
    assert layers["attn.out_proj"].macs == 1 * 4 * 4
    assert unquantized_weights(model, list(layers.values())) == {}


def test_embedding_rows_are_channels_with_no_macs() -> None:
    class Bag(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.tokens = nn.Embedding(30, 6)
            self.bag = nn.EmbeddingBag(20, 4, mode="sum")
            self.head = nn.Linear(10, 3)

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            return self.head(torch.cat([self.tokens(ids).mean(1), self.bag(ids % 20)], dim=1))

    model = Bag()
    layers = {layer.name: layer for layer in discover_layers(model, torch.randint(0, 30, (2, 7)))}
    assert list(layers) == ["tokens", "bag", "head"]
    tokens, bag = layers["tokens"], layers["bag"]
    assert (tokens.kind, tokens.out_channels, tokens.in_channels, tokens.params_per_channel) == ("embedding", 30, 6, 6)
    assert (bag.kind, bag.out_channels, bag.params, bag.macs, tokens.macs) == ("embedding", 20, 80, 0, 0)
    assert tokens.kernel_size == () and tokens.input_size == ()
    assert unquantized_weights(model, list(layers.values())) == {}


def test_layer_weight_of_an_unknown_layer_is_a_one_line_error() -> None:
    with pytest.raises(CwhawqError, match="no layer 'missing.in_proj_weight'"):
        layer_weight(Toy(), "missing.in_proj_weight")
    with pytest.raises(CwhawqError, match="no layer 'bn'"):
        layer_weight(Toy(), "bn")  # a 1-dim weight is not a layer's


def test_unquantized_weights_lists_what_stays_fp32() -> None:
    model = DigitsTransformer()
    left = unquantized_weights(model, discover_layers(model, torch.randn(1, 1, 8, 8)))
    assert left == {}  # every weight of the transformer is quantized; biases and norms are not listed
    lstm = DigitsLSTM()
    assert unquantized_weights(lstm, discover_layers(lstm, torch.randn(1, 1, 8, 8))) == {}
    embedded = DigitsPositionEmbedding()
    assert unquantized_weights(embedded, discover_layers(embedded, torch.randn(1, 1, 8, 8))) == {"position": 64}
    toy = Toy()
    assert unquantized_weights(toy, discover_layers(toy, torch.randn(1, 4, 6, 6))) == {"unused.weight": 9}
