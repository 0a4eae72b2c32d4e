"""The DDPG agent that searches channel bit-width ratios, its callbacks, search runs and policy bundles."""
