"""Distillation: one policy cloned from the best assignments of several finished runs (multi-source transfer).

A policy trained by one search has seen the layers of one model at one budget, so on another model its output is
an extrapolation (docs/BENCHMARKS.md, "Policy transfer"). Distillation fits a fresh actor, with the warm start's
regression (`clone_actions`), to the episodes that reproduce the assignments of several runs, on several models
and budgets: many more layers to learn from, and budget features that vary. The result is an ordinary policy
bundle, which `cwhawq apply` uses zero-shot or as the start of a fine-tune.

Any `result.json` is a source: a search, a fine-tune or a baseline. Its problem is rebuilt from the settings it
records (built-in models and traces come from the cache), and its assignment is turned into the environment's
actions as a warm start does.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.optimize import least_squares
from sklearn.linear_model import Ridge

from agents.ddpg import TARGET_LIMIT, HaqDDPG, clone_actions, make_agent
from agents.policy_bundle import env_signature, save_bundle
from agents.rollout import play_actions
from cwhawq.errors import CwhawqError
from cwhawq.problem import Assignment, QuantProblem, build_problem
from cwhawq.result import read_result, result_assignment
from cwhawq.settings import AgentSettings, ProblemSettings, check_seed
from envs.channel_bits_env import ChannelBitsEnv
from envs.observation import static_feature_names

#: Ridge penalty of a linear actor's fit: of those tried (0.1, 1, 10), the one with the highest mean validation
#: accuracy zero-shot in the leave-one-model-out study (`scripts/zero_shot_study.py`, docs/BENCHMARKS.md).
LINEAR_PENALTY = 1.0
#: The observation feature a linear actor starts from where there is one: the channel greedy's level for the layer.
HINT_FEATURE = "hint_greedy-channel"


@dataclass
class SourceRun:
    """A finished run to learn from: where it is, its settings and rebuilt problem, and its assignment."""

    path: Path
    settings: ProblemSettings
    problem: QuantProblem
    assignment: Assignment
    val_accuracy: float


def load_source_run(
    path: Path,
    cache_dir: str | None = None,
    progress: bool = False,
    problems: dict[str, QuantProblem] | None = None,
    device: str = ProblemSettings.device,
) -> SourceRun:
    """Rebuild the problem of the run in `path` (a directory with result.json, or the file) and read its assignment.

    `cache_dir` replaces the cache directory the run recorded (e.g. a run made on another machine), and `device`
    the device (the problem is the same on any). `problems`, keyed by the settings, lets runs of the same problem
    (other seeds) share one build.
    """
    result_path, result = read_result(path)
    try:
        recorded = result["settings"]["problem"]
        assignment = result_assignment(result)
        val_accuracy = float(result["accuracy"]["quantized_val"])
    except (KeyError, TypeError):
        raise CwhawqError(f"{result_path} is not a cwhawq result.json; pass the output of cwhawq search") from None
    try:
        settings = ProblemSettings.from_dict(recorded)
    except TypeError:
        raise CwhawqError(f"{result_path} records settings this cwhawq does not know; rerun that search") from None
    settings = dataclasses.replace(settings, device=device)
    if cache_dir is not None:
        settings = dataclasses.replace(settings, cache_dir=cache_dir)
    problems = {} if problems is None else problems
    key = json.dumps(dataclasses.asdict(settings), sort_keys=True)
    if key not in problems:
        problems[key] = build_problem(settings, progress=progress)
    problem = problems[key]
    try:
        problem.check_assignment(assignment)
    except CwhawqError as error:
        raise CwhawqError(f"{result_path} does not fit its rebuilt model ({error}); was the model changed?") from None
    return SourceRun(path, settings, problem, assignment, val_accuracy)


def distill_policy(
    sources: Sequence[tuple[ChannelBitsEnv, Assignment]], agent: AgentSettings, seed: int
) -> tuple[HaqDDPG, float]:
    """A fresh agent (built on the first environment) whose actor reproduces every source's assignment: an MLP
    actor by `clone_actions`, a linear one (`agent.actor_arch == ()`) by `fit_linear_actor`.

    Every environment must have the same signature (candidate bit-widths, action, observation), since one actor
    serves them all. Returns the agent and the regression's final mean squared error (in action units).
    """
    if not sources:
        raise CwhawqError("nothing to distil: pass at least one run")
    first_env = sources[0][0]
    expected = env_signature(first_env)
    observations: list[np.ndarray] = []
    actions: list[np.ndarray] = []
    for index, (env, assignment) in enumerate(sources):
        signature = env_signature(env)
        differing = [key for key in expected if signature[key] != expected[key]]
        if differing:
            key = differing[0]
            raise CwhawqError(
                f"run {index + 1} has {key}={signature[key]} but run 1 has {key}={expected[key]}; "
                "distil runs made with the same candidate bit-widths"
            )
        episode_actions = env.actions_for(assignment)
        observations += [step[0] for step in play_actions(env, episode_actions)]
        actions += episode_actions
    model = make_agent(first_env, agent, first_env.n_steps, seed)
    if agent.actor_arch == ():
        error = fit_linear_actor(model, first_env, np.stack(observations), np.stack(actions))
    else:
        error = clone_actions(model, np.stack(observations), np.stack(actions))
    return model, error


def fit_linear_actor(
    model: HaqDDPG,
    env: ChannelBitsEnv,
    observations: np.ndarray,
    actions: np.ndarray,
    penalty: float = LINEAR_PENALTY,
) -> float:
    """Set a linear actor, tanh(W obs + b), to the penalised least-squares fit of the actions on the observations.

    The squared error is measured on the actions themselves, as the actor plays them, and W is shrunk (ridge
    penalty `penalty`) toward a prior: for a level action with observation v2, weight 1 on `HINT_FEATURE`, the
    channel greedy's level, else 0. So on a layer unlike any it learned from, the actor stays near the greedy's
    level, which the zero-shot study found to transfer best. The fit starts from the closed-form ridge regression
    of the actions' tanh inputs and is refined by `scipy.optimize.least_squares`: fitted in tanh's input space
    alone, actions at the ends of the range (arctanh near 2.3 at 0.98) outweighed the rest and the actor played
    worse zero-shot (docs/BENCHMARKS.md, "On another processor: the study again, and a linear actor"). A few hundred
    Adam steps from a random start (`clone_actions`) left the same actor far from either fit. Deterministic: the
    seed plays no part. Returns the fit's mean squared error in action units.
    """
    layers = [module for module in model.actor.mu if isinstance(module, torch.nn.Linear)]
    if len(layers) != 1:
        raise CwhawqError("fit_linear_actor needs a linear actor (AgentSettings.actor_arch=())")
    observations = np.asarray(observations, dtype=np.float64)
    actions = np.clip(np.asarray(actions, dtype=np.float64), -1.0, 1.0)
    prior = np.zeros((actions.shape[1], observations.shape[1]))
    features = static_feature_names(env.observation)
    if env.action == "level" and HINT_FEATURE in features:
        prior[0, features.index(HINT_FEATURE)] = 1.0
    start_targets = np.arctanh(np.clip(actions, -TARGET_LIMIT, TARGET_LIMIT)) - observations @ prior.T
    start = Ridge(alpha=penalty).fit(observations, start_targets)
    start_weight = prior + start.coef_.reshape(prior.shape)
    start_bias = np.broadcast_to(start.intercept_, (actions.shape[1],))
    weight, bias = np.empty_like(prior), np.empty(actions.shape[1])
    for dim in range(actions.shape[1]):
        start_params = np.append(start_weight[dim], start_bias[dim])
        fitted = _action_space_fit(observations, actions[:, dim], prior[dim], penalty, start_params)
        weight[dim], bias[dim] = fitted[:-1], fitted[-1]
    with torch.no_grad():
        layers[0].weight.copy_(torch.as_tensor(weight))
        layers[0].bias.copy_(torch.as_tensor(bias))
        predicted = model.actor(torch.as_tensor(observations, dtype=torch.float32, device=model.device)).cpu().numpy()
    model.actor_target.load_state_dict(model.actor.state_dict())
    return float(np.mean((predicted - actions) ** 2))


def _action_space_fit(
    observations: np.ndarray, targets: np.ndarray, prior: np.ndarray, penalty: float, start: np.ndarray
) -> np.ndarray:
    """Weights and bias (last) minimising sum (tanh(obs w + b) - target)^2 + penalty |w - prior|^2, from `start`."""
    root = np.sqrt(penalty)

    def residuals(params: np.ndarray) -> np.ndarray:
        played = np.tanh(observations @ params[:-1] + params[-1])
        return np.concatenate([played - targets, root * (params[:-1] - prior)])

    def jacobian(params: np.ndarray) -> np.ndarray:
        slope = 1.0 - np.tanh(observations @ params[:-1] + params[-1]) ** 2
        fit_rows = np.hstack([slope[:, None] * observations, slope[:, None]])
        penalty_rows = np.hstack([root * np.eye(len(prior)), np.zeros((len(prior), 1))])
        return np.vstack([fit_rows, penalty_rows])

    return least_squares(residuals, start, jac=jacobian, method="trf").x


def distill_runs(
    paths: Sequence[Path],
    out: Path,
    agent: AgentSettings | None = None,
    seed: int = 0,
    cache_dir: str | None = None,
    progress: bool = False,
    device: str = ProblemSettings.device,
) -> dict[str, Any]:
    """Distil the runs in `paths` into `out/policy.zip`, rebuilding their problems on `device`; returns what the
    bundle records as its training."""
    check_seed(seed)  # before minutes of rebuilding the runs' problems
    agent = agent or AgentSettings()
    problems: dict[str, QuantProblem] = {}
    runs = [load_source_run(path, cache_dir, progress, problems, device) for path in paths]
    envs = [ChannelBitsEnv.for_agent(run.problem, agent) for run in runs]
    model, error = distill_policy([(env, run.assignment) for env, run in zip(envs, runs)], agent, seed)
    trained_on = {
        "distilled_from": [
            {
                "run": str(run.path),
                "model": run.settings.model,
                "dataset": run.problem.data.name,
                "budget_avg_bits": run.problem.budget.total_bits / run.problem.n_weights,
                "val_accuracy": run.val_accuracy,
            }
            for run in runs
        ],
        "layers": sum(env.n_steps for env in envs),
        "fit_mse": error,
        "settings": {"agent": dataclasses.asdict(agent), "seed": seed},
    }
    out.mkdir(parents=True, exist_ok=True)
    save_bundle(model, out / "policy.zip", envs[0], trained_on)
    return trained_on
