"""The command line: a tiny search end to end, and one-line errors for bad input."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from cwhawq.cli import main
from cwhawq.data import load_dataset
from cwhawq.evaluation import accuracy
from cwhawq.export import (
    PACKED_WEIGHTS_FILE,
    QUANTIZED_MODEL_FILE,
    load_packed_model,
    load_packed_weights,
    load_quantized_model,
)
from tests.conftest import agent_saved_without
from tests.toy_models import tied_token_model

ROOT = Path(__file__).resolve().parents[1]


def run_cli(capsys, *args):
    status = main(list(args))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.fixture()
def common(cache_dir):
    return ["--cache-dir", str(cache_dir), "--trace-probes", "4", "--trace-batches", "1"]


def test_search_end_to_end(capsys, tmp_path, common):
    out = tmp_path / "out"
    status, stdout, _ = run_cli(
        capsys, "search", *common, "--episodes", "14", "--warmup-episodes", "2", "--out", str(out), "--quiet"
    )
    assert status == 0
    assert "average bits" in stdout and "test:" in stdout
    result = json.loads((out / "result.json").read_text())
    assert result["settings"]["episodes"] == 14
    assert result["settings"]["agent"]["imitate_best"] is True
    assert result["totals"]["avg_bits"] <= 2.5
    assert result["totals"]["unquantized_weights"] == 0  # every weight of the default CNN is quantized
    assert "kept FP32" not in stdout
    saved = load_quantized_model(out / QUANTIZED_MODEL_FILE)
    assert [layer["bits"] for layer in result["layers"]] == [e["bits"].tolist() for e in saved["layers"].values()]
    assert load_packed_weights(out / PACKED_WEIGHTS_FILE).keys() == saved["layers"].keys()


def test_search_with_a_pinned_layer_and_hints(capsys, tmp_path, common):
    out = tmp_path / "out"
    args = ["--pin", "conv1=8", "--budget-mb", "0.012", "--episodes", "4", "--warmup-episodes", "2"]
    args += ["--observation", "v2", "--channel-order", "perturbation"]  # the hints and orders keep the pin too
    status, _, err = run_cli(capsys, "search", *common, *args, "--out", str(out), "--quiet")
    assert status == 0, err
    result = json.loads((out / "result.json").read_text())
    conv1 = next(layer for layer in result["layers"] if layer["name"] == "conv1")
    assert conv1["pinned"] and set(conv1["bits"]) == {8}
    assert result["totals"]["weight_bytes"] <= 12_000
    assert result["settings"]["agent"]["observation"] == "v2"
    assert result["settings"]["problem"]["channel_order"] == "perturbation"
    assert result["settings"]["problem"]["kl_train_samples"] == result["accuracy"]["kl_train_samples"] == 1000


def test_search_without_self_imitation(capsys, tmp_path, common):
    out = tmp_path / "out"
    args = ["--episodes", "3", "--warmup-episodes", "2", "--no-imitate-best", "--out", str(out), "--quiet"]
    status, _, _ = run_cli(capsys, "search", *common, *args)
    assert status == 0
    assert json.loads((out / "result.json").read_text())["settings"]["agent"]["imitate_best"] is False


def interrupt_at_episode(monkeypatch, episode):
    """Make the environment raise KeyboardInterrupt (as Ctrl-C would) when its `episode`-th episode ends."""
    from envs.channel_bits_env import ChannelBitsEnv

    original_finish = ChannelBitsEnv._finish
    finished = []

    def finish_then_interrupt(self):
        finished.append(original_finish(self))
        if len(finished) == episode:
            raise KeyboardInterrupt
        return finished[-1]

    monkeypatch.setattr(ChannelBitsEnv, "_finish", finish_then_interrupt)


def test_interrupted_search_writes_its_result_and_exits_130(capsys, tmp_path, common, monkeypatch):
    interrupt_at_episode(monkeypatch, 7)  # after the warm start's 5 replayed baselines and one agent episode
    out = tmp_path / "out"
    status, _, err = run_cli(capsys, "search", *common, "--episodes", "20", "--out", str(out), "--quiet")
    assert status == 130
    assert "--resume" in err
    assert json.loads((out / "result.json").read_text())["search"]["interrupted"]


@pytest.mark.parametrize("command", ["apply", "search"])
def test_interrupted_fine_tune_continues_with_resume(capsys, tmp_path, common, monkeypatch, command):
    source = tmp_path / "source"
    assert run_cli(capsys, "search", *common, "--episodes", "12", "--out", str(source), "--quiet")[0] == 0
    out = tmp_path / "ft"
    policy = ["--policy", str(source / "policy.zip")]
    args = ["apply", *policy, *common, "--finetune-episodes", "16", "--out", str(out), "--quiet"]
    with monkeypatch.context() as patch:
        interrupt_at_episode(patch, 9)  # the rollout, the warm start's replays and at least one agent episode
        status, _, err = run_cli(capsys, *args)
    assert status == 130 and "rerun the same command with --resume" in err
    if command == "apply":
        status, _, err = run_cli(capsys, *args, "--resume")
    else:  # a fine-tune is also a search: the search command continues it
        args = ["--episodes", "16", "--resume", "--out", str(out), "--quiet"]
        status, _, err = run_cli(capsys, "search", *common, *args)
    assert status == 0, err
    result = json.loads((out / "result.json").read_text())
    assert result["method"] == "policy-finetune" and result["search"]["episodes"] == 16
    # 16 episodes explore on a 300-episode search's schedule squeezed to them
    assert result["settings"]["agent"]["warmup_episodes"] == 1
    assert result["settings"]["agent"]["noise_decay"] == pytest.approx(0.99 ** (300 / 16))


def test_a_search_explores_on_its_length_and_keeps_its_schedule_when_resumed_for_more(capsys, tmp_path, common):
    out = tmp_path / "o"
    assert run_cli(capsys, "search", *common, "--episodes", "30", "--out", str(out), "--quiet")[0] == 0
    agent = json.loads((out / "result.json").read_text())["settings"]["agent"]
    assert (agent["warmup_episodes"], agent["noise_decay"]) == (2, pytest.approx(0.99**10))  # 300 squeezed to 30
    resume = ["search", *common, "--episodes", "32", "--resume", "--out", str(out), "--quiet"]
    status, _, stderr = run_cli(capsys, *resume, "--noise-decay", "0.5")
    assert status == 2 and "other settings (agent.noise_decay)" in stderr
    assert run_cli(capsys, *resume)[0] == 0  # not squeezed again to 32 episodes
    result = json.loads((out / "result.json").read_text())
    assert result["search"]["episodes"] == 32 and result["settings"]["agent"] == agent


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "no_such_model"], "no_such_model"),
        (["--model", "digits_cnn", "--checkpoint", "/nonexistent/w.pt"], "checkpoint not found"),
        (["--dataset", "imagenet_please"], "imagenet_please"),
        (["--model", "tests.toy_models:digits_mlp", "--dataset", "/nonexistent/mine.npz"], "dataset file not found"),
        (["--budget-bits", "1.0"], "below"),
        (["--budget-bits", "32"], "FP32"),
        (["--model", "tests.toy_models:no_layers", "--dataset", "digits"], "quantizable"),
        (["--bits", "1", "4"], "[2, 16]"),
        (["--coarse-share", "1.5"], "coarse share"),
        (["--noise-sigma", "-1"], "noise sigma"),
        (["--noise-decay", "0"], "noise decay must be in (0, 1]"),
        (["--noise-layers", "-1"], "noise layers"),
        (["--episodes", "0"], "episodes must be at least 1"),
        (["--pin", "*=6", "--budget-bits", "7"], "every layer is pinned"),
        (["--bits", "4", "--budget-bits", "4"], "at least two candidate bit-widths"),
        (["--device", "gpu"], "unknown device 'gpu'"),
        (["--device", "cuda:99"], "'cuda:99' asked for"),
        (["--seed", "-1"], "seed must be an integer from 0 to 2**32 - 1, not -1"),
        (["--threads", "0"], "--threads must be at least 1"),
        (["--model", "digits_cn"], "choose a builtin (digits_cnn, "),
        (["--budget-mb", "1e-6"], "(1e-06 MB) is below the smallest possible size"),
        (["--kl-train-samples", "-5"], "kl_train_samples must be a whole number of training inputs, 0 or more, not -5"),
    ],
)
def test_bad_input_gives_one_line_error(capsys, tmp_path, common, args, message):
    status, _, stderr = run_cli(capsys, "search", *common, *args, "--out", str(tmp_path / "o"), "--quiet")
    assert status == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert message in lines[0]


@pytest.mark.parametrize("command", [["search"], ["baseline", "--method", "uniform"], ["distill", "runs/none"]])
def test_an_output_path_that_is_a_file_is_refused(capsys, tmp_path, command):
    (tmp_path / "taken").write_text("")
    status, _, stderr = run_cli(capsys, *command, "--out", str(tmp_path / "taken"), "--quiet")
    assert status == 2
    assert stderr.strip() == f"error: --out {tmp_path / 'taken'} is a file; pass a directory (it is created if missing)"


def test_plot_draws_a_finished_run(capsys, tmp_path, common):
    out = tmp_path / "greedy"
    status, _, stderr = run_cli(capsys, "baseline", *common, "--method", "greedy-channel", "--out", str(out), "--quiet")
    assert status == 0, stderr
    status, stdout, _ = run_cli(capsys, "plot", str(out))
    assert status == 0 and stdout.strip() == f"wrote {out / 'channel_bits.png'}"
    assert (out / "channel_bits.png").read_bytes().startswith(b"\x89PNG")
    status, _, stderr = run_cli(capsys, "plot", str(tmp_path / "missing"))
    assert status == 2 and stderr.startswith("error: no result.json at")


def test_script_prints_no_traceback(tmp_path):
    completed = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "train_agent.py"), "--model", "nope", "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert completed.returncode == 2
    assert completed.stderr.strip().startswith("error: ") and "Traceback" not in completed.stderr


def test_ctrl_c_in_the_warm_start_says_how_to_continue(capsys, tmp_path, common, interrupt_at_measurement):
    args = ["search", *common, "--episodes", "12", "--warmup-episodes", "2", "--out", str(tmp_path / "o"), "--quiet"]
    interrupt_at_measurement(4)  # the full-precision model's accuracy, then two baselines
    status, _, stderr = run_cli(capsys, *args)
    assert status == 130 and "before the first checkpoint" in stderr and "--resume" in stderr
    interrupt_at_measurement(0)
    assert run_cli(capsys, *args, "--resume")[0] == 0
    assert json.loads((tmp_path / "o" / "result.json").read_text())["search"]["episodes"] == 12


def test_interrupted_random_search_continues_where_it_stopped(capsys, tmp_path, common, interrupt_at_measurement):
    args = ["baseline", "--method", "random", "--evaluations", "6", *common, "--quiet"]
    measured = interrupt_at_measurement(0)
    assert run_cli(capsys, *args, "--out", str(tmp_path / "reference"))[0] == 0
    uninterrupted = len(measured)
    interrupt_at_measurement(5)  # the full-precision model's accuracy, then three evaluations
    status, _, stderr = run_cli(capsys, *args, "--out", str(tmp_path / "o"))
    assert status == 130 and "3 distinct evaluations" in stderr and "rerun the same command" in stderr
    measured = interrupt_at_measurement(0)
    assert run_cli(capsys, *args, "--out", str(tmp_path / "o"))[0] == 0
    assert len(measured) == uninterrupted - 3
    reference, resumed = (json.loads((tmp_path / d / "result.json").read_text()) for d in ("reference", "o"))
    assert resumed["search"] == reference["search"] and resumed["layers"] == reference["layers"]


def test_ctrl_c_in_the_hessian_probes_keeps_them(capsys, tmp_path, common, interrupt_after_probe):
    common = [*common[:-4], "--trace-probes", "9", "--trace-batches", "1"]  # traces not yet in the session's cache
    args = ["baseline", "--method", "uniform", *common, "--out", str(tmp_path / "o"), "--quiet"]
    done = interrupt_after_probe(2)
    status, _, stderr = run_cli(capsys, *args)
    assert status == 130
    kept = "the 2 Hessian probes done are kept; rerun the same command to continue from them"
    assert stderr.strip() == f"interrupted; {kept}"
    done.clear()
    assert run_cli(capsys, *args)[0] == 0
    assert 0 < len(done) <= 9 - 2


def test_resume_without_a_fine_tune_is_refused(capsys, tmp_path, common):
    args = ["apply", "--policy", "p.zip", *common, "--resume", "--out", str(tmp_path / "o"), "--quiet"]
    status, _, stderr = run_cli(capsys, *args)
    assert status == 2 and stderr.startswith("error: --resume continues a fine-tune")


def test_random_search_without_evaluations_is_refused(capsys, tmp_path, common):
    args = ["baseline", "--method", "random", "--evaluations", "0", *common, "--out", str(tmp_path / "o"), "--quiet"]
    status, _, stderr = run_cli(capsys, *args)
    assert status == 2 and stderr.startswith("error: random search needs at least 1 evaluation")


def test_apply_refuses_to_overwrite_a_result_or_negative_episodes(capsys, tmp_path, common):
    out = tmp_path / "o"
    search = ["search", *common, "--episodes", "2", "--warmup-episodes", "1", "--out", str(out), "--quiet"]
    assert run_cli(capsys, *search)[0] == 0
    for extra in ([], ["--finetune-episodes", "2"]):
        args = ["apply", "--policy", str(out / "policy.zip"), *common, *extra, "--out", str(out), "--quiet"]
        status, _, stderr = run_cli(capsys, *args)
        assert status == 2 and "already holds" in stderr and "--resume" not in stderr
    args = ["apply", "--policy", str(out / "policy.zip"), *common, "--finetune-episodes", "-1", "--quiet"]
    status, _, stderr = run_cli(capsys, *args, "--out", str(tmp_path / "negative"))
    assert status == 2 and stderr.strip() == "error: --finetune-episodes must be 0 (zero-shot) or more, not -1"


def test_a_fine_tune_started_before_the_anchor_and_the_squeezed_schedule_resumes(
    capsys, tmp_path, common, monkeypatch, digits_problem
):
    source = tmp_path / "source"
    assert run_cli(capsys, "search", *common, "--episodes", "12", "--out", str(source), "--quiet")[0] == 0
    out = tmp_path / "ft"
    args = ["apply", "--policy", str(source / "policy.zip"), *common, "--finetune-episodes", "16", "--out", str(out),
            "--quiet"]  # fmt: skip
    with monkeypatch.context() as patch:
        interrupt_at_episode(patch, 9)
        assert run_cli(capsys, *args)[0] == 130
    # as such a fine-tune was saved: a full search's schedule, no anchor setting, an agent without the anchor
    state = json.loads((out / "state.json").read_text())
    del state["settings"]["agent"]["anchor_steps"]
    state["settings"]["agent"].update(warmup_episodes=20, noise_decay=0.99)
    (out / "state.json").write_text(json.dumps(state))
    agent_saved_without(digits_problem, out, ("anchor_steps", "anchor"))
    status, _, stderr = run_cli(capsys, *args, "--resume")
    assert status == 2 and "other settings (agent.anchor_steps)" in stderr
    status, _, stderr = run_cli(capsys, *args, "--resume", "--anchor-steps", "0")
    assert status == 0, stderr
    agent = json.loads((out / "result.json").read_text())["settings"]["agent"]
    assert (agent["warmup_episodes"], agent["noise_decay"], agent["anchor_steps"]) == (20, 0.99, 0)


def test_apply_fine_tunes_on_the_schedule_and_anchor_it_is_given(capsys, tmp_path, common):
    source = tmp_path / "source"
    search = ["search", *common, "--episodes", "2", "--warmup-episodes", "1", "--out", str(source), "--quiet"]
    assert run_cli(capsys, *search)[0] == 0
    apply = ["apply", "--policy", str(source / "policy.zip"), *common, "--finetune-episodes", "4", "--quiet"]
    given = ["--warmup-episodes", "2", "--noise-decay", "0.5", "--anchor-steps", "0"]
    assert run_cli(capsys, *apply, *given, "--out", str(tmp_path / "ft"))[0] == 0
    agent = json.loads((tmp_path / "ft" / "result.json").read_text())["settings"]["agent"]
    assert (agent["warmup_episodes"], agent["noise_decay"], agent["anchor_steps"]) == (2, 0.5, 0)
    status, _, stderr = run_cli(capsys, *apply, "--noise-decay", "1.5", "--out", str(tmp_path / "bad"))
    assert status == 2 and stderr.startswith("error: noise decay must be in (0, 1], not 1.5")
    assert not (tmp_path / "bad").exists()  # refused before any work
    zero_shot = ["apply", "--policy", str(source / "policy.zip"), *common, "--out", str(tmp_path / "zs"), "--quiet"]
    status, _, stderr = run_cli(capsys, *zero_shot, "--warmup-episodes", "3")
    assert status == 2 and stderr.strip().endswith("set a fine-tune's schedule; pass --finetune-episodes N")


@pytest.mark.parametrize("method", ["greedy-channel", "random"])
def test_baseline_command(capsys, tmp_path, common, method):
    out = tmp_path / method
    status, stdout, _ = run_cli(
        capsys, "baseline", *common, "--method", method, "--evaluations", "3", "--out", str(out), "--quiet"
    )
    assert status == 0
    result = json.loads((out / "result.json").read_text())
    assert result["method"] == method
    assert result["totals"]["weight_bits"] <= result["totals"]["budget_bits"]
    assert (out / QUANTIZED_MODEL_FILE).is_file()


def test_trace_options_reach_the_traces_and_result(capsys, tmp_path, cache_dir):
    # Two trace batches, one per probe: 6 probes over them, as recorded with the settings.
    args = ["--cache-dir", str(cache_dir), "--trace-probes", "6", "--trace-batches", "2", "--trace-reliability", "0"]
    args += ["--method", "uniform", "--out", str(tmp_path / "batch"), "--quiet"]
    status, _, stderr = run_cli(capsys, "baseline", *args, "--trace-probe-data", "batch")
    assert status == 0, stderr
    result = json.loads((tmp_path / "batch" / "result.json").read_text())
    assert result["settings"]["problem"]["traces"]["probe_data"] == "batch"
    assert result["traces"]["probes"] <= 6
    with pytest.raises(SystemExit):
        main(["baseline", *args, "--trace-probe-data", "half"])
    assert "--trace-probe-data: invalid choice: 'half'" in capsys.readouterr().err


def greedy_on_toy_model(capsys, tmp_path, common, model: str) -> tuple[dict, str]:
    """result.json and stdout of the channel greedy on `tests.toy_models:<model>` with digits."""
    args = ["--model", f"tests.toy_models:{model}", "--dataset", "digits", "--method", "greedy-channel"]
    status, stdout, stderr = run_cli(capsys, "baseline", *common, *args, "--out", str(tmp_path / model), "--quiet")
    assert status == 0, stderr
    return json.loads((tmp_path / model / "result.json").read_text()), stdout


def test_attention_model_quantizes_every_weight(capsys, tmp_path, common):
    result, stdout = greedy_on_toy_model(capsys, tmp_path, common, "digits_transformer")
    assert "encoder.self_attn.in_proj_weight" in [layer["name"] for layer in result["layers"]]
    assert result["totals"]["unquantized_weights"] == 0 and "kept FP32" not in stdout
    assert result["totals"]["weight_bits"] <= result["totals"]["budget_bits"]


def test_recurrent_model_quantizes_its_weight_matrices(capsys, tmp_path, common):
    result, _ = greedy_on_toy_model(capsys, tmp_path, common, "digits_lstm")
    assert [layer["name"] for layer in result["layers"]] == ["lstm.weight_ih_l0", "lstm.weight_hh_l0", "head"]
    assert result["totals"]["unquantized_weights"] == 0
    assert result["accuracy"]["quantized_val_kl"] > 0  # the LSTM's own kernel reads the quantized weights


def test_weights_outside_the_layers_are_reported_as_fp32(capsys, tmp_path, common):
    left_fp32 = 8 * 8  # the position embedding
    with pytest.warns(UserWarning, match=r"stay FP32 outside the budget"):
        result, stdout = greedy_on_toy_model(capsys, tmp_path, common, "digits_position_embedding")
    assert result["totals"]["unquantized_weights"] == left_fp32
    assert result["totals"]["unquantized_fp32_bytes"] == 4 * left_fp32
    assert f"{4 * left_fp32 / 1e3:.1f} kB of other weights kept FP32" in stdout


def test_own_data_file_and_a_token_model(capsys, tmp_path, common):
    # A user's data from the command line: digits' pixel values as token ids in an .npz, split by cwhawq.
    digits = load_digits()
    np.savez(tmp_path / "tokens.npz", x=digits.data.astype(np.int64), y=digits.target)
    args = ["--model", "tests.toy_models:token_gru", "--dataset", str(tmp_path / "tokens.npz")]
    args += ["--method", "greedy-channel"]
    status, _, stderr = run_cli(capsys, "baseline", *common, *args, "--out", str(tmp_path / "o"), "--quiet")
    assert status == 0, stderr
    result = json.loads((tmp_path / "o" / "result.json").read_text())
    names = [layer["name"] for layer in result["layers"]]
    assert names == ["embed", "gru.weight_ih_l0", "gru.weight_hh_l0", "head"]  # the embedding table too
    assert result["layers"][0]["kind"] == "embedding" and result["totals"]["unquantized_weights"] == 0
    assert result["dataset"] == "tokens" and result["totals"]["weight_bits"] <= result["totals"]["budget_bits"]
    assert result["accuracy"]["quantized_val_kl"] > 0  # quantization reached the forward pass


def test_a_model_with_tied_weights_runs_without_surgery(capsys, tmp_path, common):
    digits = load_digits()
    np.savez(tmp_path / "tokens.npz", x=digits.data.astype(np.int64), y=digits.target)
    args = ["--model", "tests.toy_models:tied_token_model", "--dataset", str(tmp_path / "tokens.npz")]
    with pytest.warns(UserWarning, match="quantized once, as layer 'embed'"):
        status, _, stderr = run_cli(
            capsys, "baseline", *common, *args, "--method", "greedy-channel", "--out", str(tmp_path / "o"), "--quiet"
        )
    assert status == 0, stderr
    result = json.loads((tmp_path / "o" / "result.json").read_text())
    assert [layer["name"] for layer in result["layers"]] == ["embed", "mix", "head"]
    assert result["totals"]["weights"] == 17 * 8 + 8 * 8 + 17 * 10  # the shared table counted once
    model = load_quantized_model(tmp_path / "o" / QUANTIZED_MODEL_FILE)["model"]
    assert model.unembed.weight is model.embed.weight  # still tied: both uses read the quantized table
    weights = load_packed_weights(tmp_path / "o" / PACKED_WEIGHTS_FILE)
    assert torch.equal(weights["embed"], model.unembed.weight)
    rebuilt = load_packed_model(tied_token_model(), tmp_path / "o" / PACKED_WEIGHTS_FILE)
    assert rebuilt.unembed.weight is rebuilt.embed.weight
    tokens = torch.from_numpy(digits.data[:50].astype(np.int64))
    assert torch.equal(rebuilt(tokens), model(tokens))


def test_a_model_returning_a_dict_runs_without_surgery(capsys, tmp_path, common):
    with pytest.warns(UserWarning, match=r"uses output\['logits'\] as the logits"):
        result, _ = greedy_on_toy_model(capsys, tmp_path, common, "digits_dict_output")
    assert [layer["name"] for layer in result["layers"]] == ["conv", "head"]  # BatchNorm folded
    model = load_quantized_model(tmp_path / "digits_dict_output" / QUANTIZED_MODEL_FILE)["model"]
    digits = load_dataset("digits", seed=0)
    measured = accuracy(model, digits.test)  # the exported model returns the logits tensor that was measured
    assert measured == pytest.approx(result["accuracy"]["quantized_test"])


def test_a_binary_classifier_with_one_logit_runs_without_surgery(capsys, tmp_path, common):
    digits = load_digits()
    keep = digits.target < 2
    np.savez(tmp_path / "binary.npz", x=digits.images[keep, None].astype(np.float32) / 16, y=digits.target[keep])
    args = ["--model", "tests.toy_models:digits_binary", "--dataset", str(tmp_path / "binary.npz")]
    with pytest.warns(UserWarning, match=r"a single logit z expanded to the logits \(0, z\)"):
        status, _, stderr = run_cli(
            capsys, "baseline", *common, *args, "--method", "greedy-channel", "--out", str(tmp_path / "o"), "--quiet"
        )
    assert status == 0, stderr
    result = json.loads((tmp_path / "o" / "result.json").read_text())
    model = load_quantized_model(tmp_path / "o" / QUANTIZED_MODEL_FILE)["model"]
    test = load_dataset(str(tmp_path / "binary.npz"), seed=0).test
    logits = model(test.x)
    assert logits.shape == (len(test), 2) and torch.all(logits[:, 0] == 0)
    assert accuracy(model, test) == pytest.approx(result["accuracy"]["quantized_test"])


def test_weight_normalised_model_is_quantized_as_deployed(capsys, tmp_path, common):
    result, _ = greedy_on_toy_model(capsys, tmp_path, common, "digits_weight_norm")
    assert [layer["name"] for layer in result["layers"]] == ["1", "3"]
    assert result["totals"]["unquantized_weights"] == 0  # the baked weight, not its two source tensors
    assert result["accuracy"]["quantized_val_kl"] > 0  # quantization reached the forward pass


def test_warnings_are_one_line_each(tmp_path):
    """Like errors, warnings name the problem in one line, without the library line that raised them."""
    model = "tests.toy_models:digits_position_embedding"  # random weights, and a weight left FP32: two warnings
    args = ["baseline", "--model", model, "--dataset", "digits", "--method", "uniform", "--quiet"]
    args += ["--cache-dir", str(tmp_path / "cache"), "--trace-probes", "4", "--trace-batches", "1"]
    completed = subprocess.run(
        [sys.executable, "-m", "cwhawq.cli", *args, "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert completed.returncode == 0, completed.stderr
    lines = completed.stderr.strip().splitlines()
    assert any("are its weights trained?" in line for line in lines)
    assert any("stay FP32 outside the budget" in line for line in lines)
    assert all(line.startswith("warning: ") for line in lines), lines


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--resume"], "nothing to resume"),
        ([], "already holds a search; pass --resume"),
    ],
)
def test_the_output_directory_is_checked_before_the_traces(capsys, tmp_path, common, monkeypatch, args, message):
    """A wrong --out or --resume fails at once, not after minutes of Hessian traces."""
    out = tmp_path / "o"
    out.mkdir()
    if not args:
        (out / "result.json").write_text("{}")

    def no_problem(*_args, **_kwargs):
        raise AssertionError("the problem was built before the output directory was checked")

    monkeypatch.setattr("cwhawq.problem.build_problem", no_problem)
    status, _, stderr = run_cli(capsys, "search", *common, *args, "--out", str(out), "--quiet")
    assert status == 2 and stderr.startswith("error: ") and message in stderr
