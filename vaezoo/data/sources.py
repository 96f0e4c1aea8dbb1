"""Where data comes from: the built-in datasets, user files, and :func:`load_data` that picks between them.

>>> from vaezoo.data import load_data, list_datasets
>>> list_datasets()
['digits', 'fashion-mnist', 'fashion-mnist-binarized', 'mnist', 'shapes2d', 'shapes2d-small']
>>> load_data("digits", seed=0).summary()
'digits: train 1437, val 180, test 180, shape (1, 8, 8), 10 classes (from sklearn.datasets.load_digits)'
>>> load_data("my_images/", val_fraction=0.05)          # doctest: +SKIP

The CLI maps ``vaezoo train NAME --data DATA --data-dir DIR`` onto ``load_data(DATA, data_dir=DIR)``.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError, DataError, did_you_mean
from . import budget, files, images, shapes2d
from .arrays import check_finite, label_array, sample_array, unit_parts
from .idx import read_idx
from .limits import check_source
from .splits import DataSplits, TensorData, check_fractions, check_seed, fixed_binarize, split_indices

logger = logging.getLogger(__name__)

DATA_ENV = "VAEZOO_DATA"  # a folder holding one subfolder per built-in dataset, e.g. $VAEZOO_DATA/mnist
FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist
FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
DIGIT_CLASSES = [str(digit) for digit in range(10)]
# Static binarization (Larochelle and Murray 2011; Salakhutdinov and Murray 2008): each pixel drawn once as
# Bernoulli(intensity / 255) with this fixed seed, so every machine trains and tests on the same 0/1 images.
BINARIZATION_SEED = 0
IDX_FILES = {  # role -> file name, as distributed; each may also end in .gz
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
DEFAULT_TEST_FRACTION = 0.1  # load_data's default; datasets with an official test set ignore the argument
DataDir = str | os.PathLike[str] | None
ACCEPTED_FILES = "a .npy/.npz array file, a .csv/.tsv table, or a folder of PNG/JPEG images"


@dataclass(frozen=True)
class _Raw:
    """A dataset before splitting and scaling: numpy arrays straight from a reader."""

    x: np.ndarray  # (N, D) or (N, C, H, W), any numeric dtype
    y: np.ndarray | None  # (N,) int64, or None
    class_names: list[str] | None
    source: str


# ---------------------------------------------------------------- public API


def list_datasets() -> list[str]:
    """Names of the built-in datasets, sorted.

    >>> list_datasets()
    ['digits', 'fashion-mnist', 'fashion-mnist-binarized', 'mnist', 'shapes2d', 'shapes2d-small']
    """
    return sorted(BUILTINS)


def describe_datasets() -> dict[str, str]:
    """Each built-in name with one line on what it is and where it comes from, for ``vaezoo data``-style listings.

    >>> describe_datasets()["digits"]
    "scikit-learn's 8x8 handwritten digits (1797 images, bundled)"
    """
    return {name: BUILTINS[name].description for name in list_datasets()}


def dataset_class_names(data: str | os.PathLike[str] | None) -> list[str] | None:
    """The class names of built-in dataset ``data`` (for figure labels), or None for any other data.

    >>> dataset_class_names("fashion-mnist")[:3]
    ['T-shirt/top', 'Trouser', 'Pullover']
    """
    builtin = BUILTINS.get(os.fspath(data)) if data is not None else None
    return None if builtin is None else list(builtin.class_names)


def load_data(
    data: str | os.PathLike[str],
    data_dir: DataDir = None,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = DEFAULT_TEST_FRACTION,
    label_column: str | None = None,
    allow_missing: bool = False,
    memory_budget_mb: float | None = None,
) -> DataSplits:
    """Load a built-in dataset or a user file/folder as fixed, seeded train/val/test tensors in [0, 1].

    Args:
        data: a built-in name (see :func:`list_datasets`) or a path to a ``.npy``/``.npz``
            file, a ``.csv``/``.tsv`` table, or a folder of PNG/JPEG images (class subfolders
            become labels, sorted by name). A relative path is also looked for in ``data_dir``.
        data_dir: where to look first for the files of a built-in dataset (the folder
            itself or its ``<name>/`` subfolder), and for a relative ``data`` path.
        seed: fixes the split; the same seed gives the same split on every machine.
        val_fraction: share of rows held out for validation (of the official train set
            for mnist and fashion-mnist).
        test_fraction: share of rows held out for testing; ignored by datasets with an
            official test set (mnist, fashion-mnist).
        label_column: the label column of a CSV table; by default a column named
            label, class or y, if any.
        allow_missing: let NaN through in a user file as a missing value (an empty CSV cell is one),
            for a model whose ``capabilities.missing_values`` is True (miwae); it stays NaN in the
            tensors. Inf is refused either way.
        memory_budget_mb: a ``.npy`` or image folder whose float32 samples take more MiB is streamed from disk
            (:mod:`.budget`): the same split and values, read as they are used. Default ``$VAEZOO_MEMORY_BUDGET_MB``.

    Raises:
        DataError: missing, unreadable, empty or malformed data, in one line naming the file.
        ConfigError: bad fractions, or ``label_column`` for data that is not a table.

    >>> splits = load_data("digits", seed=1)
    >>> splits.train.x.shape, splits.train.y.dtype
    (torch.Size([1437, 1, 8, 8]), torch.int64)
    """
    check_fractions(val_fraction, test_fraction)
    check_seed(seed, "split seed")
    budget.check_memory_budget(memory_budget_mb)
    if data_dir is not None and not Path(data_dir).expanduser().is_dir():
        raise DataError(f"data_dir {os.fspath(data_dir)} does not exist or is not a folder; pass the folder that holds "
                        "the files (--data-dir DIR), or drop it to use the built-in copy")
    data = os.fspath(data)
    if data in BUILTINS:
        if label_column is not None:
            raise ConfigError(f"label_column={label_column!r} applies only to CSV tables, not to built-in {data!r}")
        splits = BUILTINS[data].load(data_dir, seed, val_fraction, test_fraction)
    else:
        splits = _load_path(_resolve_path(data, data_dir), seed, val_fraction, test_fraction, label_column,
                            allow_missing, memory_budget_mb)
    logger.info("loaded %s", splits.summary())
    return splits


# ---------------------------------------------------------------- built-in datasets


@dataclass(frozen=True)
class _Builtin:
    description: str
    load: Callable[[DataDir, int, float, float], DataSplits]  # (data_dir, seed, val_fraction, test_fraction)
    class_names: tuple[str, ...]  # the names of classes 0, 1, ..., known without reading the data


def _load_digits(data_dir: DataDir, seed: int, val_fraction: float, test_fraction: float) -> DataSplits:
    """scikit-learn's bundled 8x8 digits (1797 images, values 0..16): always available, no download."""
    from sklearn.datasets import load_digits  # imported here: scikit-learn is slow to import

    bunch = load_digits()
    raw = _Raw(
        x=(bunch.images / 16.0).astype(np.float32),  # (1797, 8, 8) in [0, 1]
        y=bunch.target.astype(np.int64),
        class_names=list(DIGIT_CLASSES),
        source="sklearn.datasets.load_digits",
    )
    return _split_raw("digits", raw, seed, val_fraction, test_fraction)


