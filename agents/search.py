"""Running (and resuming) a DDPG search on a problem, and turning its best assignment into `result.json`.

Files in the output directory:
    result.json         the final report (written at the end, also after Ctrl-C or a crash), with
                        quantized_model.pt and packed_weights.npz, the quantized model (`cwhawq.export`)
    best.json           the best assignment so far, rewritten at every improvement
    policy.zip          the agent with its metadata (a policy bundle), at every checkpoint and at the end
    replay_buffer.pkl   the agent's replay buffer, with policy.zip, for --resume
    generators.pt       the state of the global random generators at the checkpoint, for --resume
    state.json          the search record and settings, with policy.zip, for --resume (written without a
                        record when the search starts: --resume then starts it again)
    evaluations.jsonl   every validation evaluation so far (`cwhawq.evaluation_memo`): a run interrupted before
                        its first checkpoint (in the warm start) and resumed replays them instead of measuring
    tb/                 TensorBoard event files: search/* per episode (ours), DDPG_*/train/* losses (SB3)
    coarse/             with `AgentSettings.coarse_share`: the layer-wise first phase, a search of its own with
                        the same files (its episodes are also in the main record, as the first ones)
"""

from __future__ import annotations

import copy
import dataclasses
import json
import random
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agents.callbacks import SearchCallback
from agents.ddpg import DecayingNormalNoise, make_agent, settings_shape
from agents.policy_bundle import load_bundle, save_bundle
from agents.rollout import Outcome, reuse_outcomes, rollout_with_reward
from agents.warm_start import warm_start
from cwhawq.errors import CwhawqError
from cwhawq.evaluation_memo import EVALUATIONS_FILE, EvaluationMemo
from cwhawq.problem import Assignment, QuantProblem
from cwhawq.result import build_result, write_result
from cwhawq.settings import NOISE_LAYER_LAWS, SearchSettings
from cwhawq.tracking import SearchRecord, torch_save_atomic, write_json_atomic
from envs.channel_bits_env import ChannelBitsEnv

#: The global random generators' state at the last checkpoint (`save_generators`).
GENERATORS_FILE = "generators.pt"
#: A fine-tune's start (`SearchRun.start`) when it explores from the transferred policy's own output and weights.
TRANSFERRED_START = "the transferred policy's output"
#: Sub-directory of a search's output that holds its layer-wise (coarse) phase.
COARSE_DIR = "coarse"
#: The coarse phase starts from the best layer-wise baseline, as the layer-wise DDPG does.
COARSE_WARM_START = "ilp-layer"
#: Settings whose value, in a state saved before the setting was recorded, differs from today's default: a
#: search saved before "objective" existed chose by accuracy, not by today's "kl", one saved before
#: "noise_layers" existed put noise on every layer, one saved before "channel_order" ranked by trace, and one saved
#: before "kl_train_samples" measured the KL divergence on validation alone, and one saved before "anchor_steps"
#: did not pull its actor back toward the best.
SETTINGS_BEFORE_RECORDED: dict[tuple[str, str], object] = {
    ("problem", "objective"): "accuracy",
    ("agent", "noise_layers"): 0,
    ("problem", "channel_order"): "trace",
    ("problem", "kl_train_samples"): 0,
    ("agent", "anchor_steps"): 0,
}
#: Agent settings a resumed fine-tune keeps from its state, whatever the resuming command says: its bundle's network
#: shape.
FINE_TUNE_OWN_SETTINGS: tuple[str, ...] = ("net_arch", "actor_arch")
#: Settings that may change when a search is resumed: where it runs, not what it searches.
SETTINGS_FREE_ON_RESUME: frozenset[tuple[str, str]] = frozenset({("problem", "device")})


def save_generators(path: Path) -> None:
    """Save the state of Python's, numpy's and torch's global random generators (atomically)."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    torch_save_atomic(path, state)


def load_generators(path: Path) -> None:
    """Put back the global generators' state saved by `save_generators`, if `path` exists."""
    if path.is_file():
        state = torch.load(path, weights_only=False)  # our own file: tuples and numpy arrays, not only tensors
        random.setstate(state["python"])
        np.random.set_state(state["numpy"])
        torch.set_rng_state(state["torch"])


