"""Typed settings for a search: what the command line fills and what `result.json` records."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from cwhawq.errors import CwhawqError

#: Candidate bit-widths used unless the user gives others; chosen by experiment (docs/BENCHMARKS.md).
DEFAULT_BIT_WIDTHS: tuple[int, ...] = (2, 3, 4, 6, 8)
#: What "better on validation" can mean for a search (`ProblemSettings.objective`, `cwhawq.evaluation.Evaluation`).
OBJECTIVES = ("accuracy", "kl")
#: Which channels of a layer get the higher of its widths in a search (`ProblemSettings.channel_order`,
#: `cwhawq.baselines.perturbation.channel_orders`).
CHANNEL_ORDERS = ("trace", "perturbation")
#: How many layers get exploration noise per episode (`AgentSettings.noise_layers_law`).
NOISE_LAYER_LAWS = ("fixed", "geometric")
#: What one Hessian probe runs over (`TraceSettings.probe_data`, `cwhawq.hessian.channel_traces`): every trace batch,
#: or one batch in turn.
PROBE_DATA = ("all", "batch")
#: The largest seed that numpy, torch and scikit-learn all accept.
MAX_SEED = 2**32 - 1
#: Episodes of a search by default (`cwhawq search`), the length `AgentSettings`' exploration schedule is set for.
DEFAULT_EPISODES = 300


def check_seed(seed: int) -> None:
    """Refuse a seed that one of the seeded libraries would reject with a traceback (negative, too large, a float)."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise CwhawqError(f"seed must be an integer from 0 to 2**32 - 1, not {seed!r}; pass e.g. --seed 0")


@dataclass
class TraceSettings:
    """How the channel-wise Hessian traces are estimated (Hutchinson; `cwhawq.hessian.channel_traces`).

    Probing stops at `max_probes`, or once the whole-model trace has settled (`tol`) and every layer's channel
    ranking is `reliability` signal rather than probe noise; the whole-model rule alone stopped after 15-40 probes
    on the benchmark models, when the channels' trace order was mostly noise (docs/BENCHMARKS.md, change 30).
    `probe_data` "batch" runs each probe over one of the `num_batches` batches in turn instead of all of them
    (`PROBE_DATA`): each probe then costs 1/`num_batches` as much (change 33).
    """

    batch_size: int = 128
    num_batches: int = 4
    max_probes: int = 200
    tol: float = 1e-3
    reliability: float = 0.9
    probe_data: str = "all"


@dataclass
class AgentSettings:
    """DDPG hyper-parameters; defaults follow HAQ where stable-baselines3 allows (see agents/ddpg.py).

    `warm_start` names a baseline (`cwhawq.baselines`) whose solution starts the search, or "best": every
    deterministic baseline is evaluated as it is and replayed in the environment, and the best replay on validation
    starts it (agents/warm_start.py); None keeps HAQ's uniform random warm-up. After a warm start, warm-up episodes
    explore around it, except a `warmup_random_share` of them, which sample uniformly, as does a `random_share` of
    the later episodes. Exploration noise moves `noise_layers` layers per episode, chosen at random (0: every layer,
    as HAQ; 2 by default, docs/BENCHMARKS.md change 25); with `noise_layers_law` "geometric" the number is drawn
    per episode with that mean instead. `action` is the
    channel-granularity action parameterisation of the environment: "level" (one scalar per layer) or "shares"
    (one share per bit-width); see `envs.action_mapping` and docs/BENCHMARKS.md for why "level" is the default.
    `observation` is the environment's observation version (`envs.observation.OBSERVATION_VERSIONS`): "v2" adds the
    baselines' per-layer levels. The agent trains once per episode with `updates_per_step` gradient steps per
    environment step of the episode (HAQ: 1). With `imitate_best`, every new best episode is cloned into the actor
    (self-imitation), and after every update `anchor_steps` regression steps pull the actor back toward it, so that
    exploration follows the best assignment found so far (0: DDPG's updates alone move the actor, which then
    drifts away from the best; docs/BENCHMARKS.md change 39). With `coarse_share` > 0, a
    channel-granularity search spends that share of its episodes on a layer-wise search first, whose best
    assignment joins the channel-wise search's warm-start candidates (coarse to fine; agents/search.py).
    `actor_arch` gives the actor its own hidden layers (None: `net_arch`, as the critic; (): a linear actor, the
    tanh of a linear function of the observation, which distillation can use so that a policy extrapolates to
    another model's layers as a linear rule does; docs/BENCHMARKS.md, "Policy transfer").
    """

    warmup_episodes: int = 20
    noise_sigma: float = 0.5
    noise_decay: float = 0.99
    noise_layers: int = 2
    noise_layers_law: str = "fixed"
    gamma: float = 1.0
    tau: float = 0.01
    actor_lr: float = 1e-4
    critic_lr: float = 1e-3
    batch_size: int = 64
    buffer_size: int = 20_000
    net_arch: tuple[int, ...] = (300, 300)
    actor_arch: tuple[int, ...] | None = None
    warm_start: str | None = "best"
    warmup_random_share: float = 0.0
    random_share: float = 0.0
    action: str = "level"
    observation: str = "v1"
    updates_per_step: int = 1
    imitate_best: bool = True
    anchor_steps: int = 30
    coarse_share: float = 0.0

    def schedule_for(
        self, episodes: int, warmup_episodes: int | None = None, noise_decay: float | None = None
    ) -> AgentSettings:
        """These settings with the exploration schedule stretched or squeezed to `episodes` episodes: warm-up
        takes the same share of them, and the noise decays per episode so that it ends as small as over
        `DEFAULT_EPISODES` episodes. A fine-tune of a third of a search's episodes (`cwhawq apply`) explores on this
        schedule; with the default one it would end before its noise had decayed (docs/BENCHMARKS.md, change 41).
        `warmup_episodes` and `noise_decay`, where given, are kept as they are instead."""
        if episodes < 1:
            raise CwhawqError(f"episodes must be at least 1, not {episodes}; pass e.g. --episodes 300")
        ratio = episodes / DEFAULT_EPISODES
        return replace(
            self,
            warmup_episodes=round(self.warmup_episodes * ratio) if warmup_episodes is None else warmup_episodes,
            noise_decay=self.noise_decay ** (1 / ratio) if noise_decay is None else noise_decay,
        )


