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

from agents.ddpg import HaqDDPG, make_agent
from agents.policy_bundle import env_signature, save_bundle
from agents.rollout import play_actions
from agents.warm_start import clone_actions
from cwhawq.errors import CwhawqError
from cwhawq.problem import Assignment, QuantProblem, build_problem
from cwhawq.result import result_assignment
from cwhawq.settings import AgentSettings, ProblemSettings
from envs.channel_bits_env import ChannelBitsEnv


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
    path = Path(path)
    result_path = path / "result.json" if path.is_dir() else path
    if not result_path.is_file():
        raise CwhawqError(f"no result.json at {path}; pass the output directory of a finished cwhawq run")
    try:
        result = json.loads(result_path.read_text())
        recorded = result["settings"]["problem"]
        assignment = result_assignment(result)
        val_accuracy = float(result["accuracy"]["quantized_val"])
    except (json.JSONDecodeError, KeyError, TypeError):
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
    """A fresh agent (built on the first environment) whose actor reproduces every source's assignment.

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
    error = clone_actions(model, np.stack(observations), np.stack(actions))
    return model, error


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
