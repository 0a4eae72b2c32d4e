"""A policy bundle: stable-baselines3's `policy.zip` with cwhawq's metadata stored inside the same zip.

The metadata (`cwhawq.json` in the archive; stable-baselines3 ignores unknown members) records what a policy
needs to be reused safely: candidate bit-widths, granularity and action parameterisation, observation version and
size, the settings it was trained with, and the model and budget it was trained on. Loading refuses a bundle that
does not fit the environment with a one-line error saying what differs.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from agents.ddpg import HaqDDPG
from cwhawq.errors import CwhawqError
from envs.channel_bits_env import ChannelBitsEnv

BUNDLE_FORMAT = 1
METADATA_NAME = "cwhawq.json"


def env_signature(env: ChannelBitsEnv) -> dict[str, Any]:
    """The properties of an environment that a policy must match to run on it."""
    return {
        "observation_version": env.observation,
        "bit_widths": [int(b) for b in env.bit_widths],
        "granularity": env.granularity,
        "action": env.action,
        "observation_size": int(env.observation_space.shape[0]),
        "action_size": int(env.action_space.shape[0]),
    }


def save_bundle(model: HaqDDPG, path: Path, env: ChannelBitsEnv, trained_on: Mapping[str, Any]) -> None:
    """Save the agent to `path` (a .zip) with its metadata."""
    model.save(path)
    metadata = {"format": BUNDLE_FORMAT, **env_signature(env), "trained_on": dict(trained_on)}
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr(METADATA_NAME, json.dumps(metadata, indent=1))


def read_metadata(path: Path) -> dict[str, Any]:
    """The metadata of a bundle; a one-line error when the file is missing or is not a cwhawq policy."""
    path = Path(path)
    if not path.is_file():
        raise CwhawqError(f"policy file not found: {path}; pass the policy.zip written by a search")
    try:
        with zipfile.ZipFile(path) as archive:
            return json.loads(archive.read(METADATA_NAME))
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError):
        raise CwhawqError(f"{path} is not a cwhawq policy bundle; pass the policy.zip written by a search") from None


def load_bundle(path: Path, env: ChannelBitsEnv) -> tuple[HaqDDPG, dict[str, Any]]:
    """Load a bundle for `env`, refusing it if its bit-widths, granularity, action or observation differ."""
    metadata = read_metadata(path)
    expected = env_signature(env)
    for key, value in expected.items():
        if key not in metadata:
            raise CwhawqError(f"policy {path} was saved by an older cwhawq without '{key}'; train a new policy")
        if metadata[key] != value:
            raise CwhawqError(
                f"policy {path} was saved with {key}={metadata.get(key)} but this run has {key}={value}; "
                f"rerun with matching settings or train a new policy"
            )
    model = HaqDDPG.load(path, env=env, device="cpu")
    return model, metadata
