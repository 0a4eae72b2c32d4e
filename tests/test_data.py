"""Tests for cwhawq.data: shapes, stratified 60/20/20 splits, determinism, batching."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.datasets import load_digits

from cwhawq import data as data_module
from cwhawq.data import DATASETS, DataSplits, Split, batches, load_dataset
from cwhawq.errors import CwhawqError


def rows(split: Split) -> Counter:
    return Counter(row.tobytes() for row in split.x.flatten(1).numpy())


@pytest.mark.parametrize(
    ("name", "shape", "total"), [("digits", (1, 8, 8), 1797), ("mnist", (1, 28, 28), 5000)]
)
def test_image_datasets_shapes_ranges_and_sizes(name: str, shape: tuple[int, ...], total: int) -> None:
    splits = load_dataset(name)
    assert splits.name == name and splits.num_classes == 10 and splits.input_shape == shape
    parts = (splits.train, splits.val, splits.test)
    assert sum(len(p) for p in parts) == total
    assert len(splits.test) == pytest.approx(0.2 * total, abs=1)
    assert len(splits.val) == pytest.approx(0.2 * total, abs=1)
    for part in parts:
        assert part.x.dtype == torch.float32 and part.y.dtype == torch.int64
        assert part.x.shape[1:] == shape and len(part.x) == len(part.y)
        assert 0.0 <= part.x.min() and part.x.max() <= 1.0
    assert splits.train.x.max() == 1.0


def test_digits_splits_partition_the_original_data() -> None:
    splits = load_digits()
    original = Counter((row / 16.0).astype(np.float32).tobytes() for row in splits.data)
    loaded = load_dataset("digits", seed=3)
    assert rows(loaded.train) + rows(loaded.val) + rows(loaded.test) == original


def test_splits_are_disjoint_and_labels_follow_samples() -> None:
    splits = load_dataset("mnist")
    train, val, test = rows(splits.train), rows(splits.val), rows(splits.test)
    assert not (set(train) & set(val)) and not (set(train) & set(test)) and not (set(val) & set(test))
    # the same image must carry the same label wherever it lands
    lookup = {row.tobytes(): int(y) for row, y in zip(splits.train.x.flatten(1).numpy(), splits.train.y)}
    again = load_dataset("mnist", seed=1)
    for row, y in zip(again.val.x.flatten(1).numpy(), again.val.y):
        if row.tobytes() in lookup:
            assert lookup[row.tobytes()] == int(y)


def test_split_is_stratified() -> None:
    splits = load_dataset("digits")
    overall = np.bincount(torch.cat([splits.train.y, splits.val.y, splits.test.y]).numpy()) / 1797
    for part in (splits.train, splits.val, splits.test):
        share = np.bincount(part.y.numpy(), minlength=10) / len(part)
        assert np.abs(share - overall).max() < 0.01


def test_deterministic_under_seed_and_seed_matters() -> None:
    a, b, c = load_dataset("digits", seed=5), load_dataset("digits", seed=5), load_dataset("digits", seed=6)
    for part in ("train", "val", "test"):
        assert torch.equal(getattr(a, part).x, getattr(b, part).x)
        assert torch.equal(getattr(a, part).y, getattr(b, part).y)
    assert not torch.equal(a.train.y, c.train.y)


def test_splits_do_not_share_memory_with_the_cache() -> None:
    first = load_dataset("digits")
    first.train.x.zero_()
    assert load_dataset("digits").train.x.max() == 1.0


def test_mnist1d_generated_locally_and_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CWHAWQ_CACHE", str(tmp_path))
    data_module._raw.cache_clear()
    random.seed(7)
    np.random.seed(123)
    expected = (random.random(), np.random.rand())
    random.seed(7)
    np.random.seed(123)
    splits = load_dataset("mnist1d")
    assert (random.random(), np.random.rand()) == expected  # mnist1d's reseeding did not leak into the caller
    assert splits.input_shape == (1, 40) and splits.num_classes == 10
    assert (len(splits.train), len(splits.val), len(splits.test)) == (3000, 1000, 1000)
    assert splits.train.x.dtype == torch.float32
    assert abs(float(torch.cat([splits.train.x, splits.val.x, splits.test.x]).std()) - 1.0) < 1e-3
    (cached,) = tmp_path.glob("mnist1d-*.npz")
    monkeypatch.setattr(data_module, "_generate_mnist1d", lambda: pytest.fail("mnist1d generated twice"))
    x, y = data_module._mnist1d()  # now read back from the file
    assert x.shape == (5000, 1, 40) and np.array_equal(np.sort(y), np.repeat(np.arange(10), 500))
    data_module._raw.cache_clear()
    assert torch.equal(load_dataset("mnist1d").test.x, splits.test.x)
    assert cached.is_file()


def test_unknown_dataset_lists_choices() -> None:
    with pytest.raises(CwhawqError, match="unknown dataset 'cifar10'") as info:
        load_dataset("cifar10")
    assert all(name in str(info.value) for name in DATASETS)


def test_file_with_x_and_y_is_split_like_a_built_in(tmp_path: Path) -> None:
    digits = load_digits()
    np.savez(tmp_path / "mine.npz", x=(digits.data / 16.0).reshape(-1, 1, 8, 8), y=digits.target)
    mine, builtin = load_dataset(str(tmp_path / "mine.npz"), seed=2), load_dataset("digits", seed=2)
    assert mine.name == "mine" and mine.num_classes == 10
    for part in ("train", "val", "test"):
        assert torch.equal(getattr(mine, part).x, getattr(builtin, part).x)
        assert torch.equal(getattr(mine, part).y, getattr(builtin, part).y)


def test_file_with_its_own_splits_keeps_them(tmp_path: Path) -> None:
    # torch.save of a dict of tensors; integer inputs (token ids) stay integers
    generator = torch.Generator().manual_seed(0)
    arrays = {}
    for part, n in (("train", 30), ("val", 12), ("test", 9)):
        arrays[f"x_{part}"] = torch.randint(0, 50, (n, 7), generator=generator)
        arrays[f"y_{part}"] = torch.arange(n) % 3
    torch.save(arrays, tmp_path / "own.pt")
    splits = load_dataset(str(tmp_path / "own.pt"))
    assert splits.num_classes == 3 and splits.input_shape == (7,)
    for part in ("train", "val", "test"):
        split = getattr(splits, part)
        assert split.x.dtype == torch.int64 and torch.equal(split.x, arrays[f"x_{part}"])
        assert torch.equal(split.y, arrays[f"y_{part}"])


def _save(path: Path, **arrays: np.ndarray) -> str:
    np.savez(path, **arrays)
    return str(path)


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"inputs": np.zeros((20, 2)), "labels": np.zeros(20)}, "not x and y"),
        ({"x": np.full((20, 2), np.nan), "y": np.arange(20) % 2}, "NaN or infinite"),
        ({"x": np.zeros((20, 2)), "y": np.arange(19) % 2}, "one label each"),
        ({"x": np.zeros((20, 2)), "y": np.linspace(0, 1, 20)}, "class indices"),
        ({"x": np.zeros((20, 2)), "y": -(np.arange(20) % 2)}, "class indices"),
        ({"x": np.zeros((20, 2)), "y": np.append(np.zeros(19), 1).astype(int)}, "at least 5 per class"),
        ({"x": np.array([["a", "b"]] * 20), "y": np.arange(20) % 2}, "dtype"),
        ({"x": np.zeros((0, 2)), "y": np.zeros(0, int)}, "is empty"),
    ],
)
def test_bad_data_file_gives_one_line_error(tmp_path: Path, arrays: dict, message: str) -> None:
    with pytest.raises(CwhawqError, match=message) as info:
        load_dataset(_save(tmp_path / "bad.npz", **arrays))
    assert "\n" not in str(info.value)


def test_unreadable_or_missing_data_file(tmp_path: Path) -> None:
    (tmp_path / "broken.npz").write_text("not a zip")
    with pytest.raises(CwhawqError, match="cannot read dataset file"):
        load_dataset(str(tmp_path / "broken.npz"))
    with pytest.raises(CwhawqError, match="dataset file not found"):
        load_dataset(str(tmp_path / "missing.pt"))
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(CwhawqError, match="not a dict of arrays"):
        load_dataset(str(tmp_path / "list.pt"))
    own = {f"x_{part}": np.zeros((4, 2)) for part in ("train", "val", "test")}
    own |= {f"y_{part}": np.zeros(4, int) for part in ("train", "val", "test")}
    own["x_test"] = np.zeros((4, 3))
    with pytest.raises(CwhawqError, match="different shapes"):
        load_dataset(_save(tmp_path / "shapes.npz", **own))


def small_split(n: int) -> Split:
    return Split(x=torch.arange(n, dtype=torch.float32).view(n, 1), y=torch.arange(n))


def test_batches_in_order_with_short_last_batch() -> None:
    result = batches(small_split(10), 4)
    assert [len(y) for _, y in result] == [4, 4, 2]
    assert torch.equal(torch.cat([y for _, y in result]), torch.arange(10))
    assert [len(y) for _, y in batches(small_split(10), 4, max_batches=2)] == [4, 4]
    assert len(batches(small_split(10), 4, max_batches=10)) == 3


@settings(max_examples=50, deadline=None)
@given(n=st.integers(0, 40), size=st.integers(1, 12), limit=st.one_of(st.none(), st.integers(1, 5)))
def test_batches_property(n: int, size: int, limit: int | None) -> None:
    result = batches(small_split(n), size, limit)
    expected_count = -(-n // size) if limit is None else min(limit, -(-n // size))
    assert len(result) == expected_count
    assert all(len(x) == len(y) <= size for x, y in result)
    taken = torch.cat([y for _, y in result]) if result else torch.empty(0, dtype=torch.int64)
    assert torch.equal(taken, torch.arange(len(taken)))
    assert all(torch.equal(x.view(-1), y.float()) for x, y in result)


@pytest.mark.parametrize(("size", "limit"), [(0, None), (4, 0)])
def test_batches_rejects_bad_arguments(size: int, limit: int | None) -> None:
    with pytest.raises(CwhawqError):
        batches(small_split(4), size, limit)


def test_input_shape_property() -> None:
    split = Split(x=torch.zeros(3, 2, 5), y=torch.zeros(3, dtype=torch.int64))
    assert DataSplits("toy", split, split, split, 2).input_shape == (2, 5)


def toy_split(n: int = 6, features: int = 3) -> Split:
    return Split(x=torch.arange(n * features).view(n, features) / 4, y=torch.arange(n) % 2)  # exact in bfloat16


@pytest.mark.parametrize(
    "convert",
    [
        lambda split: Split(split.x.numpy(), split.y.numpy()),
        lambda split: Split(split.x.double(), split.y),
        lambda split: Split(split.x.bfloat16(), split.y),
        lambda split: Split(split.x, split.y.float()),  # labels saved as floats
        lambda split: Split(split.x.tolist(), split.y.tolist()),
    ],
    ids=["numpy", "float64", "bfloat16", "float-labels", "lists"],
)
def test_splits_built_in_python_are_converted_like_a_files(convert) -> None:
    split = toy_split()
    data = DataSplits("mine", convert(split), split, split, num_classes=2)
    assert data.train.x.dtype == torch.float32 and data.train.y.dtype == torch.int64
    assert torch.equal(data.train.x, split.x) and torch.equal(data.train.y, split.y)


@pytest.mark.parametrize(
    ("val", "message"),
    [
        (Split(torch.full((6, 3), float("nan")), torch.arange(6) % 2), "x_val of mine hold NaN"),
        (Split(torch.zeros(0, 3), torch.zeros(0, dtype=torch.int64)), "the val split of mine is empty"),
        (Split(torch.zeros(6, 4), torch.arange(6) % 2), r"different shapes \[\(3,\), \(4,\)\]"),
        (Split(torch.zeros(6, 3), torch.arange(6)), "labels up to 5 but num_classes=2; set num_classes to at least 6"),
        (Split(torch.zeros(6, 3), torch.linspace(0, 1, 6)), "y_val of mine must be class indices"),
        (Split(torch.zeros(6, 3), torch.arange(5)), "y_val of mine have shape"),
    ],
)
def test_bad_splits_built_in_python_give_one_line_errors(val: Split, message: str) -> None:
    with pytest.raises(CwhawqError, match=message) as info:
        DataSplits("mine", toy_split(), val, toy_split(), num_classes=2)
    assert "\n" not in str(info.value)