def _load_fashion_mnist(data_dir: DataDir, seed: int, val_fraction: float, test_fraction: float) -> DataSplits:
    """Fashion-MNIST (Xiao et al., 2017): 60k train / 10k test 28x28 grayscale clothes, 10 classes."""
    folder = _find_idx_folder("fashion-mnist", data_dir, FASHION_MNIST_SYSTEM_DIR)
    return _load_idx_dataset("fashion-mnist", folder, FASHION_MNIST_CLASSES, seed, val_fraction, test_fraction)


def _load_fashion_mnist_binarized(data_dir: DataDir, seed: int, val_fraction: float, test_fraction: float) -> DataSplits:
    """Fashion-MNIST statically binarized: the same split as ``fashion-mnist``, each pixel a fixed 0/1 draw."""
    folder = _find_idx_folder("fashion-mnist", data_dir, FASHION_MNIST_SYSTEM_DIR)
    return _load_idx_dataset("fashion-mnist-binarized", folder, FASHION_MNIST_CLASSES, seed, val_fraction, test_fraction,
                             binarization_seed=BINARIZATION_SEED)


def _load_mnist(data_dir: DataDir, seed: int, val_fraction: float, test_fraction: float) -> DataSplits:
    """MNIST (LeCun et al., 1998): 60k train / 10k test 28x28 handwritten digits, from IDX files you supply."""
    folder = _find_idx_folder("mnist", data_dir, None)
    return _load_idx_dataset("mnist", folder, DIGIT_CLASSES, seed, val_fraction, test_fraction)


