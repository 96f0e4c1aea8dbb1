"""The data layer: built-ins, IDX files, user arrays/tables/image folders, seeded splits, and every bad-data error."""
from __future__ import annotations

import gzip
import os
import shutil
import signal
import socket
import struct
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import vaezoo
from vaezoo.data import (
    FASHION_MNIST_CLASSES,
    DataSplits,
    binarize,
    describe_datasets,
    fixed_binarize,
    images,
    limits,
    list_datasets,
    load_data,
    read_idx,
    sources,
    split_indices,
    write_idx,
)
from vaezoo.errors import ConfigError, DataError

FASHION_DIR = sources.FASHION_MNIST_SYSTEM_DIR


@contextmanager
def raises_one_line(*fragments: str, error: type[Exception] = DataError) -> Iterator[None]:
    """Expect ``error`` with a one-line message that contains every fragment."""
    with pytest.raises(error) as info:
        yield
    message = str(info.value)
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


def rows_of(splits: DataSplits) -> list[torch.Tensor]:
    return [part.x.reshape(len(part), -1) for part in (splits.train, splits.val, splits.test)]


def assert_unit_float(splits: DataSplits) -> None:
    for part in (splits.train, splits.val, splits.test):
        assert part.x.dtype == torch.float32
        assert part.x.shape[1:] == splits.input_shape
        assert len(part) == 0 or (float(part.x.min()) >= 0.0 and float(part.x.max()) <= 1.0)
        assert part.y is None or (part.y.dtype == torch.int64 and part.y.shape == (len(part),))


# ---------------------------------------------------------------- built-ins


def test_list_datasets_names_the_builtins() -> None:
    assert list_datasets() == ["digits", "fashion-mnist", "fashion-mnist-binarized", "mnist", "shapes2d", "shapes2d-small"]
    assert list(describe_datasets()) == list_datasets()
    assert "apt-get install dataset-fashion-mnist" in describe_datasets()["fashion-mnist"]


def test_digits_loads_with_shapes_range_and_classes() -> None:
    splits = load_data("digits", seed=0)
    assert splits.name == "digits" and splits.input_shape == (1, 8, 8)
    assert splits.num_classes == 10 and splits.class_names == [str(d) for d in range(10)]
    assert [len(p) for p in (splits.train, splits.val, splits.test)] == [1437, 180, 180]
    assert_unit_float(splits)
    assert float(splits.train.x.max()) == 1.0  # /16 reaches 1
    assert set(splits.train.y.tolist()) == set(range(10))
    assert "load_digits" in splits.source


def test_digits_split_is_deterministic_disjoint_covering_and_seeded() -> None:
    from sklearn.datasets import load_digits

    first, again, other = load_data("digits", seed=0), load_data("digits", seed=0), load_data("digits", seed=1)
    for a, b in zip(rows_of(first), rows_of(again)):
        assert torch.equal(a, b)
    assert not torch.equal(first.test.x, other.test.x)
    # disjoint and covering: match every row back to its source row by its pixels
    source = torch.tensor(load_digits().images.reshape(1797, -1) / 16.0, dtype=torch.float32)
    key = {tuple(row.tolist()): i for i, row in enumerate(source)}
    assert len(key) == 1797  # every image is distinct, so pixels identify a row
    counts = torch.zeros(1797, dtype=torch.int64)
    for part in rows_of(first):
        for row in part:
            counts[key[tuple(row.tolist())]] += 1
    assert counts.tolist() == [1] * 1797  # each row in exactly one split


def test_split_indices_are_disjoint_and_cover_everything() -> None:
    train, val, test = split_indices(101, 0.2, 0.1, seed=5, source="demo")
    joined = torch.cat([train, val, test])
    assert sorted(joined.tolist()) == list(range(101))
    assert (len(train), len(val), len(test)) == (71, 20, 10)
    again = split_indices(101, 0.2, 0.1, seed=5, source="demo")
    assert all(torch.equal(a, b) for a, b in zip((train, val, test), again))
    assert not torch.equal(test, split_indices(101, 0.2, 0.1, seed=6, source="demo")[2])


@pytest.mark.parametrize("val, test", [(-0.1, 0.1), (1.0, 0.0), (0.6, 0.5)])
def test_bad_fractions_are_config_errors(val: float, test: float) -> None:
    with raises_one_line("fraction", "must be" if test < 0.5 else "leave nothing to train on", error=ConfigError):
        load_data("digits", val_fraction=val, test_fraction=test)


def test_zero_val_fraction_gives_an_empty_val_split() -> None:
    splits = load_data("digits", val_fraction=0.0)
    assert len(splits.val) == 0 and len(splits.train) == 1797 - 180


needs_fashion = pytest.mark.skipif(
    not (FASHION_DIR / "train-images-idx3-ubyte.gz").is_file(),
    reason=f"Fashion-MNIST not installed at {FASHION_DIR} (apt-get install dataset-fashion-mnist)",
)


def check_fashion(splits: DataSplits, val_size: int) -> None:
    assert [len(p) for p in (splits.train, splits.val, splits.test)] == [60000 - val_size, val_size, 10000]
    assert splits.input_shape == (1, 28, 28) and splits.num_classes == 10
    assert splits.class_names == FASHION_MNIST_CLASSES
    assert_unit_float(splits)
    assert torch.bincount(splits.test.y).tolist() == [1000] * 10  # the official test set is balanced


@needs_fashion
def test_fashion_mnist_loads_from_the_system_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(sources.DATA_ENV, raising=False)
    splits = load_data("fashion-mnist", seed=0)
    check_fashion(splits, 6000)
    assert splits.source == str(FASHION_DIR)