def trained_on(problem: QuantProblem, settings: SearchSettings) -> dict[str, Any]:
    """What a policy bundle records about the problem it was trained on."""
    return {
        "model": settings.problem.model,
        "dataset": problem.data.name,
        "budget_avg_bits": problem.budget.total_bits / problem.n_weights,
        "settings": settings.to_dict(),
    }


def check_settings(settings: SearchSettings) -> None:
    """Refuse settings a search cannot run with, in one line each (the CLI checks before building the problem)."""
    agent = settings.agent
    if settings.episodes < 1:
        raise CwhawqError(f"episodes must be at least 1, not {settings.episodes}; pass e.g. --episodes 300")
    if agent.warmup_episodes < 0:
        raise CwhawqError(f"warm-up episodes must be 0 or more, not {agent.warmup_episodes}")
    if not agent.noise_sigma >= 0:
        raise CwhawqError(f"exploration noise sigma must be 0 or more, not {agent.noise_sigma}; the default is 0.5")
    if agent.noise_layers < 0:
        raise CwhawqError(f"noise layers must be 0 (every layer) or more, not {agent.noise_layers}")
    if not 0.0 < agent.noise_decay <= 1.0:
        raise CwhawqError(f"noise decay must be in (0, 1], not {agent.noise_decay}; 1 keeps the noise constant")
    if agent.anchor_steps < 0:
        raise CwhawqError(f"anchor steps must be 0 (no anchor) or more, not {agent.anchor_steps}; the default is 30")
    if agent.noise_layers_law not in NOISE_LAYER_LAWS:
        law = agent.noise_layers_law
        raise CwhawqError(f"unknown noise layers law {law!r}; use one of {list(NOISE_LAYER_LAWS)}")
    if not 0.0 <= agent.coarse_share < 1.0:
        share = agent.coarse_share
        raise CwhawqError(f"coarse share {share} is outside [0, 1); pass a share of the episodes such as 0.33")


def check_out_dir(settings: SearchSettings, coarse: bool = False, fine_tune: bool = False) -> None:
    """Refuse an output directory that does not fit the run: --resume where no search started, or a new run
    where one did. Cheap, so the CLI checks before building the problem (traces can take minutes).

    Args:
        settings: the run's settings (`out`, `resume`).
        coarse: whether the search starts with a layer-wise phase (whose own state then counts as started).
        fine_tune: whether the run fine-tunes a policy (it has no --resume hint to give for a finished one).
    """
    out = settings.out_dir
    started = (out / "state.json").is_file() or (coarse and (out / COARSE_DIR / "state.json").is_file())
    if settings.resume and not started:
        raise CwhawqError(f"nothing to resume in {out} (no state.json); drop --resume to start anew")
    if not settings.resume and ((out / "state.json").exists() or (out / "result.json").exists()):
        hint = "pass another --out" if fine_tune else "pass --resume to continue it or another --out"
        raise CwhawqError(f"{out} already holds a search; {hint}")


def recorded_agent_settings(out: Path) -> dict[str, Any]:
    """The agent settings recorded by the search started in `out` (while its layer-wise phase runs, that phase's,
    which shares its exploration schedule), or {} where none started."""
    for state_path in (out / "state.json", out / COARSE_DIR / "state.json"):
        if state_path.is_file():
            return json.loads(state_path.read_text())["settings"]["agent"]
    return {}


