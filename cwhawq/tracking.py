"""The running record of a search: every episode's outcome and the best assignment seen so far.

Shared by the agent and by sampling baselines, saved as JSON after every improvement and checkpoint so that an
interrupted search loses nothing and can be resumed.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cwhawq.problem import Assignment


def write_json_atomic(path: Path, data: Mapping[str, Any]) -> None:
    """Write JSON via a temporary file and rename, so a crash never leaves a half-written file."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def torch_save_atomic(path: Path, obj: object) -> None:
    """`torch.save` via a temporary file and rename, so a crash never leaves a half-written file; errors of
    `torch.save` (an unpicklable object) propagate, leaving `path` as it was."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@dataclass
class SearchRecord:
    """Per-episode history and the best assignment found: the highest validation score (`QuantProblem.score`),
    whose validation accuracy is `best_val_accuracy`."""

    history: list[dict[str, float]] = field(default_factory=list)
    best_assignment: Assignment | None = None
    best_val_score: float = -math.inf
    best_val_accuracy: float = -1.0
    best_episode: int = -1

    @property
    def episodes(self) -> int:
        """Number of episodes recorded."""
        return len(self.history)

    def add(self, info: Mapping[str, Any], reward: float) -> bool:
        """Record one finished episode from the environment's terminal `info`; return True if it is a new best."""
        episode = self.episodes
        self.history.append(
            {
                "episode": episode,
                "reward": float(reward),
                "val_accuracy": float(info["val_accuracy"]),
                "val_kl": float(info["val_kl"]),
                "val_score": float(info["val_score"]),
                "avg_bits": float(info["avg_bits"]),
                "size_bits": int(info["size_bits"]),
            }
        )
        if info["val_score"] > self.best_val_score:
            self.best_val_score = float(info["val_score"])
            self.best_val_accuracy = float(info["val_accuracy"])
            self.best_assignment = {name: np.asarray(bits).copy() for name, bits in info["assignment"].items()}
            self.best_episode = episode
            return True
        return False

    def best_so_far(self) -> list[float]:
        """Best validation score after each episode (the evaluations-to-best curve)."""
        return np.maximum.accumulate([h["val_score"] for h in self.history]).tolist() if self.history else []

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        best = None
        if self.best_assignment is not None:
            best = {name: bits.tolist() for name, bits in self.best_assignment.items()}
        return {
            "history": self.history,
            "best_assignment": best,
            "best_val_score": self.best_val_score,
            "best_val_accuracy": self.best_val_accuracy,
            "best_episode": self.best_episode,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SearchRecord:
        """Inverse of `to_dict`."""
        best = data.get("best_assignment")
        return cls(
            history=list(data["history"]),
            best_assignment={k: np.asarray(v, dtype=np.int64) for k, v in best.items()} if best else None,
            best_val_score=float(data["best_val_score"]),
            best_val_accuracy=float(data["best_val_accuracy"]),
            best_episode=int(data["best_episode"]),
        )