@needs_fashion
def test_fashion_mnist_loads_from_a_data_dir_with_copies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    copy = tmp_path / "fashion-mnist"
    shutil.copytree(FASHION_DIR, copy)
    monkeypatch.setattr(sources, "FASHION_MNIST_SYSTEM_DIR", tmp_path / "absent")
    splits = load_data("fashion-mnist", data_dir=str(tmp_path), val_fraction=0.05, seed=3)  # finds <dir>/fashion-mnist
    check_fashion(splits, 3000)
    assert splits.source == str(copy)
    direct = load_data("fashion-mnist", data_dir=copy, val_fraction=0.05, seed=3)  # the folder itself
    assert torch.equal(direct.val.x, splits.val.x)


def test_missing_fashion_mnist_says_how_to_get_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "dir").mkdir()
    (tmp_path / "env").mkdir()
    monkeypatch.setenv(sources.DATA_ENV, str(tmp_path / "env"))
    monkeypatch.setattr(sources, "FASHION_MNIST_SYSTEM_DIR", tmp_path / "system")
    expected = ["apt-get install dataset-fashion-mnist", "train-images-idx3-ubyte.gz", "--data-dir"]
    with raises_one_line(*expected, str(tmp_path / "dir"), str(tmp_path / "env" / "fashion-mnist")):
        load_data("fashion-mnist", data_dir=str(tmp_path / "dir"))


def test_missing_mnist_says_where_to_put_the_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(sources.DATA_ENV, raising=False)
    with raises_one_line("mnist not found", "t10k-labels-idx1-ubyte.gz", "VAEZOO_DATA"):
        load_data("mnist", data_dir=tmp_path)


