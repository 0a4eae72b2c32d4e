"""torchvision architectures (random weights, small inputs, no download): traces, env steps, a short rollout."""

import warnings

import numpy as np
import pytest
import torch
from torchvision.models import VisionTransformer, mobilenet_v2, resnet18

from agents.ddpg import make_agent
from agents.rollout import rollout
from cwhawq.data import DataSplits, Split
from cwhawq.evaluation import accuracy
from cwhawq.export import (
    PACKED_WEIGHTS_FILE,
    QUANTIZED_MODEL_FILE,
    load_packed_model,
    load_packed_weights,
    load_quantized_model,
    save_packed_weights,
    save_quantized_model,
)
from cwhawq.layers import layer_weight
from cwhawq.problem import prepare_problem
from cwhawq.settings import AgentSettings, TraceSettings
from envs.channel_bits_env import ChannelBitsEnv
from tests.conftest import small_settings


def random_images(n: int, seed: int) -> Split:
    generator = torch.Generator().manual_seed(seed)
    return Split(torch.rand(n, 3, 32, 32, generator=generator), torch.randint(0, 10, (n,), generator=generator))


def small_vit(weights: None, num_classes: int) -> VisionTransformer:
    """torchvision's ViT at 32x32 with two small encoder blocks (its attention is nn.MultiheadAttention)."""
    return VisionTransformer(32, 8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32, num_classes=num_classes)


@pytest.mark.parametrize(
    ("build", "n_layers", "kinds"),
    [
        (resnet18, 21, {"conv", "linear"}),
        (mobilenet_v2, 53, {"conv", "depthwise", "linear"}),
        (small_vit, 1 + 2 * 4 + 1, {"conv", "linear"}),  # patch conv, per block 2 attention + 2 MLP, head
    ],
)
def test_rollout_on_torchvision_model(build, n_layers, kinds, tmp_path):
    torch.manual_seed(0)
    data = DataSplits("random32", random_images(16, 0), random_images(16, 1), random_images(16, 2), 10)
    settings = small_settings(tmp_path, traces=TraceSettings(batch_size=8, num_batches=1, max_probes=2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random weights give chance accuracy
        problem = prepare_problem(build(weights=None, num_classes=10), data, settings, progress=False)
    assert len(problem.layers) == n_layers
    assert {layer.kind for layer in problem.layers} == kinds
    assert all(len(problem.traces.traces[layer.name]) == layer.out_channels for layer in problem.layers)
    env = ChannelBitsEnv(problem)
    obs, _ = env.reset(seed=0)
    for _ in range(3):
        obs, reward, terminated, _, _ = env.step(env.action_space.sample())
        assert env.observation_space.contains(obs) and reward == 0 and not terminated
    agent = make_agent(env, AgentSettings(net_arch=(16, 16)), env.n_steps, seed=0)
    info = rollout(agent, env)
    assert info["size_bits"] <= problem.budget.total_bits
    assert set(np.concatenate(list(info["assignment"].values())).tolist()) <= set(problem.bit_widths)
    # The rollout's assignment saved as a model reproduces the accuracy measured in place.
    save_quantized_model(problem, info["assignment"], tmp_path / QUANTIZED_MODEL_FILE)
    saved = load_quantized_model(tmp_path / QUANTIZED_MODEL_FILE)
    assert saved["model"] is not None
    assert accuracy(saved["model"], data.val) == info["val_accuracy"]
    save_packed_weights(problem, info["assignment"], tmp_path / PACKED_WEIGHTS_FILE)
    weights = load_packed_weights(tmp_path / PACKED_WEIGHTS_FILE)
    assert all(torch.equal(weights[layer.name], layer_weight(saved["model"], layer.name)) for layer in problem.layers)
    rebuilt = load_packed_model(build(weights=None, num_classes=10), tmp_path / PACKED_WEIGHTS_FILE)
    assert torch.equal(rebuilt(data.val.x), saved["model"](data.val.x))  # BatchNorm folded as in the search
