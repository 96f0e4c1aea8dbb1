"""The tensors a dataset becomes: :class:`TensorData`, :class:`DataSplits`, seeded splits, binarization.

The trainer keeps whole splits on the device and takes batches by index slicing::

    >>> import torch
    >>> from vaezoo.data import load_data, binarize
    >>> splits = load_data("digits", seed=0)
    >>> order = torch.randperm(len(splits.train))
    >>> batch = splits.train.x[order[:64]]                # (64, 1, 8, 8) float32 in [0, 1]
    >>> binarize(batch).unique().tolist()                 # dynamic binarization
    [0.0, 1.0]
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from ..errors import ConfigError, DataError


@dataclass(frozen=True)
class TensorData:
    """One split: samples ``x``, optional class ids ``y`` and optional generative factors, row-aligned.

    Take rows with ``part[index]`` (never ``dataclasses.replace(part, x=...)``): it keeps ``y`` and
    ``factors`` aligned with ``x``.

    >>> part = TensorData(torch.rand(5, 3), torch.tensor([0, 1, 2, 1, 0]))
    >>> len(part), part[1:3].x.shape
    (5, torch.Size([2, 3]))
    """

    x: torch.Tensor  # (N, *input_shape) float32 in [0, 1]
    y: torch.Tensor | None = None  # (N,) int64 class ids, or None when the data is unlabelled
    factors: torch.Tensor | None = None  # (N, F) int64 factor value indices (ground-truth data such as shapes2d), or None

    def __post_init__(self) -> None:
        if self.x.ndim < 2:
            raise DataError(f"TensorData.x has shape {tuple(self.x.shape)}; it needs (N, *input_shape)")
        if self.y is not None and tuple(self.y.shape) != (self.x.shape[0],):
            raise DataError(
                f"TensorData.y has shape {tuple(self.y.shape)} but x has {self.x.shape[0]} rows; "
                "pass one class id per row"
            )
        factors = self.factors
        if factors is not None and (factors.ndim != 2 or factors.shape[0] != self.x.shape[0] or factors.dtype != torch.int64):
            raise DataError(
                f"TensorData.factors is {factors.dtype} of shape {tuple(factors.shape)} but x has {self.x.shape[0]} rows; "
                "pass one int64 row of factor indices per sample (take rows with part[index] to keep them aligned)"
            )

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def __getitem__(self, index: slice | torch.Tensor) -> TensorData:
        """Rows ``index`` (a slice or an index tensor) of ``x``, ``y`` and ``factors``."""
        return TensorData(self.x[index], _rows(self.y, index), _rows(self.factors, index))

    def to(self, device: torch.device | str) -> TensorData:
        """The same split on ``device`` (e.g. ``"cuda"``)."""
        return TensorData(self.x.to(device), _on(self.y, device), _on(self.factors, device))


def _rows(tensor: torch.Tensor | None, index: slice | torch.Tensor) -> torch.Tensor | None:
    return None if tensor is None else tensor[index]


def _on(tensor: torch.Tensor | None, device: torch.device | str) -> torch.Tensor | None:
    return None if tensor is None else tensor.to(device)


@dataclass(frozen=True)
class DataSplits:
    """A dataset split into fixed train / val / test parts, with what a model needs to know about it.

    >>> from vaezoo.data import load_data
    >>> splits = load_data("digits")
    >>> splits.input_shape, splits.num_classes, [len(s) for s in (splits.train, splits.val, splits.test)]
    ((1, 8, 8), 10, [1437, 180, 180])
    """

    train: TensorData
    val: TensorData
    test: TensorData
    name: str  # the built-in name, or the file / folder name for user data
    input_shape: tuple[int, ...]  # (C, H, W) for images, (D,) for vectors
    num_classes: int  # number of classes; 0 when unlabelled
    class_names: list[str] | None  # readable names of the classes 0..num_classes-1, when known
    source: str  # where the data came from: a path, or a description of the bundled data
    factor_names: tuple[str, ...] | None = None  # names of the columns of each split's ``factors``; None: no factors
    factor_sizes: tuple[int, ...] | None = None  # number of values of each factor (column f holds 0..size-1)

    def __post_init__(self) -> None:
        names, sizes = self.factor_names, self.factor_sizes
        if (names is None) != (sizes is None) or (names is not None and len(names) != len(sizes or ())):
            raise DataError(f"{self.name}: factor_names {names} and factor_sizes {sizes} must be given together, "
                            "one size per name")
        for split, part in (("train", self.train), ("val", self.val), ("test", self.test)):
            columns = None if part.factors is None else int(part.factors.shape[1])
            if names is not None and columns is not None and columns != len(names):
                raise DataError(f"{self.name}: the {split} split has {columns} factor columns but factor_names is "
                                f"{names}; name every column")

    def to(self, device: torch.device | str) -> DataSplits:
        """All three splits on ``device``."""
        return replace(self, train=self.train.to(device), val=self.val.to(device), test=self.test.to(device))

    def summary(self) -> str:
        """One line for logs and the CLI, e.g. ``digits: train 1437, val 180, test 180, shape (1, 8, 8), 10 classes``."""
        classes = f"{self.num_classes} classes" if self.num_classes else "unlabelled"
        factors = ""
        if self.factor_names is not None and self.factor_sizes is not None:
            factors = ", factors " + " ".join(f"{n}={s}" for n, s in zip(self.factor_names, self.factor_sizes))
        return (
            f"{self.name}: train {len(self.train)}, val {len(self.val)}, test {len(self.test)}, "
            f"shape {self.input_shape}, {classes}{factors} (from {self.source})"
        )


def check_fractions(val_fraction: float, test_fraction: float) -> None:
    """Raise :class:`ConfigError` unless both fractions are in [0, 1) and leave rows for training."""
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= value < 1.0:
            raise ConfigError(f"{name}={value} must be in [0, 1), e.g. 0.1")
    if val_fraction + test_fraction >= 1.0:
        raise ConfigError(
            f"val_fraction={val_fraction} + test_fraction={test_fraction} leave nothing to train on; keep their sum below 1"
        )


MAX_SEED = 2**63 - 1  # torch.Generator.manual_seed and numpy take seeds up to here


def check_seed(seed: object, what: str = "seed") -> int:
    """``seed`` if it is an integer in 0..2**63-1, else ConfigError naming it (a larger one overflowed inside torch)."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise ConfigError(f"{what}={seed!r} must be an integer in 0..{MAX_SEED} (2**63 - 1)")
    return seed


