"""Change 46's measurement of what the critic chooses: run from the repository root at 25cab58 with prototype.patch
applied (`python docs/benchmark/avx512_machine/critic_screen/probe_screen.py`). One fresh 100-episode search on
LeNet-5 at 2.5 bits, seed 0, eight draws per noisy step; prints the chosen and the average draw's size, and the share
of upward moves."""

import os
import tempfile

import numpy as np
import torch

os.environ["CWHAWQ_SCREEN"] = "8"

import agents.ddpg as ddpg  # noqa: E402
from agents.search import SearchRun  # noqa: E402
from cwhawq.problem import build_problem  # noqa: E402
from cwhawq.settings import AgentSettings, ProblemSettings, SearchSettings  # noqa: E402
from envs.channel_bits_env import ChannelBitsEnv  # noqa: E402

torch.set_num_threads(1)
log = []
screened = ddpg.HaqDDPG._screened


def logged(self, noise):
    state = noise._rng.bit_generator.state
    chosen = screened(self, noise)
    if chosen.noise.any():
        replay = np.random.default_rng()
        replay.bit_generator.state = state
        draws = replay.normal(0.0, noise.sigma, (8, noise.size))
        log.append((np.abs(chosen.noise).mean(), np.abs(draws).mean(), chosen.noise[0]))
    return chosen


ddpg.HaqDDPG._screened = logged
problem = build_problem(ProblemSettings(model="lenet5", dataset="mnist", budget_bits=2.5, seed=0), progress=False)
agent = AgentSettings().schedule_for(101, 7, 0.970299)
with tempfile.TemporaryDirectory() as out:
    settings = SearchSettings(
        problem=ProblemSettings(seed=0), agent=agent, episodes=100, seed=0, out=out, progress=False
    )
    SearchRun(problem, settings, env=ChannelBitsEnv.for_agent(problem, agent, "channel")).run()
moves = np.array(log)
print(f"{len(moves)} screened steps; chosen size / average draw's size {(moves[:, 0] / moves[:, 1]).mean():.2f}; "
      f"upward {(moves[:, 2] > 0).mean():.0%}")