class SearchRun:
    """A search writing into `settings.out_dir`: new, resumed from the last checkpoint there, or fine-tuned.

    With `settings.agent.coarse_share` > 0, a new channel-granularity search first runs a layer-wise search (one
    bit-width per layer, HAQ's space) for that share of the episodes in `out/coarse`; its episodes join this
    search's record and its best assignment joins the warm-start candidates (the channel-wise search starts from
    the best of them on validation). Interrupting either phase and resuming continues where it stopped.

    Args:
        problem: what to quantize.
        settings: the run's settings; `settings.resume` continues the search saved in `settings.out`.
        env: the environment (default: channel granularity on `problem`, with `settings.agent.action`).
        start_from: a policy bundle to fine-tune: a fresh agent whose actor is the bundle's (the critic is new),
            on a fresh search's schedule (warm-up episodes explore around the policy before the first update); the
            bundle's zero-shot outcomes (`agents.rollout.reuse_outcomes`: its deterministic output, and that output
            fitted to the budget) are the first episodes, so the result is never worse (on validation) than
            applying the policy zero-shot. With a warm start set, the baselines it names are evaluated on
            this problem too (one evaluation each), and the best of them and the policy's own output is cloned
            into the actor, as in a fresh search; where a baseline's replay wins, into a fresh actor (the
            transferred weights are kept only when the policy's output is the best start on this problem).
            `settings.agent.net_arch` and `actor_arch` are set to the bundle's. A fine-tune has no coarse phase.
        memo: the evaluation memo to use (default: `evaluations.jsonl` in `settings.out`; a coarse phase shares
            its search's).
    """

    def __init__(
        self,
        problem: QuantProblem,
        settings: SearchSettings,
        env: ChannelBitsEnv | None = None,
        start_from: Path | None = None,
        memo: EvaluationMemo | None = None,
    ) -> None:
        self.problem = problem
        self.settings = settings
        self._unlogged: list[Outcome] = []
        self._from_checkpoint = False
        self.out = settings.out_dir
        self.env = env if env is not None else ChannelBitsEnv.for_agent(problem, settings.agent)
        self.method = "policy-finetune" if start_from is not None else f"ddpg-{self.env.granularity}"
        self.final_outcome: Outcome | None = None
        self.coarse: SearchRun | None = None
        # What exploration started from (`WarmStart.start`): reported in result.json, kept in state.json.
        self.start: str | None = None
        check_settings(settings)
        check_out_dir(settings, coarse=self._with_coarse(start_from), fine_tune=start_from is not None)
        state_path = self.out / "state.json"
        self.out.mkdir(parents=True, exist_ok=True)
        self.memo = memo if memo is not None else EvaluationMemo(self.out / EVALUATIONS_FILE, problem.fingerprint())
        if state_path.is_file():
            self._resume(state_path)
        elif self._with_coarse(start_from):
            self.coarse = self._coarse_run()
        else:
            self._begin(start_from, SearchRecord())

    def _with_coarse(self, start_from: Path | None) -> bool:
        """Whether this search starts with a layer-wise phase (a new channel-wise search with a coarse share)."""
        agent = self.settings.agent
        return agent.coarse_share > 0 and start_from is None and self.env.granularity == "channel"

    def _state(self, record: SearchRecord | None, start_from: Path | None = None) -> dict[str, Any]:
        return {
            "settings": self.settings.to_dict(),
            "record": None if record is None else record.to_dict(),
            "method": self.method,
            "start_from": None if start_from is None else str(Path(start_from).resolve()),
            "start": self.start,
        }

    def _begin(self, start_from: Path | None, record: SearchRecord) -> None:
        """Start the agent (a fresh search after `record`, or a fine-tune of the bundle `start_from`).

        A state.json without a record marks the search as started: if it stops before its first checkpoint (in
        the warm start), --resume begins it again, and the memo replays the evaluations already made.
        """
        write_json_atomic(self.out / "state.json", self._state(None, start_from))
        with self.problem.memoized(self.memo):
            if start_from is None:
                self._start(record)
            else:
                self._start_fine_tune(start_from)

    def _resume(self, state_path: Path) -> None:
        state = json.loads(state_path.read_text())
        current = json.loads(json.dumps(self.settings.to_dict()))
        fine_tune = state.get("method") == "policy-finetune"
        # The agent's settings live on in the saved agent, so they must match too, or result.json would record
        # settings the search did not use. Keys an older state lacks were then at their current defaults, except
        # those in `SETTINGS_BEFORE_RECORDED`. A fine-tune's network shape is its bundle's, not a setting of the
        # command that resumes it.
        differing = [
            f"{part}.{key}"
            for part in ("problem", "agent")
            for key, value in current[part].items()
            if state["settings"][part].get(key, SETTINGS_BEFORE_RECORDED.get((part, key), value)) != value
            and not (fine_tune and key in FINE_TUNE_OWN_SETTINGS)
            and (part, key) not in SETTINGS_FREE_ON_RESUME
        ]
        if differing:
            raise CwhawqError(
                f"{self.out} holds a search with other settings ({', '.join(differing)}); "
                "use the same settings to resume, or another --out"
            )
        self.method = state.get("method", self.method)  # a resumed fine-tune stays a fine-tune
        self.start = state.get("start")
        if fine_tune:
            recorded = state["settings"]["agent"]
            actor_arch = recorded.get("actor_arch")
            self.settings.agent = dataclasses.replace(
                self.settings.agent,
                net_arch=tuple(recorded["net_arch"]),
                actor_arch=None if actor_arch is None else tuple(actor_arch),
            )
        if state["record"] is None:  # stopped before its first checkpoint
            start_from = Path(state["start_from"]) if state.get("start_from") else None
            if self._with_coarse(start_from):  # in the channel-wise warm start: the finished coarse phase again
                self.coarse = self._coarse_run()
            else:
                self._begin(start_from, SearchRecord())
            return
        self._from_checkpoint = True
        self.record = SearchRecord.from_dict(state["record"])
        self.model, _ = load_bundle(self.out / "policy.zip", self.env)
        self.model.load_replay_buffer(self.out / "replay_buffer.pkl")
        # Loading reseeds the global generators (stable-baselines3 samples the replay buffer from numpy's): put back
        # their state at the checkpoint. A search saved without it continues, just not as the uninterrupted one would.
        load_generators(self.out / GENERATORS_FILE)
        noise = self.model.action_noise
        if isinstance(noise, DecayingNormalNoise) and noise.step_in_episode:
            noise.reset()  # stopped within an episode, which is played again from its start

    def _coarse_run(self) -> SearchRun:
        """The layer-wise first phase (new, or resumed when `settings.resume`), on its share of the episodes."""
        agent = self.settings.agent
        coarse_agent = dataclasses.replace(
            agent, coarse_share=0.0, warm_start=COARSE_WARM_START if agent.warm_start else None
        )
        coarse_settings = dataclasses.replace(
            self.settings,
            agent=coarse_agent,
            episodes=max(1, round(agent.coarse_share * self.settings.episodes)),
            out=str(self.out / COARSE_DIR),
        )
        layer_env = ChannelBitsEnv(self.problem, granularity="layer", observation=self.env.observation)
        return SearchRun(self.problem, coarse_settings, env=layer_env, memo=self.memo)

    def _start(self, record: SearchRecord) -> None:
        """A new agent; with a warm start, the best baseline (or best of `record`, an earlier phase) starts it."""
        self.record = record
        settings = self.settings
        self.model = make_agent(
            self.env, settings.agent, self.env.n_steps, settings.seed, tensorboard_log=str(self.out / "tb")
        )
        if settings.agent.warm_start:
            known = []
            if record.best_assignment is not None:
                best = {"assignment": record.best_assignment, "val_score": record.best_val_score}
                known = [(best, 0.0)]
            warm = warm_start(
                self.model, self.env, settings.agent.warm_start, known=known, known_label="the layer-wise phase's best"
            )
            self._unlogged, self.start = warm.evaluations, warm.start
            for info, reward in self._unlogged:
                self.record.add(info, reward)
            self.save_best()
        else:
            self.start = "uniform random warm-up episodes"

    def _start_fine_tune(self, bundle: Path) -> None:
        self.record = SearchRecord()
        source, _ = load_bundle(bundle, self.env)
        # A fresh agent on this run's settings and schedule, with the bundle's actor (and so its network shape).
        # Only the actor carries over: the critic's values are another model's accuracies, and a transferred
        # critic gave worse fine-tunes than a new one (docs/BENCHMARKS.md, "Agent changes").
        agent = dataclasses.replace(self.settings.agent, **settings_shape(source.policy_kwargs["net_arch"]))
        self.settings.agent = agent
        self.model = make_agent(
            self.env, agent, self.env.n_steps, self.settings.seed, tensorboard_log=str(self.out / "tb")
        )
        fresh_actor = copy.deepcopy(self.model.actor.state_dict())
        self.model.actor.load_state_dict(source.actor.state_dict())
        self.model.actor_target.load_state_dict(source.actor.state_dict())
        self.model.explore_from_policy = True
        self._unlogged = reuse_outcomes(self.model, self.env)
        self.start = TRANSFERRED_START
        if agent.warm_start:
            # Where a baseline beats the policy's own output on this model, the transferred actor starts afresh:
            # exploring from its weights found less than a fresh search's in as many episodes (change 31).
            warm = warm_start(
                self.model,
                self.env,
                agent.warm_start,
                known=self._unlogged,
                baseline_actor=fresh_actor,
                known_label=TRANSFERRED_START,
            )
            self._unlogged += warm.evaluations
            self.start = warm.start
        for outcome in self._unlogged:
            self.record.add(*outcome)
        self.save_best()

    def save_best(self) -> None:
        """Write the best assignment so far (cheap; called at every improvement)."""
        write_json_atomic(self.out / "best.json", self.record.to_dict() | {"history": None})

    def checkpoint(self) -> None:
        """Save everything --resume needs: policy bundle, replay buffer, random generators, record and settings."""
        save_bundle(self.model, self.out / "policy.zip", self.env, trained_on(self.problem, self.settings))
        self.model.save_replay_buffer(self.out / "replay_buffer.pkl")
        save_generators(self.out / GENERATORS_FILE)
        write_json_atomic(self.out / "state.json", self._state(self.record))

    def run(self, episodes: int | None = None) -> dict[str, Any]:
        """Train until `episodes` (default: the settings') episodes are recorded; return the result document.

        Ctrl-C or an exception stops the search early; the checkpoint and result.json are still written. A
        search interrupted in its coarse phase writes that phase's result (its best assignment so far) as
        result.json.
        """
        with self.problem.memoized(self.memo):
            return self._run(episodes)

    def _run(self, episodes: int | None) -> dict[str, Any]:
        if self.coarse is not None:
            coarse_result = self.coarse.run()
            if coarse_result["search"]["interrupted"]:
                write_result(self.out, self.problem, coarse_result)
                return coarse_result
            record = self.coarse.record
            record.add(*self.coarse.final_outcome)
            self.coarse = None
            self._begin(None, record)
        target = self.settings.episodes if episodes is None else episodes
        remaining = max(target - self.record.episodes, 0)
        if not remaining and not self._from_checkpoint:
            warnings.warn(
                f"the warm start's {self.record.episodes} evaluations used up all {target} episodes, so the agent "
                "did not train; pass more episodes for a search",
                stacklevel=3,
            )
        callback = SearchCallback(
            self.record,
            self.out / "tb",
            [layer.name for layer in self.problem.layers],
            total_episodes=target,
            save_best=self.save_best,
            checkpoint=self.checkpoint,
            checkpoint_every=self.settings.checkpoint_every,
            progress=self.settings.progress,
            earlier=self._unlogged,
            imitate=self.model.imitate if self.settings.agent.imitate_best else None,
            label=f"{self.env.granularity}-wise search",
        )
        interrupted = False
        try:
            if remaining:
                self.model.learn(
                    total_timesteps=remaining * self.env.n_steps,
                    callback=callback,
                    log_interval=10,
                    reset_num_timesteps=not self._from_checkpoint,
                )
        except KeyboardInterrupt:
            interrupted = True
        finally:
            self.checkpoint()
        return self.finish(interrupted)

    def finish(self, interrupted: bool) -> dict[str, Any]:
        """Compare the final policy's own output with the best seen, then write and return result.json.

        `evaluations` counts every quantized validation evaluation: one per episode plus the final rollout.
        """
        if self.record.best_assignment is None:
            raise CwhawqError("the search stopped before its first episode ended; run it again with --resume")
        self.final_outcome = rollout_with_reward(self.model, self.env)
        final = self.final_outcome[0]
        best: Assignment = self.record.best_assignment
        if final["val_score"] > self.record.best_val_score:
            best = final["assignment"]
        result = build_result(
            self.problem,
            best,
            method=self.method,
            settings=self.settings.to_dict(),
            extra={
                "search": {
                    "episodes": self.record.episodes,
                    "evaluations": self.record.episodes + 1,
                    "best_episode": self.record.best_episode,
                    "final_policy_val_accuracy": final["val_accuracy"],
                    "interrupted": interrupted,
                    "best_val_score_curve": self.record.best_so_far(),
                    "seed": self.settings.seed,
                    "start": self.start,
                }
            },
        )
        write_result(self.out, self.problem, result)
        return result