@dataclass
class ProblemSettings:
    """Which model, data, budget and candidate bit-widths define the quantization problem.

    `objective` is what makes one assignment better than another on validation, for every method that chooses
    by measuring (the agent, its warm start, random search): "kl", the mean KL divergence of the quantized model's
    predictions from the full-precision model's (`cwhawq.evaluation`), or "accuracy". "kl" is the default because
    a choice made by it held up better on validation data the choice never saw (docs/BENCHMARKS.md, change 21).
    Accuracy is reported either way. `channel_order` ranks the channels of a layer in a search, the first getting
    the most bits: "trace", by Hessian trace (CW-HAWQ's rule), or "perturbation", by how much the trace-weighted
    quantization error falls when a channel moves from the lowest width to the next, the default because the
    channel-wise search scored higher with it (docs/BENCHMARKS.md, change 35). `device` is where the model's passes
    run (`cwhawq.device`); the data stay on the CPU and move a batch at a time.
    """

    model: str = "digits_cnn"
    dataset: str | None = None
    checkpoint: str | None = None
    budget_bits: float | None = 2.5
    budget_mb: float | None = None
    bit_widths: tuple[int, ...] = DEFAULT_BIT_WIDTHS
    pin: dict[str, int] = field(default_factory=dict)
    fold_bn: bool = True
    seed: int = 0
    cache_dir: str | None = None
    traces: TraceSettings = field(default_factory=TraceSettings)
    objective: str = "kl"
    channel_order: str = "perturbation"
    kl_train_samples: int = 1000
    device: str = "cpu"

    def __post_init__(self) -> None:
        check_seed(self.seed)
        samples = self.kl_train_samples
        if isinstance(samples, bool) or not isinstance(samples, int) or samples < 0:
            raise CwhawqError(
                f"kl_train_samples must be a whole number of training inputs, 0 or more, not {samples!r}; pass e.g. "
                "--kl-train-samples 1000"
            )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProblemSettings:
        """Rebuild settings recorded in a `result.json` (the inverse of `dataclasses.asdict`)."""
        values = dict(data)
        values["bit_widths"] = tuple(values.get("bit_widths", DEFAULT_BIT_WIDTHS))
        # a record older than the ranking rule ran without it: rebuild the traces it had
        values["traces"] = TraceSettings(**{"reliability": 0.0, **values.get("traces", {})})
        values.setdefault("channel_order", "trace")  # a record older than the choice searched in trace order
        values.setdefault("kl_train_samples", 0)  # and one older than this measured the KL on validation alone
        return cls(**values)


@dataclass
class SearchSettings:
    """A whole search run: the problem, the agent, and where the outputs go.

    `seed` seeds the agent (networks, noise, warm-up actions); `problem.seed` fixes the data split and built-in
    weights, so one problem can be searched with several agent seeds.
    """

    problem: ProblemSettings = field(default_factory=ProblemSettings)
    agent: AgentSettings = field(default_factory=AgentSettings)
    episodes: int = DEFAULT_EPISODES
    seed: int = 0
    out: str = "runs/default"
    resume: bool = False
    checkpoint_every: int = 25
    progress: bool = True

    def __post_init__(self) -> None:
        check_seed(self.seed)

    @property
    def out_dir(self) -> Path:
        """The output directory as a path."""
        return Path(self.out)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable form, recorded in result.json."""
        return asdict(self)
