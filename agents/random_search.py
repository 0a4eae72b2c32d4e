"""Random search over the environment's action space: the baseline an RL agent has to beat.

It samples every action uniformly from the same Box the agent acts in, so it shares the agent's budget guard,
trace-ranked allocation and evaluation, and differs only in how actions are chosen.
"""

from __future__ import annotations

from cwhawq.errors import CwhawqError
from cwhawq.problem import QuantProblem
from cwhawq.progress import progress_bar
from cwhawq.tracking import SearchRecord
from envs.channel_bits_env import ChannelBitsEnv


def random_search(
    problem: QuantProblem,
    evaluations: int,
    seed: int,
    granularity: str = "channel",
    action: str = "level",
    progress: bool = False,
) -> SearchRecord:
    """Evaluate `evaluations` uniformly random episodes; the record keeps the best assignment.

    `granularity` and `action` define the environment's action space, as for the agent it is compared with.
    """
    if evaluations < 1:
        raise CwhawqError(f"random search needs at least 1 evaluation, not {evaluations}; pass e.g. --evaluations 300")
    env = ChannelBitsEnv(problem, granularity=granularity, action=action)
    env.action_space.seed(seed)
    record = SearchRecord()
    for _ in progress_bar(range(evaluations), desc="random search", unit="ep", disable=not progress):
        env.reset(seed=seed)
        terminated = False
        while not terminated:
            _, reward, terminated, _, info = env.step(env.action_space.sample())
        record.add(info, reward)
    return record