def write_fake_mnist(folder: Path, n_train: int = 50, n_test: int = 20, gz: bool = True) -> None:
    """Four small IDX files laid out like MNIST: 28x28 uint8 images, labels 0..9."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    suffix = ".gz" if gz else ""
    for part, n in (("train", n_train), ("t10k", n_test)):
        write_idx(folder / f"{part}-images-idx3-ubyte{suffix}", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        write_idx(folder / f"{part}-labels-idx1-ubyte{suffix}", (np.arange(n) % 10).astype(np.uint8))


def test_mnist_loads_from_vaezoo_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_fake_mnist(tmp_path / "mnist", gz=False)
    monkeypatch.setenv(sources.DATA_ENV, str(tmp_path))
    splits = load_data("mnist", val_fraction=0.2)
    assert [len(p) for p in (splits.train, splits.val, splits.test)] == [40, 10, 20]
    assert splits.class_names == [str(d) for d in range(10)]
    assert torch.equal(splits.test.y, torch.arange(20) % 10)
    assert_unit_float(splits)


def test_binarized_fashion_mnist_draws_each_pixel_once_as_bernoulli_of_its_intensity(tmp_path: Path) -> None:
    write_fake_mnist(tmp_path / "fashion-mnist", n_train=400, n_test=100)
    binary = load_data("fashion-mnist-binarized", data_dir=tmp_path, val_fraction=0.25, seed=0)
    grey = load_data("fashion-mnist", data_dir=tmp_path, val_fraction=0.25, seed=0)
    assert binary.name == "fashion-mnist-binarized" and binary.input_shape == (1, 28, 28)
    assert set(binary.train.x.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(binary.train.y, grey.train.y)  # the same split as the grey images
    # Every pixel is a Bernoulli(intensity) draw: pooled over all test pixels of each intensity band the
    # frequency of ones matches the mean intensity (78,400 pixels; 4 sigma of a Bernoulli mean is < 0.01).
    for low, high in [(0.0, 0.25), (0.25, 0.5), (0.5, 0.75), (0.75, 1.01)]:
        band = (grey.test.x >= low) & (grey.test.x < high)
        assert abs(binary.test.x[band].mean() - grey.test.x[band].mean()) < 0.02
    # Static: the same 0/1 images on every call, whatever the split seed (the test split is the official one).
    again = load_data("fashion-mnist-binarized", data_dir=tmp_path, val_fraction=0.1, seed=5)
    assert torch.equal(again.test.x, binary.test.x)


def test_idx_folder_with_only_some_files_names_the_missing_ones(tmp_path: Path) -> None:
    write_fake_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with raises_one_line("only some", str(tmp_path), "t10k-labels-idx1-ubyte"):
        load_data("mnist", data_dir=tmp_path)


def test_idx_image_and_label_counts_must_match(tmp_path: Path) -> None:
    write_fake_mnist(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(49, dtype=np.uint8))
    with raises_one_line("50 images", "train-images-idx3-ubyte.gz", "49 labels"):
        load_data("mnist", data_dir=tmp_path)


# ---------------------------------------------------------------- IDX files


@pytest.mark.parametrize("name", ["small-idx3-ubyte", "small-idx3-ubyte.gz"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.float32, np.float64])
def test_idx_round_trip(tmp_path: Path, name: str, dtype: type) -> None:
    array = (np.arange(2 * 3 * 5) * 3).reshape(2, 3, 5).astype(dtype)
    write_idx(tmp_path / name, array)
    raw = (tmp_path / name).read_bytes()
    assert raw.startswith(b"\x1f\x8b") == name.endswith(".gz")
    back = read_idx(tmp_path / name)
    assert back.dtype == np.dtype(dtype) and np.array_equal(back, array)


def test_idx_header_is_big_endian_as_in_the_spec(tmp_path: Path) -> None:
    write_idx(tmp_path / "labels-idx1-ubyte", np.array([7, 2, 1], dtype=np.uint8))
    assert (tmp_path / "labels-idx1-ubyte").read_bytes() == bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 2, 1])


@pytest.mark.parametrize("gz", [False, True])
def test_truncated_idx_names_the_file_and_the_byte_counts(tmp_path: Path, gz: bool) -> None:
    path = tmp_path / ("cut-idx3-ubyte" + (".gz" if gz else ""))
    full = bytes([0, 0, 8, 3, 0, 0, 0, 4, 0, 0, 0, 5, 0, 0, 0, 5]) + bytes(4 * 25)
    cut = full[:-7]
    path.write_bytes(gzip.compress(cut) if gz else cut)
    with raises_one_line("truncated", str(path), "needs 116 bytes", "holds 109"):
        read_idx(path)


def test_truncated_gzip_stream_is_a_data_error(tmp_path: Path) -> None:
    path = tmp_path / "cut-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(bytes([0, 0, 8, 1, 0, 0, 0, 100]) + bytes(100))[:-12])
    with raises_one_line("truncated or corrupt gzip", str(path)):
        read_idx(path)


@pytest.mark.parametrize(
    "payload, fragment",
    [
        (b"\x12\x34\x08\x01\x00\x00\x00\x01\x00", "not an IDX file"),
        (bytes([0, 0, 0x07, 1, 0, 0, 0, 1, 0]), "unknown dtype code 0x07"),
        (bytes([0, 0, 8, 0]), "0 dims"),
        (bytes([0, 0, 8, 3, 0, 0, 0, 1]), "header needs 16 bytes"),
        (bytes([0, 0, 8, 1, 0, 0, 0, 1, 5, 6]), "trailing bytes"),
    ],
)
def test_malformed_idx_headers(tmp_path: Path, payload: bytes, fragment: str) -> None:
    path = tmp_path / "bad-idx-ubyte"
    path.write_bytes(payload)
    with raises_one_line(fragment, str(path)):
        read_idx(path)


# ---------------------------------------------------------------- npy / npz


def test_npy_uint8_images_are_scaled_by_255(tmp_path: Path) -> None:
    path = tmp_path / "faces.npy"
    np.save(path, np.full((20, 6, 7), 255, dtype=np.uint8))
    splits = load_data(str(path))
    assert splits.name == "faces" and splits.input_shape == (1, 6, 7)
    assert splits.num_classes == 0 and splits.class_names is None and splits.train.y is None
    assert float(splits.train.x.min()) == 1.0
    assert splits.source == str(path)


SHAPES = [
    ((30, 5), (5,)),
    ((30, 8, 9), (1, 8, 9)),
    ((30, 3, 8, 9), (3, 8, 9)),
    ((30, 8, 9, 3), (3, 8, 9)),
    ((30, 8, 9, 1), (1, 8, 9)),
    ((30, 4, 3, 3), (4, 3, 3)),  # H, W <= 4: read as (N, C, H, W), not channels-last
]


@pytest.mark.parametrize("shape, expected", SHAPES)
def test_array_shapes_become_vectors_or_channels_first(
    tmp_path: Path, shape: tuple[int, ...], expected: tuple[int, ...]
) -> None:
    x = np.random.default_rng(0).random(shape).astype(np.float32)
    np.savez(tmp_path / "a.npz", x=x)
    splits = load_data(str(tmp_path / "a.npz"), val_fraction=0.0, test_fraction=0.0)
    assert splits.input_shape == expected
    moved = np.moveaxis(x, -1, 1) if shape[-1] in (1, 3) and len(shape) == 4 and shape[1] > 4 else x
    assert torch.equal(splits.train.x, torch.from_numpy(moved.reshape((30, *expected))))  # values in [0, 1] kept as is


def test_npz_with_labels(tmp_path: Path) -> None:
    y = np.arange(40) % 4
    np.savez(tmp_path / "d.npz", x=np.zeros((40, 3), dtype=np.float32), y=y)
    splits = load_data(str(tmp_path / "d.npz"), seed=2)
    assert splits.num_classes == 4 and splits.class_names is None
    assert sorted(torch.cat([splits.train.y, splits.val.y, splits.test.y]).tolist()) == sorted(y.tolist())


def test_float_data_outside_unit_range_is_minmax_scaled_with_train_statistics(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    x = np.stack([np.arange(100.0) - 50.0, np.full(100, 7.0)], axis=1)  # (100, 2); column 1 is constant
    np.save(tmp_path / "v.npy", x)
    with caplog.at_level("INFO", logger="vaezoo.data"):
        splits = load_data(str(tmp_path / "v.npy"), seed=0)
    assert "min-max" in caplog.text and "train split" in caplog.text
    train, val, test = split_indices(100, 0.1, 0.1, seed=0, source="same split")
    low, high = x[train.numpy(), 0].min(), x[train.numpy(), 0].max()
    for part, index in zip((splits.train, splits.val, splits.test), (train, val, test)):
        expected = np.clip((x[index.numpy(), 0] - low) / (high - low), 0.0, 1.0)
        assert np.allclose(part.x[:, 0].numpy(), expected, atol=1e-6)
        assert float(part.x[:, 1].abs().max()) == 0.0  # a feature constant on train maps to 0
    assert float(splits.train.x[:, 0].min()) == 0.0 and float(splits.train.x[:, 0].max()) == 1.0
    assert_unit_float(splits)


def test_relative_path_is_also_looked_for_in_data_dir(tmp_path: Path) -> None:
    np.save(tmp_path / "rel.npy", np.zeros((10, 4), dtype=np.uint8))
    assert load_data("rel.npy", data_dir=tmp_path).input_shape == (4,)


@pytest.mark.parametrize(
    "arrays, fragments",
    [
        ({"x": np.zeros(())}, ["0-d", "(N, D)"]),
        ({"x": np.zeros(5)}, ["1-d", "(N, D)"]),
        ({"x": np.zeros((2, 3, 4, 5, 6))}, ["5-d", "(N, C, H, W)"]),
        ({"x": np.zeros((0, 4))}, ["zero rows"]),
        ({"x": np.array([["a", "b"]])}, ["<U1", "real numbers"]),
        ({"x": np.zeros((4, 3)), "y": np.zeros(5, dtype=int)}, ["5 labels for 4 samples"]),
        ({"x": np.zeros((4, 3)), "y": np.zeros((4, 2), dtype=int)}, ["labels", "shape (4, 2)"]),
        ({"x": np.zeros((4, 3)), "y": np.array([0, 1, -1, 2])}, ["non-negative integers", "sample 2 has -1"]),
        ({"x": np.zeros((4, 3)), "y": np.array([0, 1.5, 1, 2])}, ["non-negative integers", "sample 1 has 1.5"]),
        ({"x": np.zeros((4, 3)), "y": np.array(["a", "b", "c", "d"])}, ["labels", "integers 0..K-1"]),
        ({"images": np.zeros((4, 3))}, ["no 'x'", "['images']", "numpy.savez(path, x="]),
    ],
)
def test_bad_npz_contents(tmp_path: Path, arrays: dict[str, np.ndarray], fragments: list[str]) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with raises_one_line(str(path), *fragments):
        load_data(str(path))


def test_nan_and_inf_are_counted_and_located(tmp_path: Path) -> None:
    x = np.zeros((6, 2, 5, 5), dtype=np.float32)
    x[3, 1, 2, 4] = np.nan
    x[4, 0, 0, 0] = np.nan
    x[5, 0, 1, 1] = np.inf
    np.save(tmp_path / "n.npy", x)
    with raises_one_line("2 NaN and 1 Inf", str(tmp_path / "n.npy"), "sample 3", "(3, 1, 2, 4)"):
        load_data(str(tmp_path / "n.npy"))


def test_object_arrays_are_refused_without_unpickling(tmp_path: Path) -> None:
    np.save(tmp_path / "o.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with raises_one_line("cannot read", str(tmp_path / "o.npy"), "numpy.save"):
        load_data(str(tmp_path / "o.npy"))


def test_corrupt_npz_is_a_data_error(tmp_path: Path) -> None:
    (tmp_path / "c.npz").write_bytes(b"PK\x03\x04 not really a zip")
    with raises_one_line("cannot read", str(tmp_path / "c.npz")):
        load_data(str(tmp_path / "c.npz"))


def test_too_few_rows_for_the_splits(tmp_path: Path) -> None:
    np.save(tmp_path / "two.npy", np.zeros((2, 3), dtype=np.uint8))
    with raises_one_line("only 2 rows", "lower the fractions"):
        load_data(str(tmp_path / "two.npy"))


# ---------------------------------------------------------------- CSV


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_csv_with_a_label_column(tmp_path: Path) -> None:
    lines = ["a,b,Label"] + [f"{i},{10 - i},{i % 3}" for i in range(30)]
    path = write_csv(tmp_path / "t.csv", "\n".join(lines) + "\n")
    splits = load_data(str(path), seed=1)
    assert splits.input_shape == (2,) and splits.num_classes == 3 and splits.class_names is None
    assert_unit_float(splits)
    assert float(splits.train.x.min()) == 0.0 and float(splits.train.x.max()) == 1.0
    whole = load_data(str(path), val_fraction=0.0, test_fraction=0.0)
    a = torch.round(whole.train.x[:, 0] * 29).long()  # a = i scaled by its train range [0, 29]
    assert torch.equal(whole.train.y, a % 3)  # every row keeps its own label
    assert torch.allclose(whole.train.x[:, 1], 1 - whole.train.x[:, 0])


def test_csv_label_column_by_argument_and_tsv(tmp_path: Path) -> None:
    lines = ["f1\tf2\tkind"] + [f"{i}\t{i * i}\t{i % 2}" for i in range(20)]
    path = write_csv(tmp_path / "t.tsv", "\n".join(lines))
    splits = load_data(str(path), label_column="kind", val_fraction=0.0, test_fraction=0.0)
    assert splits.input_shape == (2,) and splits.num_classes == 2
    assert splits.train.y.tolist() == [i % 2 for i in range(20)]
    assert torch.allclose(splits.train.x[:, 0], torch.arange(20) / 19.0)


def test_text_labels_become_sorted_class_ids_with_their_names(tmp_path: Path) -> None:
    from sklearn.preprocessing import LabelEncoder  # the mapping users know; ids must agree with it

    species = ["setosa", "versicolor", "virginica", "setosa", "virginica", "versicolor"] * 5
    lines = ["length,width,species"] + [f"{i},{i % 7},{name}" for i, name in enumerate(species)]
    path = write_csv(tmp_path / "iris.csv", "\n".join(lines))
    splits = load_data(str(path), label_column="species", val_fraction=0.0, test_fraction=0.0)
    encoder = LabelEncoder().fit(species)
    assert splits.class_names == list(encoder.classes_) and splits.num_classes == 3
    assert splits.train.y.tolist() == encoder.transform(species).tolist()
    with raises_one_line("column 'species'", "not numeric", "--label-column species"):  # not a default label name
        load_data(str(path))


def test_csv_without_label_column_is_unlabelled(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "u.csv", "p,q\n" + "\n".join(f"{i},{i}" for i in range(10)))
    splits = load_data(str(path))
    assert splits.num_classes == 0 and splits.train.y is None


@pytest.mark.parametrize(
    "text, kwargs, fragments",
    [
        ("a,b,color\n1,2,red\n3,4,blue\n", {}, ["column 'color'", "not numeric", "line 2", "'red'"]),
        ("a,b\n", {}, ["zero data rows"]),
        ("", {}, ["is empty"]),
        ("1,2\n3,4\n", {}, ["no header row"]),
        ("a,b\n1,2\n3\n", {}, ["line 3 has 1 cells", "header has 2"]),
        ("a,a\n1,2\n", {}, ["duplicate or empty column names", "['a']"]),
        ("a,b\n1,2\n3,\n4,nan\n", {}, ["2 NaN and 0 Inf", "line 3, column 'b'"]),
        ("a,b\n1,2\n\n3,inf\n", {}, ["0 NaN and 1 Inf", "line 4, column 'b'"]),  # blank lines still count
        ("a,species\n1,cat\n2,\n", {"label_column": "species"}, ["label column 'species'", "empty on line 3"]),
        ("a,label\n1,0\n2,-3\n", {}, ["column 'label'", "non-negative integers", "sample 1 has -3"]),
        ("a,y\n1,0\n2,0.5\n", {}, ["column 'y'", "non-negative integers"]),
        ("label\n1\n2\n", {}, ["no feature columns"]),
        ("a,b\n1,2\n", {"label_column": "lable"}, ["label_column='lable'", "its columns are ['a', 'b']"]),
    ],
)
def test_bad_csv(tmp_path: Path, text: str, kwargs: dict[str, str], fragments: list[str]) -> None:
    path = write_csv(tmp_path / "bad.csv", text)
    with raises_one_line(str(path), *fragments):
        load_data(str(path), **kwargs)


def test_label_column_for_non_tables_is_a_config_error(tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", np.zeros((10, 2), dtype=np.uint8))
    with raises_one_line("only to CSV", "x.npy", error=ConfigError):
        load_data(str(tmp_path / "x.npy"), label_column="y")


# ---------------------------------------------------------------- image folders


def save_png(path: Path, size: tuple[int, int] = (6, 5), mode: str = "L", value: int = 128) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    color = value if mode == "L" else (value, 0, 255 - value)
    Image.new(mode, size, color).save(path)


def test_image_folder_with_class_subfolders(tmp_path: Path) -> None:
    for name, value in (("zebra", 200), ("ant", 10), ("cat", 100)):
        for i in range(4):
            save_png(tmp_path / "pics" / name / f"{i}.png", value=value)
    (tmp_path / "pics" / "cat" / "notes.txt").write_text("not an image")
    splits = load_data(str(tmp_path / "pics"), val_fraction=0.0, test_fraction=0.0)
    assert splits.name == "pics" and splits.input_shape == (1, 5, 6)
    assert splits.class_names == ["ant", "cat", "zebra"] and splits.num_classes == 3
    assert_unit_float(splits)
    by_label = {int(y): round(float(x.mean()) * 255) for x, y in zip(splits.train.x, splits.train.y)}
    assert by_label == {0: 10, 1: 100, 2: 200}  # labels follow the sorted folder names


def test_flat_rgb_folder_is_unlabelled_with_three_channels(tmp_path: Path) -> None:
    for i in range(10):
        save_png(tmp_path / f"{i}.png", mode="RGB", value=255)
    Image.new("RGB", (6, 5), (255, 0, 0)).save(tmp_path / "red.jpg")
    splits = load_data(str(tmp_path))
    assert splits.input_shape == (3, 5, 6) and splits.num_classes == 0 and splits.train.y is None
    assert_unit_float(splits)


def test_folder_mixing_gray_and_colour_reads_colour(tmp_path: Path) -> None:
    for i in range(5):
        save_png(tmp_path / f"g{i}.png", mode="L")
        save_png(tmp_path / f"c{i}.png", mode="RGB")
    assert load_data(str(tmp_path)).input_shape == (3, 5, 6)


def test_mixed_image_sizes_name_two_files(tmp_path: Path) -> None:
    save_png(tmp_path / "a" / "1.png", size=(6, 5))
    save_png(tmp_path / "b" / "2.png", size=(8, 8))
    with raises_one_line("different sizes", "1.png is 6x5", "2.png is 8x8", "resize"):
        load_data(str(tmp_path))


def test_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "empty" / "classA").mkdir(parents=True)
    with raises_one_line("holds no images", str(tmp_path / "empty")):
        load_data(str(tmp_path / "empty"))


def test_unreadable_image_is_named(tmp_path: Path) -> None:
    save_png(tmp_path / "ok.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with raises_one_line("cannot read image", str(tmp_path / "broken.png")):
        load_data(str(tmp_path))


def test_loose_images_next_to_class_folders(tmp_path: Path) -> None:
    save_png(tmp_path / "loose.png")
    save_png(tmp_path / "cls" / "in.png")
    with raises_one_line("loose images", "loose.png"):
        load_data(str(tmp_path))


# ---------------------------------------------------------------- names and paths


def test_unknown_name_suggests_and_lists_builtins() -> None:
    expected = ["unknown dataset 'fashion_mnist'", "did you mean 'fashion-mnist'", "digits, fashion-mnist, fashion-mnist-binarized, mnist"]
    with raises_one_line(*expected, ".npz", ".csv", "PNG/JPEG"):
        load_data("fashion_mnist")


def test_unknown_name_in_other_case_still_gets_a_suggestion() -> None:
    with raises_one_line("unknown dataset 'Fashion-MNIST'", "did you mean 'fashion-mnist'"):
        load_data("Fashion-MNIST")


def test_missing_file_is_named(tmp_path: Path) -> None:
    with raises_one_line("does not exist", str(tmp_path / "nope.npz")):
        load_data(str(tmp_path / "nope.npz"))


def test_unsupported_file_type(tmp_path: Path) -> None:
    (tmp_path / "x.txt").write_text("1 2 3")
    with raises_one_line("unsupported file type '.txt'", ".npy/.npz", ".csv"):
        load_data(str(tmp_path / "x.txt"))


# ---------------------------------------------------------------- binarization and devices


def test_binarize_is_bernoulli_of_the_values() -> None:
    x = torch.full((20000,), 0.3)
    bits = binarize(x, generator=torch.Generator().manual_seed(0))
    assert set(bits.unique().tolist()) <= {0.0, 1.0}
    assert abs(float(bits.mean()) - 0.3) < 0.02
    assert binarize(torch.tensor([0.0, 1.0])).tolist() == [0.0, 1.0]


def test_fixed_binarize_is_seeded() -> None:
    x = torch.rand(100, 1, 8, 8)
    assert torch.equal(fixed_binarize(x, seed=4), fixed_binarize(x, seed=4))
    assert not torch.equal(fixed_binarize(x, seed=4), fixed_binarize(x, seed=5))
    assert fixed_binarize(x).dtype == x.dtype and fixed_binarize(x).shape == x.shape


def test_splits_move_to_a_device_and_slice() -> None:
    splits = load_data("digits").to("cpu")
    batch = splits.train[torch.tensor([0, 5, 9])]
    assert batch.x.shape == (3, 1, 8, 8) and batch.y.shape == (3,)
    assert splits.summary().startswith("digits: train 1437, val 180, test 180")


# ---------------------------------------------------------------- data bombs: refused by type and size before reading


@contextmanager
def fails_after(seconds: int) -> Iterator[None]:
    """Fail the test instead of hanging it (a FIFO that is opened blocks forever)."""

    def hung(signum: int, frame: object) -> None:
        raise AssertionError(f"still reading after {seconds} s: the data was opened instead of refused")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def png_claiming(path: Path, width: int, height: int) -> Path:
    """A valid ~70-byte PNG whose header claims width x height 8-bit gray pixels (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


def npy_claiming(path: Path, shape: tuple[int, ...], payload: bytes = bytes(48)) -> Path:
    """A .npy file whose header claims ``shape`` float32 but holds ``payload``."""
    with path.open("wb") as handle:
        np.lib.format.write_array_header_1_0(handle, {"descr": "<f4", "fortran_order": False, "shape": shape})
        handle.write(payload)
    return path


def idx_claiming(path: Path, shape: tuple[int, ...], payload: bytes = bytes(100)) -> Path:
    raw = bytes([0, 0, 8, len(shape)]) + struct.pack(f">{len(shape)}I", *shape) + payload
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(raw) if path.suffix == ".gz" else raw)
    return path


