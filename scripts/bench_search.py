"""Benchmark: wall time of a full search on the default digits problem, and the environment's own overhead.

    python scripts/bench_search.py            # 300-episode searches x 3, env overhead over 5 x 100 episodes
    python scripts/bench_search.py --quick    # a smoke run (few episodes)

The problem (model, traces) is built once, before timing, from the cache (the first run trains and caches it).
Env overhead = (episode time - time inside the quantized forward passes) / episode time, for episodes of random
actions; it includes weight quantization, the budget guard, bit allocation and observations.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

import cwhawq.problem
from agents.search import SearchRun
from cwhawq.problem import QuantProblem, build_problem
from cwhawq.settings import ProblemSettings, SearchSettings
from envs.channel_bits_env import ChannelBitsEnv


def time_search(problem: QuantProblem, episodes: int, seed: int) -> float:
    """Seconds for one complete search of `episodes` episodes (without problem building)."""
    with tempfile.TemporaryDirectory() as out:
        settings = SearchSettings(problem=ProblemSettings(seed=seed), episodes=episodes, out=out, progress=False)
        start = time.perf_counter()
        SearchRun(problem, settings).run()
        return time.perf_counter() - start


def env_overhead(problem: QuantProblem, episodes: int, seed: int) -> tuple[float, float]:
    """(episode milliseconds, share of it outside the quantized forward passes) over random-action episodes."""
    env = ChannelBitsEnv(problem)
    inside = [0.0]
    original = cwhawq.problem.accuracy

    def timed_accuracy(model, split):  # type: ignore[no-untyped-def]
        start = time.perf_counter()
        value = original(model, split)
        inside[0] += time.perf_counter() - start
        return value

    rng = np.random.default_rng(seed)
    actions = rng.uniform(-1, 1, (episodes, env.n_steps, *env.action_space.shape)).astype(np.float32)
    cwhawq.problem.accuracy = timed_accuracy
    try:
        start = time.perf_counter()
        for episode in actions:
            env.reset()
            for action in episode:
                env.step(action)
        total = time.perf_counter() - start
    finally:
        cwhawq.problem.accuracy = original
    return 1e3 * total / episodes, (total - inside[0]) / total


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    """Run both measurements, print a Markdown table, return the medians."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="5-episode searches x 2, 2 x 10 overhead episodes")
    parser.add_argument("--cache-dir", help="cache for the built-in model and traces")
    args = parser.parse_args(argv)
    episodes, search_reps = (5, 2) if args.quick else (300, 3)
    overhead_episodes, overhead_reps = (10, 2) if args.quick else (100, 5)

    problem = build_problem(ProblemSettings(cache_dir=args.cache_dir), progress=False)
    search_s = [time_search(problem, episodes, seed) for seed in range(search_reps)]
    overhead = [env_overhead(problem, overhead_episodes, seed) for seed in range(overhead_reps)]
    result = {
        "search_s": statistics.median(search_s),
        "episode_ms": statistics.median(o[0] for o in overhead),
        "overhead": statistics.median(o[1] for o in overhead),
    }
    print(f"default problem: digits_cnn, {len(problem.layers)} layers, {problem.n_weights} weights, 2.5 bits\n")
    print("| measurement | median | runs |")
    print("|---|---:|---|")
    print(f"| {episodes}-episode search, seconds | {result['search_s']:.1f} | {', '.join(f'{s:.1f}' for s in search_s)} |")
    print(f"| env episode (random actions), ms | {result['episode_ms']:.2f} | {overhead_reps} x {overhead_episodes} episodes |")
    print(f"| env overhead outside forward passes | {result['overhead']:.1%} | {', '.join(f'{o[1]:.1%}' for o in overhead)} |")
    return result


if __name__ == "__main__":
    main()