BUILTINS: dict[str, _Builtin] = {
    "digits": _Builtin("scikit-learn's 8x8 handwritten digits (1797 images, bundled)", _load_digits, tuple(DIGIT_CLASSES)),
    "fashion-mnist": _Builtin(
        "Fashion-MNIST 28x28 clothes, 60k/10k (Debian: apt-get install dataset-fashion-mnist)", _load_fashion_mnist,
        tuple(FASHION_MNIST_CLASSES),
    ),
    "fashion-mnist-binarized": _Builtin(
        f"Fashion-MNIST with each pixel drawn once as Bernoulli(intensity), seed {BINARIZATION_SEED} (static binarization)",
        _load_fashion_mnist_binarized, tuple(FASHION_MNIST_CLASSES),
    ),
    "mnist": _Builtin("MNIST 28x28 handwritten digits, 60k/10k (IDX files you supply)", _load_mnist, tuple(DIGIT_CLASSES)),
    "shapes2d": _Builtin("dSprites-like 64x64 square/ellipse/heart with 5 known factors, 70k of 737,280 (generated, cached)",
                         shapes2d.load_shapes2d, shapes2d.SHAPE_NAMES),
    "shapes2d-small": _Builtin("shapes2d at 32x32: 3 scales, 8 orientations, 8x8 positions, 4,608 images (generated)",
                               shapes2d.load_shapes2d_small, shapes2d.SHAPE_NAMES),
}


def _find_idx_folder(name: str, data_dir: DataDir, system_dir: Path | None) -> Path:
    """The first folder holding all four IDX files of ``name``: data_dir, data_dir/name, $VAEZOO_DATA/name, system_dir."""
    candidates: list[Path] = []
    if data_dir is not None:
        candidates += [Path(data_dir).expanduser(), Path(data_dir).expanduser() / name]
    if os.environ.get(DATA_ENV):
        candidates.append(Path(os.environ[DATA_ENV]).expanduser() / name)
    if system_dir is not None:
        candidates.append(system_dir)
    for folder in candidates:
        found = {role: _idx_file(folder, stem) for role, stem in IDX_FILES.items()}
        if all(found.values()):
            return folder
        if any(found.values()):
            missing = [IDX_FILES[role] for role, path in found.items() if path is None]
            raise DataError(f"{folder} holds only some {name} IDX files: {', '.join(missing)} (or .gz) missing; add them")
    raise DataError(_missing_message(name, candidates, system_dir))


def _idx_file(folder: Path, stem: str) -> Path | None:
    """``folder/stem`` or ``folder/stem.gz`` (also the ``train-images.idx3-ubyte`` spelling), if present."""
    dotted = stem.replace("-idx", ".idx")
    for file_name in (stem + ".gz", stem, dotted + ".gz", dotted):
        if (folder / file_name).exists() or (folder / file_name).is_symlink():  # read_idx refuses a FIFO or device
            return folder / file_name
    return None


def _missing_message(name: str, searched: list[Path], system_dir: Path | None) -> str:
    names = ", ".join(stem + ".gz" for stem in IDX_FILES.values())
    looked = ", ".join(str(p) for p in searched) or f"nowhere (no data_dir given and ${DATA_ENV} unset)"
    install = "install it with `apt-get install dataset-fashion-mnist`, or " if system_dir is not None else ""
    return (
        f"{name} not found (looked in {looked}); {install}put the four IDX files ({names}) in a folder DIR "
        f"and pass --data-dir DIR (or data_dir=DIR), or put them in ${DATA_ENV}/{name}"
    )