@pytest.mark.parametrize("name, make, fragment", [
    ("pipe.npy", os.mkfifo, "is a named pipe (FIFO)"),
    ("pipe.csv", os.mkfifo, "is a named pipe (FIFO)"),
    ("zeros.npy", lambda path: path.symlink_to("/dev/zero"), "is a character device"),
    ("null.csv", lambda path: path.symlink_to("/dev/null"), "is a character device"),
    ("sock.npz", lambda path: socket.socket(socket.AF_UNIX).bind(str(path)), "is a socket"),
])
def test_special_files_are_refused_without_being_opened(tmp_path: Path, name: str, make, fragment: str) -> None:
    make(tmp_path / name)
    with fails_after(10), raises_one_line(str(tmp_path / name), fragment, "pass a regular file"):
        load_data(str(tmp_path / name))


def test_a_device_given_by_path_is_refused() -> None:
    with fails_after(10), raises_one_line("data file /dev/zero is a character device"):
        load_data("/dev/zero")


def test_special_files_inside_an_image_folder_are_named(tmp_path: Path) -> None:
    save_png(tmp_path / "pics" / "ok.png")
    os.mkfifo(tmp_path / "pics" / "pipe.png")
    with fails_after(10), raises_one_line(f"image {tmp_path / 'pics' / 'pipe.png'} is a named pipe"):
        load_data(str(tmp_path / "pics"))
    (tmp_path / "pics" / "pipe.png").unlink()
    (tmp_path / "pics" / "zero.png").symlink_to("/dev/zero")
    with fails_after(10), raises_one_line("zero.png is a character device"):
        load_data(str(tmp_path / "pics"))


