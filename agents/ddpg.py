"""The DDPG agent: stable-baselines3's DDPG with HAQ's schedule (warm-up, decaying noise, split learning rates).

Defaults (`cwhawq.settings.AgentSettings`) follow HAQ: 20 warm-up episodes of uniform random actions, Gaussian
exploration noise whose sigma shrinks by 0.99 per episode after warm-up (unlike HAQ, added to only two layers per
episode, chosen at random: `AgentSettings.noise_layers`, docs/BENCHMARKS.md change 25), discount 1 (the only reward is
terminal), tau 0.01, batch 64, actor and critic learning rates 1e-4 and 1e-3, 300x300 networks. The agent trains
once per episode with as many gradient steps as the episode had steps (times `updates_per_step`). The actor is
then pulled back toward the last episode cloned into it, the best found (`AgentSettings.anchor_steps`, change 39).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import DDPG
from stable_baselines3.common.noise import ActionNoise

from cwhawq.settings import NOISE_LAYER_LAWS, AgentSettings

#: Regression targets are kept inside tanh's reach.
TARGET_LIMIT = 0.98


def clone_actions(model: DDPG, observations: np.ndarray, actions: np.ndarray, steps: int = 300) -> float:
    """Fit the actor (and its target) to output `actions` for `observations`; return the final mean squared error."""
    obs = torch.as_tensor(observations, dtype=torch.float32, device=model.device)
    target = torch.as_tensor(np.clip(actions, -TARGET_LIMIT, TARGET_LIMIT), dtype=torch.float32, device=model.device)
    optimizer = torch.optim.Adam(model.actor.parameters(), lr=1e-3)
    model.actor.set_training_mode(True)
    loss = torch.tensor(0.0)
    for _ in range(steps):
        loss = torch.nn.functional.mse_loss(model.actor(obs), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.actor.set_training_mode(False)
    model.actor_target.load_state_dict(model.actor.state_dict())
    return loss.item()


class DecayingNormalNoise(ActionNoise):
    """Gaussian action noise whose sigma is multiplied by `decay` after every episode past warm-up (HAQ).

    With `layers` > 0, only that many steps (layers) of each episode of `steps_per_episode` steps, drawn anew per
    episode, get noise; the others take the policy's action as it is (a sparse, local move from the policy's
    assignment). 0 perturbs every step, as HAQ does. With `layers_law` "geometric", the number of noisy steps is
    drawn anew per episode from a geometric law whose mean is `layers` (mostly one or two steps, now and then many;
    every step when it reaches the episode's length).
    """

    # Class-level defaults: a noise pickled into a policy.zip before sparse noise existed unpickles without these
    # attributes and then acts as it did (every step perturbed).
    layers: int = 0
    layers_law: str = "fixed"
    steps_per_episode: int = 1
    _step: int = 0
    _noisy_steps: frozenset[int] | None = None

    def __init__(
        self,
        size: int,
        sigma: float,
        decay: float,
        warmup_episodes: int,
        seed: int,
        layers: int = 0,
        steps_per_episode: int = 1,
        layers_law: str = "fixed",
    ) -> None:
        super().__init__()
        if layers_law not in NOISE_LAYER_LAWS:
            raise ValueError(f"unknown noise layers law {layers_law!r}; use one of {list(NOISE_LAYER_LAWS)}")
        self.size = size
        self.initial_sigma = sigma
        self.decay = decay
        self.warmup_episodes = warmup_episodes
        self.layers = layers
        self.layers_law = layers_law
        self.steps_per_episode = steps_per_episode
        self.episodes = 0
        self._step = 0
        self._noisy_steps: frozenset[int] | None = None
        self._rng = np.random.default_rng(seed)

    @property
    def step_in_episode(self) -> int:
        """How many steps of the current episode have drawn noise (0 between episodes)."""
        return self._step

    @property
    def sigma(self) -> float:
        """The current standard deviation."""
        return self.initial_sigma * self.decay ** max(0, self.episodes - self.warmup_episodes)

    def _draw_noisy_steps(self) -> frozenset[int] | None:
        """The steps of a new episode that get noise, or None for every step."""
        count = self.layers
        if self.layers_law == "geometric" and self.layers > 0:
            count = int(self._rng.geometric(1.0 / self.layers))
        if not 0 < count < self.steps_per_episode:
            return None
        chosen = self._rng.choice(self.steps_per_episode, size=count, replace=False)
        return frozenset(int(step) for step in chosen)

    def __call__(self) -> np.ndarray:
        if self._step == 0:
            self._noisy_steps = self._draw_noisy_steps()
        noise = self._rng.normal(0.0, self.sigma, self.size).astype(np.float32)
        if self._noisy_steps is not None and self._step not in self._noisy_steps:
            noise[:] = 0.0
        self._step += 1
        return noise

    def reset(self) -> None:
        """Called by stable-baselines3 at the end of every episode."""
        self.episodes += 1
        self._step = 0


class HaqDDPG(DDPG):
    """DDPG whose actor learns `actor_lr_ratio` times slower than its critic, as in HAQ.

    stable-baselines3 gives both optimizers one learning rate; this scales the actor's after every update of
    the schedule. With `explore_from_policy`, warm-up episodes (before learning starts) act with the policy plus
    noise instead of uniform random actions: used after a warm start, so that warm-up explores around it. A
    `warmup_random_share` of the warm-up episodes still samples uniformly (0 by default; see docs/BENCHMARKS.md), and
    so does a `random_share` of the episodes after warm-up (global exploration beside the noise around the policy).
    Each update makes `updates_per_step` gradient steps per environment step collected since the last one.

    `imitate` clones an episode into the actor and keeps it as the anchor: after every update, `anchor_steps` steps
    of the same regression pull the actor back toward it. DDPG's updates alone carried the actor far from the best
    assignment within a few episodes of warm-up's end, and exploration then followed the drifted actor; most
    searches found nothing better after that (docs/BENCHMARKS.md, change 39).
    """

    def __init__(
        self,
        *args: Any,
        actor_lr_ratio: float = 0.1,
        explore_from_policy: bool = False,
        warmup_random_share: float = 0.0,
        random_share: float = 0.0,
        updates_per_step: int = 1,
        anchor_steps: int = 0,
        **kwargs: Any,
    ) -> None:
        # stable-baselines3's load() runs __init__ before it restores the saved attributes, so an agent saved before
        # the anchor existed comes back with none (and trains as it did).
        self.anchor_steps = anchor_steps
        self.anchor: tuple[np.ndarray, np.ndarray] | None = None
        self.actor_lr_ratio = actor_lr_ratio
        self.updates_per_step = updates_per_step
        self.explore_from_policy = explore_from_policy
        self.warmup_random_share = warmup_random_share
        self.random_share = random_share
        super().__init__(*args, **kwargs)

    def _random_episode(self, share: float) -> bool:
        """Whether the current episode samples uniformly, for a `share` of the episodes evenly spread."""
        episode = self._episode_num
        return int((episode + 1) * share) > int(episode * share)

    def _sample_action(self, learning_starts: int, action_noise: ActionNoise | None = None, n_envs: int = 1) -> Any:
        # stable-baselines3 samples uniformly while num_timesteps < learning_starts, so moving that bound decides
        if self.num_timesteps < learning_starts:
            if self.explore_from_policy and not self._random_episode(self.warmup_random_share):
                learning_starts = 0
        elif self._random_episode(self.random_share):
            learning_starts = self.num_timesteps + 1
        return super()._sample_action(learning_starts, action_noise, n_envs)

    def _setup_learn(
        self,
        total_timesteps: int,
        callback: Any = None,
        reset_num_timesteps: bool = True,
        tb_log_name: str = "run",
        progress_bar: bool = False,
    ) -> tuple[int, Any]:
        # stable-baselines3 resets the action noise at every learn() call, which counts as one more episode of the
        # decay schedule; a search continued from a checkpoint (reset_num_timesteps=False) would then explore with
        # less noise than the uninterrupted search, so it keeps the noise as saved.
        noise = self.action_noise
        if not reset_num_timesteps:
            self.action_noise = None
        try:
            return super()._setup_learn(total_timesteps, callback, reset_num_timesteps, tb_log_name, progress_bar)
        finally:
            self.action_noise = noise

    def imitate(self, observations: np.ndarray, actions: np.ndarray) -> float:
        """Clone an episode's `actions` at its `observations` into the actor and anchor it there; return the error."""
        self.anchor = (observations, actions)
        return clone_actions(self, observations, actions)

    def anchor_drift(self) -> float | None:
        """Largest gap between the actor's actions and the anchor's at its observations (None without an anchor)."""
        if self.anchor is None:
            return None
        observations, actions = self.anchor
        with torch.no_grad():
            predicted = self.actor(torch.as_tensor(observations, dtype=torch.float32, device=self.device))
        return float(np.abs(predicted.cpu().numpy() - np.clip(actions, -TARGET_LIMIT, TARGET_LIMIT)).max())

    def train(self, gradient_steps: int, batch_size: int = 100) -> None:
        """stable-baselines3's update, `updates_per_step` times as many gradient steps as environment steps, then
        `anchor_steps` regression steps toward the anchor."""
        super().train(gradient_steps * self.updates_per_step, batch_size)
        if self.anchor_steps and self.anchor is not None:
            clone_actions(self, *self.anchor, steps=self.anchor_steps)

    def _update_learning_rate(self, optimizers: Any) -> None:
        super()._update_learning_rate(optimizers)
        for group in self.actor.optimizer.param_groups:
            group["lr"] *= self.actor_lr_ratio


def network_shape(settings: AgentSettings) -> list[int] | dict[str, list[int]]:
    """stable-baselines3's `net_arch` for the settings: one list for actor and critic, or one per network."""
    if settings.actor_arch is None:
        return list(settings.net_arch)
    return {"pi": list(settings.actor_arch), "qf": list(settings.net_arch)}


def settings_shape(net_arch: list[int] | dict[str, list[int]]) -> dict[str, tuple[int, ...] | None]:
    """The `AgentSettings` fields (net_arch, actor_arch) of a saved agent's `net_arch` (`network_shape`'s inverse)."""
    if isinstance(net_arch, dict):
        return {"net_arch": tuple(net_arch["qf"]), "actor_arch": tuple(net_arch["pi"])}
    return {"net_arch": tuple(net_arch), "actor_arch": None}


def make_agent(
    env: gym.Env,
    settings: AgentSettings,
    steps_per_episode: int,
    seed: int,
    tensorboard_log: str | None = None,
) -> HaqDDPG:
    """Build the agent for `env` from `settings`; warm-up is counted in episodes of `steps_per_episode` steps."""
    action_size = int(np.prod(env.action_space.shape))
    noise = DecayingNormalNoise(
        action_size,
        settings.noise_sigma,
        settings.noise_decay,
        settings.warmup_episodes,
        seed=seed,
        layers=settings.noise_layers,
        steps_per_episode=steps_per_episode,
        layers_law=settings.noise_layers_law,
    )
    return HaqDDPG(
        "MlpPolicy",
        env,
        learning_rate=settings.critic_lr,
        actor_lr_ratio=settings.actor_lr / settings.critic_lr,
        warmup_random_share=settings.warmup_random_share,
        random_share=settings.random_share,
        buffer_size=settings.buffer_size,
        learning_starts=settings.warmup_episodes * steps_per_episode,
        batch_size=settings.batch_size,
        tau=settings.tau,
        gamma=settings.gamma,
        train_freq=(1, "episode"),
        gradient_steps=-1,
        updates_per_step=settings.updates_per_step,
        anchor_steps=settings.anchor_steps,
        action_noise=noise,
        policy_kwargs={"net_arch": network_shape(settings)},
        tensorboard_log=tensorboard_log,
        seed=seed,
        device="cpu",
        verbose=0,
    )
