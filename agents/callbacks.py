"""What the agent reports while it searches: TensorBoard curves, a progress bar, the best assignment, checkpoints."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from stable_baselines3.common.callbacks import BaseCallback  # noqa: E402
from torch.utils.tensorboard import SummaryWriter  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from cwhawq.problem import Assignment  # noqa: E402
from cwhawq.progress import progress_bar  # noqa: E402
from cwhawq.tracking import SearchRecord  # noqa: E402


def layer_bits_figure(assignment: Assignment, layer_names: list[str]) -> plt.Figure:
    """Bar chart of each layer's average bits, in model order."""
    values = [float(np.mean(assignment[name])) for name in layer_names]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.3 * len(values)), 3.0))
    ax.bar(range(len(values)), values)
    ax.set_xticks(range(len(values)), layer_names, rotation=90, fontsize=6)
    ax.set_ylabel("average bits")
    fig.tight_layout()
    return fig


class SearchCallback(BaseCallback):
    """Logs every finished episode, saves each new best assignment, and checkpoints every `checkpoint_every` episodes
    (once the agent has trained on the episode, when the next one starts).

    `earlier` holds (terminal info, reward) of evaluations already in the record but not yet logged (a warm
    start's); they are logged first, as the first episodes. With `imitate`, every episode that sets a new best
    is passed to it as (observations, actions), so that the actor can be pulled toward it (self-imitation).
    `label` names the progress bar (a coarse-to-fine search shows "layer-wise search", then "channel-wise search").

    Scalars go to TensorBoard under `search/` with the episode number as the step: reward, validation accuracy
    and KL divergence from the full-precision predictions, average bits, size in MB, the validation accuracy of
    the best assignment so far (best by the problem's objective), exploration sigma, how far the actor has moved
    from the episode it imitates (`HaqDDPG.anchor_drift`, in action units); the per-layer average bits
    of each episode as a histogram, and a bar chart of the best assignment's per-layer bits at checkpoints.
    """

    def __init__(
        self,
        record: SearchRecord,
        tb_dir: Path,
        layer_names: list[str],
        total_episodes: int,
        save_best: Callable[[], None],
        checkpoint: Callable[[], None],
        checkpoint_every: int = 25,
        progress: bool = True,
        earlier: list[tuple[dict, float]] | None = None,
        imitate: Callable[[np.ndarray, np.ndarray], object] | None = None,
        label: str = "search",
    ) -> None:
        super().__init__()
        self.earlier = earlier or []
        self.record = record
        self.tb_dir = tb_dir
        self.layer_names = layer_names
        self.total_episodes = total_episodes
        self.save_best = save_best
        self.checkpoint = checkpoint
        self.checkpoint_every = checkpoint_every
        self.progress = progress
        self.imitate = imitate
        self.label = label
        self._episode: list[tuple[np.ndarray, np.ndarray]] = []
        self._checkpoint_due: int | None = None
        self._writer: SummaryWriter | None = None
        self._bar: tqdm | None = None

    def _on_training_start(self) -> None:
        self._writer = SummaryWriter(str(self.tb_dir))
        self._bar = progress_bar(
            total=self.total_episodes,
            initial=self.record.episodes,
            desc=self.label,
            unit="ep",
            disable=not self.progress,
        )
        first = self.record.episodes - len(self.earlier)
        for offset, (info, reward) in enumerate(self.earlier):
            self._log(first + offset, info, reward)
        self.earlier = []

    def _on_step(self) -> bool:
        if self.imitate is not None:
            # Called before stable-baselines3 stores the transition, so _last_obs is still this step's observation.
            self._episode.append((self.model._last_obs[0].copy(), self.locals["buffer_actions"][0].copy()))
        if not self.locals["dones"][0]:
            return True
        episode_steps, self._episode = self._episode, []
        info = self.locals["infos"][0]
        reward = float(self.locals["rewards"][0])
        improved = self.record.add(info, reward)
        episode = self.record.episodes - 1
        self._log(episode, info, reward)
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix(
                best=f"{self.record.best_val_accuracy:.2%}", bits=f"{info['avg_bits']:.2f}", refresh=False
            )
        if improved:
            self.save_best()
            if self.imitate is not None:
                self.imitate(np.stack([obs for obs, _ in episode_steps]), np.stack([a for _, a in episode_steps]))
        if self.record.episodes % self.checkpoint_every == 0:
            self._checkpoint_due = episode
        return True

    def _on_rollout_start(self) -> None:
        # A due checkpoint is written here, after stable-baselines3 has reset the exploration noise and trained on the
        # finished episode, so that a search resumed from it goes on exactly as the uninterrupted one.
        if self._checkpoint_due is not None:
            self.checkpoint()
            self._log_best_figure(self._checkpoint_due)
            self._checkpoint_due = None

    def _log(self, episode: int, info: dict, reward: float) -> None:
        writer = self._writer
        noise = self.model.action_noise
        writer.add_scalar("search/reward", reward, episode)
        writer.add_scalar("search/val_accuracy", info["val_accuracy"], episode)
        writer.add_scalar("search/val_kl", info["val_kl"], episode)
        writer.add_scalar("search/avg_bits", info["avg_bits"], episode)
        writer.add_scalar("search/size_mb", info["size_bits"] / 8e6, episode)
        writer.add_scalar("search/best_val_accuracy", self.record.best_val_accuracy, episode)
        if noise is not None:
            writer.add_scalar("search/noise_sigma", noise.sigma, episode)
        drift = self.model.anchor_drift()
        if drift is not None:
            writer.add_scalar("search/actor_drift", drift, episode)
        layer_bits = np.array([np.mean(info["assignment"][name]) for name in self.layer_names])
        writer.add_histogram("search/layer_avg_bits", layer_bits, episode)

    def _log_best_figure(self, episode: int) -> None:
        if self.record.best_assignment is not None:
            self._writer.add_figure(
                "search/best_layer_bits", layer_bits_figure(self.record.best_assignment, self.layer_names), episode
            )

    def _on_training_end(self) -> None:
        # the search checkpoints after training ends; the best assignment's figure is logged here
        self._log_best_figure(max(self.record.episodes - 1, 0))
        self._writer.close()
        self._bar.close()
