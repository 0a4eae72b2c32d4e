"""Benchmark: wall time of a full search on the default digits problem, and the environment's own overhead.

    python scripts/bench_search.py            # 300-episode searches x 3, env overhead over 5 x 100 episodes
    python scripts/bench_search.py --quick    # a smoke run (few episodes)

The problem (model, traces) is built once, before timing, from the cache (the first run trains and caches it).
Env overhead = time in `env.step` outside `QuantProblem.validate` (which quantizes the weights, runs the forward
pass on the validation split and restores the weights): the budget guard, bit allocation and observations.
It is reported as a share of the whole search's time (agent included), and as a share of bare env episodes
driven by random actions (no agent), the harshest view.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Sequence

import numpy as np
import torch

from agents.search import SearchRun
from cwhawq.problem import QuantProblem, build_problem
from cwhawq.settings import ProblemSettings, SearchSettings
from envs.channel_bits_env import ChannelBitsEnv


class StepTimer:
    """Wraps an env's `step` and its problem's `validate` (every validation evaluation goes through it) on the
    instances, adding up the seconds in each (evaluations outside a step, such as the final report's, are not
    counted)."""

    def __init__(self, env: ChannelBitsEnv) -> None:
        self.step_s = 0.0
        self.validate_s = 0.0
        self._in_step = False
        step, validate = env.step, env.problem.validate

        def timed_step(action):  # type: ignore[no-untyped-def]
            start = time.perf_counter()
            self._in_step = True
            try:
                return step(action)
            finally:
                self._in_step = False
                self.step_s += time.perf_counter() - start

        def timed_validate(*args, **kwargs):  # type: ignore[no-untyped-def]
            start = time.perf_counter()
            try:
                return validate(*args, **kwargs)
            finally:
                if self._in_step:
                    self.validate_s += time.perf_counter() - start

        env.step = timed_step  # type: ignore[method-assign]
        env.problem.validate = timed_validate  # type: ignore[method-assign]

    @property
    def overhead_s(self) -> float:
        """Seconds in the environment outside the quantized evaluation."""
        return self.step_s - self.validate_s


def time_search(problem: QuantProblem, episodes: int, seed: int) -> tuple[float, float]:
    """(seconds for one complete search of `episodes` episodes, env overhead as a share of them)."""
    env = ChannelBitsEnv(problem)
    timer = StepTimer(env)
    try:
        with tempfile.TemporaryDirectory() as out:
            settings = SearchSettings(episodes=episodes, seed=seed, out=out, progress=False)
            start = time.perf_counter()
            SearchRun(problem, settings, env=env).run()
            wall = time.perf_counter() - start
    finally:
        del problem.validate  # drop the instance wrapper
    return wall, timer.overhead_s / wall


def env_overhead(problem: QuantProblem, episodes: int, seed: int) -> tuple[float, float]:
    """(episode milliseconds, share of it outside the quantized evaluation) over random-action episodes."""
    env = ChannelBitsEnv(problem)
    rng = np.random.default_rng(seed)
    actions = rng.uniform(-1, 1, (episodes, env.n_steps, *env.action_space.shape)).astype(np.float32)
    timer = StepTimer(env)
    try:
        start = time.perf_counter()
        for episode in actions:
            env.reset()
            for action in episode:
                env.step(action)
        total = time.perf_counter() - start
    finally:
        del problem.validate
    return 1e3 * total / episodes, timer.overhead_s / total


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    """Run both measurements, print a Markdown table, return the medians."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="16-episode searches x 2, 2 x 10 overhead episodes")
    parser.add_argument("--cache-dir", help="cache for the built-in model and traces")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1, as the CLI)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    # Quick searches still outlast the warm start's 10 evaluations, so the agent trains.
    episodes, search_reps = (16, 2) if args.quick else (300, 3)
    overhead_episodes, overhead_reps = (10, 2) if args.quick else (100, 5)

    problem = build_problem(ProblemSettings(cache_dir=args.cache_dir), progress=False)
    searches = [time_search(problem, episodes, seed) for seed in range(search_reps)]
    search_s = [s[0] for s in searches]
    overhead = [env_overhead(problem, overhead_episodes, seed) for seed in range(overhead_reps)]
    result = {
        "search_s": statistics.median(search_s),
        "search_overhead": statistics.median(s[1] for s in searches),
        "episode_ms": statistics.median(o[0] for o in overhead),
        "overhead": statistics.median(o[1] for o in overhead),
    }
    print(f"default problem: digits_cnn, {len(problem.layers)} layers, {problem.n_weights} weights, 2.5 bits, "
          f"{torch.get_num_threads()} torch thread(s)\n")  # fmt: skip
    print("| measurement | median | runs |")
    print("|---|---:|---|")
    table = [
        (f"{episodes}-episode search, seconds", f"{result['search_s']:.1f}", ", ".join(f"{s:.1f}" for s in search_s)),
        (
            "env overhead, share of the search's time",
            f"{result['search_overhead']:.1%}",
            ", ".join(f"{s[1]:.1%}" for s in searches),
        ),
        (
            "env episode (random actions), ms",
            f"{result['episode_ms']:.2f}",
            f"{overhead_reps} x {overhead_episodes} episodes",
        ),
        (
            "env overhead, share of bare env episodes",
            f"{result['overhead']:.1%}",
            ", ".join(f"{o[1]:.1%}" for o in overhead),
        ),
    ]
    for measurement, median, runs in table:
        print(f"| {measurement} | {median} | {runs} |")
    return result


if __name__ == "__main__":
    main()