def test_special_idx_files_are_refused(tmp_path: Path) -> None:
    write_fake_mnist(tmp_path)
    (tmp_path / "train-images-idx3-ubyte.gz").unlink()
    os.mkfifo(tmp_path / "train-images-idx3-ubyte.gz")
    with fails_after(10), raises_one_line("IDX file", "train-images-idx3-ubyte.gz is a named pipe"):
        load_data("mnist", data_dir=tmp_path)


def test_symlink_loops_and_dangling_links_are_named(tmp_path: Path) -> None:
    (tmp_path / "loop.npy").symlink_to(tmp_path / "loop.npy")
    with raises_one_line(str(tmp_path / "loop.npy"), "symbolic link loop"):
        load_data(str(tmp_path / "loop.npy"))
    (tmp_path / "gone.npy").symlink_to(tmp_path / "moved.npy")
    with raises_one_line(str(tmp_path / "gone.npy"), "does not exist", "a link to"):
        load_data(str(tmp_path / "gone.npy"))
    save_png(tmp_path / "pics" / "ok.png")
    (tmp_path / "pics" / "loop.png").symlink_to(tmp_path / "pics" / "loop.png")
    with raises_one_line("image", "loop.png is a symbolic link loop"):
        load_data(str(tmp_path / "pics"))


