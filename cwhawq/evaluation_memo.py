"""A run's validation evaluations, kept on disk as they are measured, so that rerunning interrupted work replays them.

Searches, warm starts and random search are deterministic under their seed: rerunning one that was interrupted
asks for the same assignments again. With a memo the repeated evaluations are read back instead of measured, so
what was done before Ctrl-C, a crash or a kill is not lost even where no checkpoint was written yet (a warm start's
evaluations, random search, the episodes after the last checkpoint). A repeated assignment inside one run is also
served from the memo, with the value it would have measured (evaluation is deterministic).

The file is JSON lines: a header with the fingerprint of what it evaluates (model weights and validation
data), then one line per evaluation (accuracy and KL divergence). A memo with another fingerprint is refused,
never mixed in; a line without a KL divergence (written before it was measured) is measured again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from cwhawq.errors import CwhawqError
from cwhawq.evaluation import Evaluation

#: The memo's file name in a run's output directory.
EVALUATIONS_FILE = "evaluations.jsonl"


def assignment_key(assignment: Mapping[str, np.ndarray]) -> str:
    """A digest of an assignment (every layer's name and channel bits), independent of the mapping's order."""
    digest = hashlib.sha256()
    for name in sorted(assignment):
        digest.update(name.encode())
        digest.update(np.asarray(assignment[name], dtype=np.int64).tobytes())
    return digest.hexdigest()


class EvaluationMemo:
    """Validation evaluations by assignment, appended to `path` (created if missing) as they are added.

    Args:
        path: the JSON-lines file.
        fingerprint: what the evaluations belong to (`QuantProblem.fingerprint`); an existing file with another
            fingerprint raises a `CwhawqError`.
    """

    def __init__(self, path: Path, fingerprint: str) -> None:
        self.path = Path(path)
        self.fingerprint = fingerprint
        self.hits = 0
        self._evaluations: dict[str, Evaluation] = {}
        if self.path.is_file() and self.path.stat().st_size:
            self._load()
        else:
            self._append({"fingerprint": fingerprint})

    def _load(self) -> None:
        lines = self.path.read_text().splitlines()
        try:
            header = json.loads(lines[0])
        except json.JSONDecodeError:
            raise CwhawqError(
                f"{self.path} is not a cwhawq evaluation memo (unreadable first line); delete it or use another --out"
            ) from None
        if not isinstance(header, dict) or header.get("fingerprint") != self.fingerprint:
            raise CwhawqError(
                f"{self.path} holds evaluations of another model or data; "
                "use the same problem options, or another --out"
            )
        for line in lines[1:]:
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:  # a line cut short by a kill; it is measured again
                continue
            if "val_kl" in entry:
                self._evaluations[entry["key"]] = Evaluation(float(entry["val_accuracy"]), float(entry["val_kl"]))

    def _append(self, entry: Mapping[str, object]) -> None:
        with self.path.open("a") as file:
            file.write(json.dumps(entry) + "\n")

    def __len__(self) -> int:
        return len(self._evaluations)

    def get(self, assignment: Mapping[str, np.ndarray]) -> Evaluation | None:
        """The recorded validation evaluation of `assignment`, or None if it was never evaluated."""
        known = self._evaluations.get(assignment_key(assignment))
        if known is not None:
            self.hits += 1
        return known

    def add(self, assignment: Mapping[str, np.ndarray], evaluation: Evaluation) -> None:
        """Record a measured validation evaluation (on disk at once)."""
        key = assignment_key(assignment)
        if key not in self._evaluations:
            self._evaluations[key] = evaluation
            self._append({"key": key, "val_accuracy": evaluation.accuracy, "val_kl": evaluation.kl})
