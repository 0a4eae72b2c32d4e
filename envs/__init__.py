"""Gymnasium environments for channel-wise mixed-precision search; importing registers them."""

from gymnasium.envs.registration import register, registry

from envs.channel_bits_env import ChannelBitsEnv

ENV_ID = "cwhawq/ChannelBits-v0"

if ENV_ID not in registry:
    register(id=ENV_ID, entry_point="envs.channel_bits_env:ChannelBitsEnv")

__all__ = ["ENV_ID", "ChannelBitsEnv"]
