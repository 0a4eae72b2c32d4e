"""Tests for cwhawq.hessian: Hutchinson channel traces against exact Hessians, stopping rule, errors, cache."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

from cwhawq import hessian
from cwhawq.errors import CwhawqError
from cwhawq.hessian import ChannelTraces, cached_channel_traces, channel_traces
from cwhawq.layers import LayerInfo, discover_layers
from tests.toy_models import DigitsTransformer, TokenGRU

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # These graphs are tiny: with 2 intra-op threads on a busy 2-core machine each parallel region waits for a
    # descheduled thread, and the probe loops run 10-20x slower. Results do not depend on the thread count.
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


def info(name: str, module: nn.Linear) -> LayerInfo:
    """A LayerInfo for a Linear layer; channel_traces only reads the name."""
    return LayerInfo(
        name=name, kind="linear", dims=0, in_channels=module.in_features, out_channels=module.out_features,
        kernel_size=(), stride=(), groups=1, params=module.weight.numel(),
        params_per_channel=module.in_features, macs=module.weight.numel(), input_size=(), pinned_bits=None,
    )  # fmt: skip


def half_mse(out: Tensor, target: Tensor) -> Tensor:
    """0.5 * mean over samples of ||out - target||^2."""
    return 0.5 * ((out - target) ** 2).sum(dim=1).mean()


def linear_setup(seed: int = 0, in_f: int = 5, out_f: int = 4, sizes=(16, 8)):
    gen = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Linear(in_f, out_f, bias=False))
    batches = [(torch.randn(n, in_f, generator=gen), torch.randn(n, out_f, generator=gen)) for n in sizes]
    return model, [info("0", model[0])], batches


def assert_within_stderr(result: ChannelTraces, exact: dict[str, np.ndarray], eps: float = 1e-5) -> None:
    for name, want in exact.items():
        err = np.abs(result.traces[name] - want)
        assert np.all(err < 4 * result.stderr[name] + eps), (name, result.traces[name], want, result.stderr[name])


# --- correctness against exact Hessians -------------------------------------------------------------------------


def test_linear_least_squares_matches_exact_diagonal():
    # loss = 0.5 * mean_n ||W x_n - t_n||^2 over all samples => d2L/dW[i,j]^2 = mean_n x_nj^2 for every row i,
    # so every channel's trace is sum_j mean_n x_nj^2 (samples pooled over batches of different sizes).
    model, layers, batches = linear_setup()
    x = torch.cat([b[0] for b in batches])
    per_channel = float((x**2).mean(dim=0).sum())
    result = channel_traces(model, layers, batches, loss_fn=half_mse, max_probes=300, tol=0.0, progress=False)
    exact = np.full(4, per_channel)
    assert_within_stderr(result, {"0": exact})
    assert result.traces["0"].shape == (4,)
    assert np.all(result.stderr["0"] > 0)  # off-diagonal Hessian entries make single probes noisy
    np.testing.assert_allclose(result.traces["0"], exact, rtol=0.15)
    assert math.isclose(result.model_trace, float(result.traces["0"].sum()), rel_tol=1e-9)


def one_hot_setup():
    """One batch of 2 and one of 6 samples of orthogonal one-hot inputs (values 1 and 2): the Hessian is diagonal,
    so every probe gives the exact value; the pooled channel trace is (2 * 1 + 6 * 4) / 8."""
    model, layers, _ = linear_setup()
    x = torch.zeros(8, 5)
    x[:2, 0] = 1.0
    x[2:, 1] = 2.0
    return model, layers, [(x[:2], torch.zeros(2, 4)), (x[2:], torch.zeros(6, 4))]


def test_batch_weighting_is_by_batch_size():
    # The pooled mean weights the second batch 3x, not 1x.
    model, layers, batches = one_hot_setup()
    result = channel_traces(model, layers, batches, loss_fn=half_mse, max_probes=3, progress=False)
    np.testing.assert_allclose(result.traces["0"], (2 * 1.0 + 6 * 4.0) / 8, rtol=1e-6)
    np.testing.assert_allclose(result.stderr["0"], 0.0, atol=1e-9)


def test_one_batch_per_probe_weights_each_batch_by_its_size():
    # One batch per probe: after each full cycle of the batches the mean is the pooled trace; each probe's value
    # is its batch's trace, scaled by 2 * n_b / 8.
    model, layers, batches = one_hot_setup()
    for cycles in (1, 3):
        result = channel_traces(
            model, layers, batches, loss_fn=half_mse, max_probes=2 * cycles, tol=0.0, probe_data="batch",
            progress=False,
        )
        np.testing.assert_allclose(result.traces["0"], (2 * 1.0 + 6 * 4.0) / 8, rtol=1e-6)
        assert result.n_probes == 2 * cycles
        # The two batches' probes differ (0.5 and 6.0), so the spread over probes is not zero.
        np.testing.assert_allclose(result.stderr["0"], np.std([0.5, 6.0] * cycles, ddof=1) / np.sqrt(2 * cycles))


def test_one_batch_per_probe_is_unbiased_for_the_pooled_hessian():
    model, layers, batches = linear_setup(sizes=(16, 8, 8))
    x = torch.cat([b[0] for b in batches])
    exact = np.full(4, float((x**2).mean(dim=0).sum()))
    result = channel_traces(
        model, layers, batches, loss_fn=half_mse, max_probes=900, tol=0.0, probe_data="batch", progress=False
    )
    assert_within_stderr(result, {"0": exact})
    np.testing.assert_allclose(result.traces["0"], exact, rtol=0.15)


def test_nonlinear_two_layer_matches_autograd_hessian():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3))
    x, y = torch.randn(12, 3), torch.randint(0, 3, (12,))
    layers = [info("0", model[0]), info("2", model[2])]
    weights = {name: model.get_submodule(name).weight.detach().clone() for name in ("0", "2")}
    params = dict(model.named_parameters())

    def loss_of(w0: Tensor, w2: Tensor) -> Tensor:
        out = torch.func.functional_call(model, {**params, "0.weight": w0, "2.weight": w2}, (x,))
        return F.cross_entropy(out, y)

    h = torch.autograd.functional.hessian(loss_of, (weights["0"], weights["2"]))
    exact = {
        "0": torch.diagonal(h[0][0].reshape(12, 12)).reshape(4, 3).sum(1).numpy(),
        "2": torch.diagonal(h[1][1].reshape(12, 12)).reshape(3, 4).sum(1).numpy(),
    }
    result = channel_traces(model, layers, [(x, y)], max_probes=200, tol=0.0, progress=False)
    assert_within_stderr(result, exact)
    assert result.model_trace == pytest.approx(sum(float(v.sum()) for v in result.traces.values()), rel=1e-9)
    assert model.training  # the caller's mode is restored


class DiagonalQuadratic(nn.Module):
    """forward(eye) returns W^T, so loss 0.5 * sum(a * out^2) has the diagonal Hessian diag(a^T) over W."""

    def __init__(self, out_f: int, in_f: int) -> None:
        super().__init__()
        self.fc = nn.Linear(in_f, out_f, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(x)


def scaled_square(out: Tensor, a: Tensor) -> Tensor:
    return 0.5 * (a * out**2).sum()


@settings(max_examples=25, deadline=None)
@given(
    st.integers(1, 4),
    st.integers(1, 4),
    st.integers(0, 2**31 - 1),
    st.lists(st.floats(-10, 10, allow_nan=False, width=32), min_size=16, max_size=16),
)
def test_diagonal_hessian_is_exact_for_any_sign_and_seed(out_f, in_f, seed, coeffs):
    # Rademacher probes satisfy v_i^2 = 1, so for a diagonal Hessian every probe is exact; negative curvature included.
    model = DiagonalQuadratic(out_f, in_f)
    a = torch.tensor(coeffs[: in_f * out_f]).reshape(in_f, out_f)
    result = channel_traces(
        model, [info("fc", model.fc)], [(torch.eye(in_f), a)], loss_fn=scaled_square, seed=seed, progress=False
    )
    np.testing.assert_allclose(result.traces["fc"], a.sum(dim=0).numpy(), rtol=1e-5, atol=1e-5)
    assert result.n_probes == 2 and result.converged


# --- probes, stopping rule, determinism -------------------------------------------------------------------------


def test_same_seed_same_result_and_different_seed_differs():
    model, layers, batches = linear_setup()
    run = lambda seed: channel_traces(model, layers, batches, loss_fn=half_mse, max_probes=10, tol=0, seed=seed,
                                      progress=False)  # fmt: skip
    a, b, c = run(3), run(3), run(4)
    np.testing.assert_array_equal(a.traces["0"], b.traces["0"])
    np.testing.assert_array_equal(a.stderr["0"], b.stderr["0"])
    assert a.model_trace == b.model_trace
    assert not np.array_equal(a.traces["0"], c.traces["0"])


def test_tol_zero_runs_to_max_probes_and_loose_tol_stops_early():
    model, layers, batches = linear_setup()
    full = channel_traces(model, layers, batches, loss_fn=half_mse, max_probes=40, tol=0.0, progress=False)
    assert full.n_probes == 40 and not full.converged
    loose = channel_traces(model, layers, batches, loss_fn=half_mse, max_probes=40, tol=0.5, progress=False)
    assert 2 <= loose.n_probes < 40 and loose.converged
    one = channel_traces(model, layers, batches, loss_fn=half_mse, max_probes=1, progress=False)
    assert one.n_probes == 1 and not one.converged
    np.testing.assert_array_equal(one.stderr["0"], 0.0)


def test_stopping_rule_is_relative_change_of_running_mean():
    model, layers, batches = linear_setup()
    tol = 0.02
    run = lambda n, t: channel_traces(model, layers, batches, loss_fn=half_mse, max_probes=n, tol=t,  # noqa: E731
                                      per_channel=False, progress=False)  # fmt: skip
    stopped = run(200, tol)
    n = stopped.n_probes
    assert stopped.converged and 2 < n < 200
    # Same seed => the first k probes of any run are the same: a tol=0 run of k probes gives running mean k.
    means = {k: run(k, 0.0).model_trace for k in range(1, n + 1)}
    rel = {k: abs(means[k] - means[k - 1]) / (abs(means[k - 1]) + 1e-12) for k in range(2, n + 1)}
    assert rel[n] < tol
    assert all(rel[k] >= tol for k in range(2, n))
    assert stopped.model_trace == pytest.approx(means[n], rel=1e-12)


def weighted_mse(out: Tensor, target: Tensor) -> Tensor:
    """half_mse with output j weighted by j + 1: channel j's exact trace is (j + 1) times channel 0's."""
    weights = torch.arange(1, out.shape[1] + 1, dtype=out.dtype)
    return 0.5 * (weights * (out - target) ** 2).sum(dim=1).mean()


@settings(max_examples=40, deadline=None)
@given(
    probes=st.integers(2, 12),
    channels=st.lists(st.integers(1, 5), min_size=1, max_size=4),
    seed=st.integers(0, 1000),
)
def test_ranking_reliability_is_the_signal_share_of_the_weakest_layer(probes, channels, seed):
    values = np.random.default_rng(seed).normal(size=(probes, sum(channels))) * np.arange(1, sum(channels) + 1)
    total, total_sq = torch.from_numpy(values.sum(0)), torch.from_numpy((values**2).sum(0))
    expected = 1.0
    for part in np.split(values, np.cumsum(channels)[:-1], axis=1):
        mean, error_sq = part.mean(0), part.var(0, ddof=1) / probes
        if part.shape[1] > 1 and mean.var() > 0:
            expected = min(expected, 1 - error_sq.mean() / mean.var())
    # relative too: with a near-constant layer the reliability reaches -1e7, where float64 rounding exceeds 1e-9
    reliable = hessian.ranking_reliability(total, total_sq, probes, channels)
    assert reliable == pytest.approx(expected, rel=1e-12, abs=1e-9)


def test_probing_goes_on_until_the_channel_ranking_is_reliable():
    model, layers, batches = linear_setup()
    run = lambda n, t, r: channel_traces(model, layers, batches, loss_fn=weighted_mse, max_probes=n, tol=t,  # noqa: E731
                                         reliability=r, progress=False)  # fmt: skip
    loose = run(400, 0.5, 0.0)
    reliable = run(400, 0.5, 0.99)
    n = reliable.n_probes
    assert reliable.converged and max(loose.n_probes, hessian.MIN_RANKING_PROBES) < n < 400
    # Same seed => a tol=0 run of k probes holds the first k probes: the reliability first reaches 0.99 at probe n.

    def reliability(k: int) -> float:
        run_k = run(k, 0.0, 0.0)
        mean, error = run_k.traces["0"], run_k.stderr["0"]
        return 1 - float(np.mean(error**2)) / float(np.var(mean))

    assert reliability(n) >= 0.99 > reliability(n - 1)


def test_negative_definite_hessian_converges_to_the_right_value():
    # loss = -0.5 * mean ||W x||^2: H = -mean x x^T per row, negative definite with off-diagonal terms. A running
    # mean below zero with a signed denominator would give a negative ratio and stop after 2 probes regardless.
    model, layers, batches = linear_setup(in_f=6, out_f=3)
    neg = lambda out, _: -0.5 * (out**2).sum(dim=1).mean()  # noqa: E731
    x = torch.cat([b[0] for b in batches])
    exact = np.full(3, -float((x**2).mean(dim=0).sum()))
    result = channel_traces(model, layers, batches, loss_fn=neg, max_probes=300, tol=1e-3, progress=False)
    assert result.model_trace < 0
    assert result.n_probes > 2
    assert_within_stderr(result, {"0": exact})


def test_per_channel_false_gives_same_model_trace():
    model, layers, batches = linear_setup()
    kwargs = dict(loss_fn=half_mse, max_probes=30, tol=1e-3, seed=7, progress=False)
    channel = channel_traces(model, layers, batches, per_channel=True, **kwargs)
    whole = channel_traces(model, layers, batches, per_channel=False, **kwargs)
    assert whole.traces == {} and whole.stderr == {}
    assert whole.n_probes == channel.n_probes
    assert whole.model_trace == pytest.approx(channel.model_trace, rel=1e-6)


def test_only_listed_layers_are_probed_and_state_is_restored():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3), nn.BatchNorm1d(3))
    for p in model.parameters():
        p.requires_grad_(False)
    running_mean = model[3].running_mean.clone()
    batches = [(torch.randn(8, 3), torch.randint(0, 3, (8,)))]
    result = channel_traces(model, [info("2", model[2])], batches, max_probes=5, progress=False)
    assert list(result.traces) == ["2"] and result.traces["2"].shape == (3,)
    assert all(not p.requires_grad for p in model.parameters())
    torch.testing.assert_close(model[3].running_mean, running_mean)  # BatchNorm ran in eval mode


# --- errors -----------------------------------------------------------------------------------------------------


def test_nan_input_raises():
    model, layers, batches = linear_setup()
    batches[1][0][0, 0] = float("nan")
    with pytest.raises(CwhawqError, match="non-finite loss on batch 1"):
        channel_traces(model, layers, batches, loss_fn=half_mse, progress=False)


def test_non_finite_hessian_vector_product_names_the_layer():
    # |Wx|^1.5 at W = 0: finite loss and gradient, infinite second derivative.
    model = nn.Sequential(nn.Linear(2, 2, bias=False))
    nn.init.zeros_(model[0].weight)
    loss = lambda out, _: (out.abs() ** 1.5).sum()  # noqa: E731
    with pytest.raises(CwhawqError, match="non-finite Hessian-vector product in layer 0;"):
        channel_traces(model, [info("0", model[0])], [(torch.ones(1, 2), torch.zeros(1))], loss_fn=loss,
                       progress=False)  # fmt: skip


def test_bad_arguments_raise():
    model, layers, batches = linear_setup()
    with pytest.raises(CwhawqError, match="has no layer .nope."):
        channel_traces(model, [info("nope", model[0])], batches, loss_fn=half_mse, progress=False)
    with pytest.raises(CwhawqError, match="no batches"):
        channel_traces(model, layers, [], loss_fn=half_mse, progress=False)
    with pytest.raises(CwhawqError, match="no layers"):
        channel_traces(model, [], batches, loss_fn=half_mse, progress=False)
    with pytest.raises(CwhawqError, match="max_probes"):
        channel_traces(model, layers, batches, loss_fn=half_mse, max_probes=0, progress=False)
    with pytest.raises(CwhawqError, match=r"reliability must be in \[0, 1\)"):
        channel_traces(model, layers, batches, loss_fn=half_mse, reliability=1.0, progress=False)
    with pytest.raises(CwhawqError, match=r"unknown probe_data 'half'; use one of \['all', 'batch'\]"):
        channel_traces(model, layers, batches, loss_fn=half_mse, probe_data="half", progress=False)


# --- cache ------------------------------------------------------------------------------------------------------


def same(a: ChannelTraces, b: ChannelTraces) -> bool:
    return (
        a.traces.keys() == b.traces.keys()
        and all(np.array_equal(a.traces[k], b.traces[k]) and np.array_equal(a.stderr[k], b.stderr[k]) for k in a.traces)
        and (a.model_trace, a.n_probes, a.converged) == (b.model_trace, b.n_probes, b.converged)
    )


@pytest.fixture
def counted(monkeypatch):
    calls = []
    real = hessian.channel_traces

    def wrapper(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(hessian, "channel_traces", wrapper)
    return calls


def test_cache_hits_and_misses(tmp_path, counted):
    model, layers, batches = linear_setup()
    defaults = {"loss_fn": half_mse, "max_probes": 10, "progress": False}
    run = lambda **kw: cached_channel_traces(model, layers, batches, tmp_path, **{**defaults, **kw})  # noqa: E731
    first = run()
    assert len(counted) == 1 and len(list((tmp_path / "traces").glob("*.npz"))) == 1
    again = run(progress=True, tol=1e-3)  # progress does not matter; tol=1e-3 is the default
    assert len(counted) == 1
    assert same(again, first)
    run(max_probes=11)
    assert len(counted) == 2
    run(seed=1)
    assert len(counted) == 3
    with torch.no_grad():
        model[0].weight[0, 0] += 1e-3
    run()
    assert len(counted) == 4
    batches[0][1][0, 0] += 1.0  # targets are part of the data too
    run()
    assert len(counted) == 5
    run(loss_fn=lambda out, t: half_mse(out, t))
    assert len(counted) == 6
    run()
    assert len(counted) == 6


def test_cache_whole_model_mode_round_trips(tmp_path, counted):
    model, layers, batches = linear_setup()
    first = cached_channel_traces(model, layers, batches, tmp_path, loss_fn=half_mse, per_channel=False,
                                  max_probes=5, progress=False)  # fmt: skip
    second = cached_channel_traces(model, layers, batches, tmp_path, loss_fn=half_mse, per_channel=False,
                                   max_probes=5, progress=False)  # fmt: skip
    assert len(counted) == 1 and same(second, first)


def test_corrupt_cache_file_is_recomputed(tmp_path, counted):
    model, layers, batches = linear_setup()
    run = lambda: cached_channel_traces(model, layers, batches, tmp_path, loss_fn=half_mse, max_probes=5,  # noqa: E731
                                        progress=False)  # fmt: skip
    first = run()
    (path,) = (tmp_path / "traces").glob("*.npz")
    path.write_bytes(b"not an npz file")
    with pytest.warns(UserWarning, match="unreadable Hessian trace cache"):
        second = run()
    assert len(counted) == 2
    np.testing.assert_array_equal(second.traces["0"], first.traces["0"])
    run()
    assert len(counted) == 2  # the rewritten file is valid again


def test_cache_rejects_unknown_setting(tmp_path):
    model, layers, batches = linear_setup()
    with pytest.raises(CwhawqError, match="bad Hessian trace setting"):
        cached_channel_traces(model, layers, batches, tmp_path, max_probs=5)


# --- interrupted probes ---------------------------------------------------------------------------------------


def run_cached(tmp_path: Path, **kwargs) -> ChannelTraces:
    torch.manual_seed(0)  # the same initial weights in every call: one cache key
    model, layers, batches = linear_setup()
    settings = {"loss_fn": half_mse, "max_probes": 12, "tol": 0.0, "progress": False, **kwargs}
    return cached_channel_traces(model, layers, batches, tmp_path, **settings)


def partial_files(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "traces").glob("*.partial.npz"))


def test_ctrl_c_keeps_the_probes_and_a_rerun_continues_to_the_same_result(tmp_path, interrupt_after_probe):
    uninterrupted = run_cached(tmp_path / "reference")
    done = interrupt_after_probe(5)
    with pytest.raises(KeyboardInterrupt) as interrupt:
        run_cached(tmp_path)
    assert "the 5 Hessian probes done are kept" in " ".join(interrupt.value.__notes__)
    (partial,) = partial_files(tmp_path)
    done.clear()
    resumed = run_cached(tmp_path)
    assert len(done) == 12 - 5  # only the missing probes are computed
    assert same(resumed, uninterrupted)
    assert partial_files(tmp_path) == [] and len(list((tmp_path / "traces").glob("*.npz"))) == 1


def test_probes_saved_periodically_survive_a_crash(tmp_path, interrupt_after_probe, monkeypatch):
    monkeypatch.setattr(hessian, "PARTIAL_SAVE_INTERVAL_S", 0.0)  # save after every probe
    uninterrupted = run_cached(tmp_path / "reference")
    done = interrupt_after_probe(7, RuntimeError)  # not a Ctrl-C: only the periodic saves are on disk
    with pytest.raises(RuntimeError):
        run_cached(tmp_path)
    done.clear()
    assert same(run_cached(tmp_path), uninterrupted)
    assert len(done) == 12 - 7


def test_a_converging_run_resumes_to_the_same_stop(tmp_path, interrupt_after_probe):
    uninterrupted = run_cached(tmp_path / "reference", max_probes=200, tol=1e-2)
    assert uninterrupted.converged and 3 < uninterrupted.n_probes < 200
    interrupt_after_probe(3)
    with pytest.raises(KeyboardInterrupt):
        run_cached(tmp_path, max_probes=200, tol=1e-2)
    assert same(run_cached(tmp_path, max_probes=200, tol=1e-2), uninterrupted)


@pytest.mark.parametrize("probe_data", ["all", "batch"])
def test_a_run_stopped_by_the_ranking_rule_resumes_to_the_same_stop(tmp_path, interrupt_after_probe, probe_data):
    settings = {"loss_fn": weighted_mse, "max_probes": 400, "tol": 0.5, "reliability": 0.95, "probe_data": probe_data}
    uninterrupted = run_cached(tmp_path / "reference", **settings)
    assert uninterrupted.converged and hessian.MIN_RANKING_PROBES <= uninterrupted.n_probes < 400
    interrupt_after_probe(10)
    with pytest.raises(KeyboardInterrupt):
        run_cached(tmp_path, **settings)
    assert same(run_cached(tmp_path, **settings), uninterrupted)


@pytest.mark.parametrize("damage", ["garbage", "other seed", "other width"])
def test_an_unusable_partial_file_is_ignored_with_a_warning(tmp_path, interrupt_after_probe, damage):
    uninterrupted = run_cached(tmp_path / "reference")
    interrupt_after_probe(4)
    with pytest.raises(KeyboardInterrupt):
        run_cached(tmp_path)
    (partial,) = partial_files(tmp_path)
    if damage == "garbage":
        partial.write_bytes(b"not an npz file")
    else:
        with np.load(partial) as data:
            arrays = dict(data)
        if damage == "other seed":
            arrays["seed"] = np.array(7)
        else:
            arrays["values"] = arrays["values"][:, :2]
        np.savez(partial, **arrays)
    with pytest.warns(UserWarning, match="ignoring unusable partial Hessian probes"):
        again = run_cached(tmp_path)
    assert same(again, uninterrupted)


def test_partial_file_is_chosen_by_the_cache(tmp_path):
    with pytest.raises(CwhawqError, match="do not pass partial_file"):
        run_cached(tmp_path, partial_file=tmp_path / "x.npz")


# --- benchmark script -------------------------------------------------------------------------------------------


def test_bench_traces_quick_prints_the_ratio(capsys):
    spec = importlib.util.spec_from_file_location("bench_traces", ROOT / "scripts" / "bench_traces.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    results = bench.main(["--quick", "--probes", "2", "--reps", "1", "--batches", "1", "--batch-size", "8"])
    out = capsys.readouterr().out
    assert "| ratio |" in out and "| digits_cnn |" in out
    assert results["digits_cnn"]["ratio"] > 0
    assert f"{results['digits_cnn']['ratio']:.3f}" in out


def test_trace_sampling_study_quick_prints_both_modes(capsys, cache_dir):
    spec = importlib.util.spec_from_file_location("study", ROOT / "scripts" / "trace_sampling_study.py")
    study = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(study)
    table = study.main(["--quick", "--cache-dir", str(cache_dir)])
    assert table in capsys.readouterr().out
    rows = [line.split(" | ") for line in table.splitlines() if line.startswith("| digits_cnn |")]
    layers = [row for row in rows if row[1] not in ("mean", "time (s)")]
    assert [row[1] for row in layers] == ["conv1", "conv2", "fc1", "fc2"]
    for row in layers:  # two rank correlations in [-1, 1]
        assert all(-1.0 <= float(value.strip(" |")) <= 1.0 for value in row[3:5])


def test_attention_model_traces_are_finite():
    # Fused attention kernels have no double backward; traces build the graph with the math kernel instead.
    torch.manual_seed(0)
    model = DigitsTransformer().eval()
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
    layers = discover_layers(model, x)
    result = channel_traces(model, layers, [(x, y)], max_probes=3, progress=False)
    assert set(result.traces) == {"embed", "encoder.self_attn.in_proj_weight", "encoder.self_attn.out_proj",
                                  "encoder.linear1", "encoder.linear2", "head"}  # fmt: skip
    assert result.traces["encoder.self_attn.in_proj_weight"].shape == (48,)
    assert all(np.isfinite(values).all() for values in result.traces.values())


def test_embedding_rows_of_unseen_tokens_have_zero_trace():
    torch.manual_seed(0)
    model = TokenGRU().eval()
    tokens, y = torch.randint(0, 12, (16, 5)), torch.randint(0, 10, (16,))  # ids 12-16 never occur
    layers = discover_layers(model, tokens)
    result = channel_traces(model, layers, [(tokens, y)], max_probes=3, progress=False)
    embed = result.traces["embed"]
    assert embed.shape == (17,) and np.all(embed[12:] == 0)
    seen = np.unique(tokens.numpy())
    assert np.all(embed[seen] != 0)