def _load_idx_dataset(
    name: str, folder: Path, class_names: list[str], seed: int, val_fraction: float, test_fraction: float,
    binarization_seed: int | None = None,
) -> DataSplits:
    """An MNIST-layout dataset: the official test set stays the test split; val is carved from train.

    With ``binarization_seed`` every image (train and test, in file order) is binarized once, pixel ~
    Bernoulli(value / 255) from that seed: the same 0/1 images whatever the split seed.
    """
    if test_fraction != DEFAULT_TEST_FRACTION:
        logger.info("%s has an official test set; test_fraction=%s is ignored", name, test_fraction)
    train_x, train_y = _read_idx_pair(folder, "train", len(class_names))
    test_x, test_y = _read_idx_pair(folder, "test", len(class_names))
    if train_x.shape[1:] != test_x.shape[1:]:
        raise DataError(
            f"{name} in {folder}: train images are {train_x.shape[1:]} but test images are {test_x.shape[1:]}; "
            "use files from the same release"
        )
    n_train = len(train_x)
    train_index, val_index, _ = split_indices(n_train, val_fraction, 0.0, seed, str(folder))
    test_index = torch.arange(n_train, n_train + len(test_x))
    images = np.concatenate([train_x, test_x])
    if binarization_seed is not None:
        images = fixed_binarize(torch.from_numpy(images.astype(np.float32) / np.float32(255.0)), binarization_seed).numpy()
    parts = unit_parts(images, [train_index, val_index, test_index], str(folder))
    labels = torch.from_numpy(np.concatenate([train_y, test_y]))
    return DataSplits(
        train=TensorData(parts[0], labels[train_index]),
        val=TensorData(parts[1], labels[val_index]),
        test=TensorData(parts[2], labels[test_index]),
        name=name,
        input_shape=tuple(int(d) for d in train_x.shape[1:]),
        num_classes=len(class_names),
        class_names=list(class_names),
        source=str(folder),
    )