def split_indices(
    n: int, val_fraction: float, test_fraction: float, seed: int, source: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Disjoint, sorted (train, val, test) row indices covering ``range(n)``, fixed by ``seed``.

    A non-zero fraction gets at least one row. The permutation comes from a CPU
    ``torch.Generator``, so a seed gives the same split on every machine.

    >>> train, val, test = split_indices(10, 0.2, 0.2, seed=0, source="demo")
    >>> len(train), len(val), len(test)
    (6, 2, 2)
    """
    check_fractions(val_fraction, test_fraction)
    n_test = _split_size(n, test_fraction)
    n_val = _split_size(n, val_fraction)
    if n - n_val - n_test < 1:
        raise DataError(
            f"{source} has only {n} rows, too few for val_fraction={val_fraction} and test_fraction={test_fraction}; "
            "add rows or lower the fractions"
        )
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    test = order[:n_test].sort().values
    val = order[n_test : n_test + n_val].sort().values
    train = order[n_test + n_val :].sort().values
    return train, val, test


def _split_size(n: int, fraction: float) -> int:
    if fraction == 0.0:
        return 0
    return max(1, round(n * fraction))


def binarize(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Stochastic binarization: each value becomes 1 with probability ``x`` (x ~ Bernoulli(x)).

    Called on every batch it gives dynamic binarization (Salakhutdinov & Murray, 2008).
    ``x`` must lie in [0, 1]; ``generator``, when given, must live on ``x.device``.

    >>> binarize(torch.tensor([0.0, 1.0])).tolist()
    [0.0, 1.0]
    """
    return torch.bernoulli(x, generator=generator)


def fixed_binarize(x: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """One binarization of ``x`` fixed by ``seed``, for evaluating on the same binary test set every time.

    The draws are made on the CPU, so a seed gives the same bits on every device.

    >>> x = torch.rand(4, 3)
    >>> torch.equal(fixed_binarize(x, seed=1), fixed_binarize(x, seed=1))
    True
    """
    generator = torch.Generator().manual_seed(seed)
    return torch.bernoulli(x.detach().to("cpu", torch.float32), generator=generator).to(x.device, x.dtype)