@pytest.mark.parametrize("name", ["empty.npy", "empty.npz", "empty.csv", "pics/empty.png", "mnist"])
def test_empty_files_say_they_are_empty(tmp_path: Path, name: str) -> None:
    if name == "mnist":
        write_fake_mnist(tmp_path)
        (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(b"")
        target, path = "mnist", tmp_path / "t10k-labels-idx1-ubyte.gz"
    else:
        if name.startswith("pics/"):
            save_png(tmp_path / "pics" / "ok.png")
        (tmp_path / name).write_bytes(b"")
        target, path = str((tmp_path / name).parent if name.startswith("pics/") else tmp_path / name), tmp_path / name
    with raises_one_line(str(path), "is empty (0 bytes)"):
        load_data(target, data_dir=tmp_path)


@pytest.mark.parametrize("width, height, fragment", [
    (15000, 15000, "225000000 pixels"),  # past Pillow's own error limit
    (10000, 10000, "100000000 pixels"),  # past Pillow's warning, which is only a warning there
    (9000, 9000, "9000x9000 pixels"),  # under Pillow's limits, over ours
])
def test_image_bombs_are_refused_from_the_header(tmp_path: Path, width: int, height: int, fragment: str) -> None:
    save_png(tmp_path / "pics" / "a.png")
    bomb = png_claiming(tmp_path / "pics" / "b.png", width, height)
    assert bomb.stat().st_size < 200
    with raises_one_line(f"image {bomb} has {fragment}", "too large to decode safely", "resize it"):
        load_data(str(tmp_path / "pics"))


def test_mixed_sizes_are_refused_before_any_image_is_decoded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    save_png(tmp_path / "a.png", size=(6, 5))
    save_png(tmp_path / "b.png", size=(8, 8))
    monkeypatch.setattr(images, "_decode", lambda image: pytest.fail("decoded before the headers were checked"))
    with raises_one_line("different sizes"):
        load_data(str(tmp_path))


def test_an_image_folder_too_big_for_memory_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for i in range(4):
        save_png(tmp_path / f"{i}.png", size=(64, 64), mode="RGB")
    monkeypatch.setattr(limits, "memory_bytes", lambda: 4 * 3 * 64 * 64)
    # Under the default budget (a share of memory) such a folder is streamed (tests/test_streaming.py); a budget
    # raised above the machine's memory asks for it in memory, which is refused.
    monkeypatch.setenv("VAEZOO_MEMORY_BUDGET_MB", "1000")
    with raises_one_line(str(tmp_path), "4 images of 64x64 pixels", "more than this machine's"):
        load_data(str(tmp_path))


def test_npy_header_claiming_more_rows_than_the_file_holds(tmp_path: Path) -> None:
    path = npy_claiming(tmp_path / "huge.npy", (10**12, 3))
    with raises_one_line(f"cannot read {path}", "header says shape (1000000000000, 3)", "12000000000128 bytes",
                         "holds 176"):
        load_data(str(path))


def test_npz_member_claiming_more_rows_than_it_holds(tmp_path: Path) -> None:
    member = npy_claiming(tmp_path / "x.npy", (10**12, 3))
    with zipfile.ZipFile(tmp_path / "huge.npz", "w", zipfile.ZIP_DEFLATED) as archive:
        archive.write(member, "x.npy")
    with raises_one_line(str(tmp_path / "huge.npz"), "(key 'x')", "shape (1000000000000, 3)"):
        load_data(str(tmp_path / "huge.npz"))


def test_sparse_npy_consistent_with_its_header_is_refused_by_memory(tmp_path: Path) -> None:
    path = npy_claiming(tmp_path / "sparse.npy", (10**9, 1000), payload=b"")
    os.truncate(path, path.stat().st_size + 4 * 10**12)  # 4 TB of holes: takes no disk, would never load
    with raises_one_line(str(path), "(1000000000, 1000)", "GiB of memory", "more than this machine's"):
        load_data(str(path))


def test_compressed_npz_that_decodes_past_memory_is_refused_before_decoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    np.savez_compressed(tmp_path / "zeros.npz", x=np.zeros((1000, 1000), dtype=np.float32))  # 4 MB in a few KB
    assert (tmp_path / "zeros.npz").stat().st_size < 50_000
    monkeypatch.setattr(limits, "memory_bytes", lambda: 2**20)
    monkeypatch.setattr(np.lib.format, "read_array", lambda *a, **k: pytest.fail("decoded before the size check"))
    with raises_one_line(str(tmp_path / "zeros.npz"), "(1000, 1000)", "more than this machine's"):
        load_data(str(tmp_path / "zeros.npz"))


@pytest.mark.parametrize("name", ["train-images-idx3-ubyte", "train-images-idx3-ubyte.gz"])
def test_idx_header_whose_sizes_overflow_int64(tmp_path: Path, name: str) -> None:
    path = idx_claiming(tmp_path / name, (2**32 - 1,) * 4)
    fragment = "is truncated" if not name.endswith(".gz") else "more than this machine's"
    with raises_one_line(str(path), "(4294967295, 4294967295, 4294967295, 4294967295)", fragment):
        read_idx(path)


def test_gzip_idx_bomb_is_not_decompressed_past_its_header(tmp_path: Path) -> None:
    path = tmp_path / "bomb-idx1-ubyte.gz"
    zeros = gzip.compress(bytes(2**24))  # gzip members concatenate: 64 of them decode to 1 GiB of zeros
    path.write_bytes(gzip.compress(bytes([0, 0, 8, 1, 0, 0, 0, 10]) + bytes(10)) + zeros * 64)
    assert path.stat().st_size < 2 * 2**20
    with raises_one_line(str(path), "has trailing bytes", "needs 18 bytes"):
        read_idx(path)


def test_idx_header_past_memory_is_refused_before_decompressing(tmp_path: Path) -> None:
    path = idx_claiming(tmp_path / "big-idx3-ubyte.gz", (2**20, 2**12, 2**12))
    with raises_one_line(str(path), "(1048576, 4096, 4096)", "GiB of memory", "more than this machine's"):
        read_idx(path)


def test_csv_line_longer_than_the_limit_is_refused(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "wide.csv", "a,b\n1,2\n" + "3," * (limits.MAX_LINE_CHARS // 2 + 1) + "\n")
    with raises_one_line(str(path), "line 3 is longer than 1048576 characters"):
        load_data(str(path))


def test_csv_too_big_for_memory_is_refused_before_parsing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_csv(tmp_path / "t.csv", "a,b\n" + "1,2\n" * 1000)
    monkeypatch.setattr(limits, "memory_bytes", lambda: 1000)
    with raises_one_line(str(path), "text table", "more than this machine's"):
        load_data(str(path))


# ---------------------------------------------------------------- permissions (root reads anything: simulated)


def denied_for(monkeypatch: pytest.MonkeyPatch, denied: Path) -> None:
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != denied and real_access(path, mode))


@pytest.mark.parametrize("target", ["x.npy", "t.csv", "pics", "pics/cat", "pics/cat/0.png"])
def test_unreadable_files_and_folders_are_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, target: str) -> None:
    np.save(tmp_path / "x.npy", np.zeros((10, 2), dtype=np.float32))
    write_csv(tmp_path / "t.csv", "a,b\n1,2\n3,4\n5,6\n")
    for i in range(3):
        save_png(tmp_path / "pics" / "cat" / f"{i}.png")
    denied_for(monkeypatch, tmp_path / target)
    data = target.split("/")[0]
    with raises_one_line("cannot read", str(tmp_path / target), "permission denied", "chmod"):
        load_data(str(tmp_path / data))


def test_permission_error_while_listing_a_folder_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    save_png(tmp_path / "pics" / "0.png")

    def denied(self: Path) -> Iterator[Path]:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "iterdir", denied)
    with raises_one_line(f"cannot read image folder {tmp_path / 'pics'}: permission denied"):
        load_data(str(tmp_path / "pics"))


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode: the tests above simulate it")
def test_a_real_unreadable_file(tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", np.zeros((10, 2), dtype=np.float32))
    (tmp_path / "x.npy").chmod(0)
    with raises_one_line(str(tmp_path / "x.npy"), "permission denied"):
        load_data(str(tmp_path / "x.npy"))


# ---------------------------------------------------------------- labels out of any sensible range


@pytest.mark.parametrize("bad, shown", [
    (np.array(2**62), "4611686018427387904"),
    (np.array(2**64 - 1, dtype=np.uint64), "18446744073709551615"),  # would wrap to -1 as int64
    (np.array(1e300), "1e+300"),  # would cast to a garbage int64
    (np.array(limits.MAX_CLASSES), str(limits.MAX_CLASSES)),
])
def test_huge_labels_name_the_value_and_the_fix(tmp_path: Path, bad: np.ndarray, shown: str) -> None:
    y = np.zeros(10, dtype=bad.dtype)
    y[4] = bad
    np.savez(tmp_path / "d.npz", x=np.zeros((10, 3), dtype=np.float32), y=y)
    with raises_one_line("class ids below 65536", f"sample 4 has {shown}", "number the classes 0..K-1"):
        load_data(str(tmp_path / "d.npz"))


def test_largest_allowed_label_loads(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", x=np.zeros((10, 3), dtype=np.float32), y=np.array([0] * 9 + [limits.MAX_CLASSES - 1]))
    assert load_data(str(tmp_path / "d.npz"), val_fraction=0.0, test_fraction=0.0).num_classes == limits.MAX_CLASSES


@pytest.mark.parametrize("text, fragment", [
    ("a,label\n1,0\n2,1e20\n3,1\n", "sample 1 has 1e+20"),
    ("a,label\n1,0\n2,1.5\n3,1\n", "non-negative integers"),
])
def test_huge_or_fractional_labels_in_a_table(tmp_path: Path, text: str, fragment: str) -> None:
    with raises_one_line("column 'label'", fragment):
        load_data(str(write_csv(tmp_path / "t.csv", text)))


@pytest.mark.parametrize("labels, fragment", [
    (np.array([0, 1, 2**40] + [0] * 17, dtype=np.float64), "class ids below 65536"),
    (np.array([0, 1.5] + [0] * 18, dtype=np.float64), "non-negative integers"),
])
def test_bad_labels_in_an_idx_label_file(tmp_path: Path, labels: np.ndarray, fragment: str) -> None:
    write_fake_mnist(tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", labels)
    with raises_one_line("t10k-labels-idx1-ubyte.gz", fragment):
        load_data("mnist", data_dir=tmp_path)


def test_num_classes_past_the_limit_is_a_config_error_not_the_variants_bug() -> None:
    with raises_one_line("num_classes=4611686018427387904 must be in 0..65536", error=ConfigError):
        vaezoo.create_model("cvae", preset="tiny", num_classes=2**62)