def _read_idx_pair(folder: Path, part: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(images (N, 1, H, W) uint8, labels (N,) int64) of the ``train`` or ``test`` part."""
    images_path = _idx_file(folder, IDX_FILES[f"{part}_images"])
    labels_path = _idx_file(folder, IDX_FILES[f"{part}_labels"])
    assert images_path is not None and labels_path is not None  # _find_idx_folder checked both
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3:
        raise DataError(f"IDX file {images_path} holds shape {images.shape}; images must be (N, H, W)")
    if labels.ndim != 1:
        raise DataError(f"IDX file {labels_path} holds shape {labels.shape}; labels must be (N,)")
    if len(images) != len(labels):
        raise DataError(
            f"IDX file {images_path} holds {len(images)} images but {labels_path} holds {len(labels)} labels; "
            "use files from the same release"
        )
    x = sample_array(images, str(images_path))
    check_finite(x, str(images_path))
    y = label_array(labels, len(images), str(labels_path))
    if y.max() >= num_classes:
        raise DataError(
            f"IDX file {labels_path} holds label {y.max()} but {folder.name} has {num_classes} classes "
            f"(0..{num_classes - 1}); use the labels file of this dataset"
        )
    return x, y


# ---------------------------------------------------------------- user files


def _resolve_path(data: str, data_dir: DataDir) -> Path:
    """``data`` as an existing path (as given, else under data_dir); an unknown name is a did-you-mean error."""
    path = Path(data).expanduser()
    candidates = [path]
    if data_dir is not None and not path.is_absolute():
        candidates.append(Path(data_dir).expanduser() / path)
    for candidate in candidates:
        if candidate.exists() or candidate.is_symlink():  # a dangling link or a loop is named by check_source
            return candidate
    looks_like_path = os.sep in data or "/" in data or path.suffix != ""
    if looks_like_path:
        where = " or ".join(str(c) for c in candidates)
        raise DataError(f"data path {where} does not exist; check the path, or use a built-in: {', '.join(list_datasets())}")
    raise DataError(
        f"unknown dataset {data!r}{did_you_mean(data.lower(), BUILTINS)}; use a built-in ({', '.join(list_datasets())}) "
        f"or the path to {ACCEPTED_FILES}"
    )


def _load_path(
    path: Path, seed: int, val_fraction: float, test_fraction: float, label_column: str | None,
    allow_missing: bool = False, memory_budget_mb: float | None = None,
) -> DataSplits:
    is_folder = check_source(path)  # a FIFO, device, socket, link loop or unreadable path stops here, unopened
    suffix = path.suffix.lower()
    if label_column is not None and (is_folder or suffix not in files.TABLE_SUFFIXES):
        raise ConfigError(f"label_column={label_column!r} applies only to CSV/TSV tables, not to {path}")
    name = path.name if is_folder else path.stem
    if is_folder:
        scan = images.scan_image_folder(path)
        if (streamed := budget.stream_image_folder(name, scan, seed, val_fraction, test_fraction, memory_budget_mb)):
            return streamed
        folder = images.read_image_folder(path, scan)
        raw = _Raw(folder.x, folder.y, folder.class_names, str(path))
        return _split_raw(name, raw, seed, val_fraction, test_fraction)
    if suffix in files.ARRAY_SUFFIXES:
        if (streamed := budget.stream_npy(name, path, seed, val_fraction, test_fraction, allow_missing, memory_budget_mb)):
            return streamed
        x, y = files.read_array_file(path)
        return _split_raw(name, _Raw(x, y, None, str(path)), seed, val_fraction, test_fraction,
                          allow_missing=allow_missing)
    if suffix in files.TABLE_SUFFIXES:
        return _load_table(name, path, seed, val_fraction, test_fraction, label_column, allow_missing)
    raise DataError(f"{path} has unsupported file type {suffix or '(none)'!r}; pass {ACCEPTED_FILES}")


def _load_table(
    name: str, path: Path, seed: int, val_fraction: float, test_fraction: float, label_column: str | None,
    allow_missing: bool = False,
) -> DataSplits:
    """A CSV table: every feature column min-max scaled with the train split's statistics."""
    table = files.read_table(path, label_column)
    check_finite(table.x, str(path), table.feature_columns, table.lines, allow_missing)
    y = None if table.y is None else label_array(table.y, len(table.x), f"column {table.label_column!r} of {path}")
    raw = _Raw(table.x, y, table.class_names, str(path))
    return _split_raw(name, raw, seed, val_fraction, test_fraction, always_minmax=True, allow_missing=allow_missing)


def _split_raw(
    name: str, raw: _Raw, seed: int, val_fraction: float, test_fraction: float, always_minmax: bool = False,
    allow_missing: bool = False,
) -> DataSplits:
    """Check, split with ``seed``, and scale a raw dataset into :class:`DataSplits` (NaN kept with ``allow_missing``)."""
    x = sample_array(raw.x, raw.source)
    check_finite(x, raw.source, allow_missing=allow_missing)
    y = None if raw.y is None else torch.from_numpy(label_array(raw.y, len(x), raw.source))
    train_index, val_index, test_index = split_indices(len(x), val_fraction, test_fraction, seed, raw.source)
    indices = [train_index, val_index, test_index]
    parts = unit_parts(x, indices, raw.source, always_minmax)
    splits = [TensorData(part, None if y is None else y[index]) for part, index in zip(parts, indices)]
    num_classes = len(raw.class_names) if raw.class_names else (int(y.max()) + 1 if y is not None else 0)
    return DataSplits(
        train=splits[0],
        val=splits[1],
        test=splits[2],
        name=name,
        input_shape=tuple(int(d) for d in x.shape[1:]),
        num_classes=num_classes,
        class_names=list(raw.class_names) if raw.class_names else None,
        source=raw.source,
    )
