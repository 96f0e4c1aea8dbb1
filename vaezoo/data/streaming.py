"""Splits too large for memory, read from disk as they are used: memory-mapped ``.npy`` rows, images decoded per item.

Such a split is a :class:`StreamingData`. Its ``x`` is a :class:`StreamedArray`: indexed by rows like a tensor
(``x[5]``, ``x[100:200]``, ``x[index_tensor]``), it answers with float32 tensors in [0, 1], the very values the
in-memory path holds for those rows. Its labels stay in memory as a tensor. A :class:`RowLoader` reads batches
of rows through a torch DataLoader whose workers read the next batches while the model trains.

>>> splits = load_data("big.npy", memory_budget_mb=512)        # doctest: +SKIP
>>> type(splits.train).__name__, splits.train.x[:4].shape      # doctest: +SKIP
('StreamingData', torch.Size([4, 784]))
>>> for xb in RowLoader(splits.train.x)([np.arange(0, 128), np.arange(128, 256)]): ...  # doctest: +SKIP

Reference: torch.utils.data's map-style Dataset read with ``batch_size=None`` and a sampler of whole batches
(pytorch/pytorch, torch/utils/data/dataloader.py): one worker reads one batch with one fancy index (one sorted
memmap read) instead of one Python call per row. The loader gets a generator of its own because
``_BaseDataLoaderIter.__init__`` draws a base seed from ``loader.generator``, the global RNG when that is None,
which would shift the noise a seeded model draws after every epoch's start.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from ..errors import ConfigError, DataError, VAEZooError
from .arrays import rows_to_unit
from .files import map_npy
from .images import read_unit_image
from .splits import TensorData

WORKERS_ENV = "VAEZOO_DATA_WORKERS"  # processes that read streamed batches; 0 reads them in the training process
MAX_DEFAULT_WORKERS = 4  # enough to decode small images faster than a GPU trains on them
CHUNK_BYTES = 64 * 2**20  # float32 bytes read at once by a pass over a whole streamed split (its checks)


class RowReader(Protocol):
    """Reads rows of a dataset on disk, by their index in the file, as float32 samples in [0, 1]."""

    sample_shape: tuple[int, ...]

    def read(self, rows: np.ndarray) -> Tensor:
        """(len(rows), *sample_shape) float32, row i of the answer being file row ``rows[i]``."""


class NpyRows:
    """Rows of a memory-mapped ``.npy`` file, laid out as ``sample_array`` lays them out and converted as
    ``unit_parts`` converts them (uint8 / 255, else float32, then min-max with ``minmax`` = (low, span))."""

    def __init__(self, path: Path, layout: str, sample_shape: tuple[int, ...],
                 minmax: tuple[Tensor, Tensor] | None = None) -> None:
        self.path, self.layout, self.sample_shape, self.minmax = path, layout, sample_shape, minmax
        self._samples: np.ndarray | None = None  # opened on first use: in each worker, never pickled

    def read(self, rows: np.ndarray) -> Tensor:
        order = np.argsort(rows, kind="stable")
        raw = self.samples()[rows[order]]  # one read in file order: the page cache and the disk read ahead
        return rows_to_unit(raw[np.argsort(order)], self.minmax)  # back to the order asked for

    def samples(self) -> np.ndarray:
        """The file as (N, *sample_shape): a view of the memory map, nothing read."""
        if self._samples is None:
            array = map_npy(self.path)
            if self.layout == "expand":  # (N, H, W) -> (N, 1, H, W)
                array = array[:, None]
            elif self.layout == "channels_last":  # (N, H, W, C) -> (N, C, H, W)
                array = array.transpose(0, 3, 1, 2)
            self._samples = array
        return self._samples

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_samples": None}  # a pickled memmap would be a copy of the whole file


class ImageRows:
    """Images of a folder, decoded one by one as ``read_image_folder`` decodes them (see images.read_unit_image)."""

    def __init__(self, files: Sequence[Path], sample_shape: tuple[int, int, int]) -> None:
        self.files, self.sample_shape = list(files), sample_shape

    def read(self, rows: np.ndarray) -> Tensor:
        if len(rows) == 0:
            return torch.empty((0, *self.sample_shape))
        channels = self.sample_shape[0]
        return torch.from_numpy(np.stack([read_unit_image(self.files[row], channels) for row in rows]))


class StreamedArray:
    """``(N, *sample_shape)`` float32 samples in [0, 1] that live on disk: indexing reads the rows asked for.

    Row ``i`` is file row ``rows[i]``. It takes rows as a tensor does (an int, a slice, a 1-d index or a boolean
    mask, as a tensor, array or list) and answers with a tensor on the CPU. ``torch.isnan`` of the whole array is
    answered chunk by chunk; any other torch function on it is a one-line DataError (what needs a whole split as one
    tensor, such as eval's overlap check or the applications, needs it within the budget).

    >>> x = splits.train.x                   # doctest: +SKIP
    >>> x.shape, x[torch.tensor([3, 0])].shape   # doctest: +SKIP
    (torch.Size([54000, 1, 28, 28]), torch.Size([2, 1, 28, 28]))
    """

    dtype = torch.float32
    device = torch.device("cpu")

    def __init__(self, reader: RowReader, rows: np.ndarray, chunk_rows: int = 0) -> None:
        self.reader, self.rows = reader, np.asarray(rows, dtype=np.int64)
        row_bytes = 4 * int(np.prod(reader.sample_shape))
        self.chunk_rows = chunk_rows or max(1, CHUNK_BYTES // row_bytes)  # rows per chunk of a pass over the split

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self.rows), *self.reader.sample_shape))

    @property
    def ndim(self) -> int:
        return 1 + len(self.reader.sample_shape)

    def __len__(self) -> int:
        return len(self.rows)

    def numel(self) -> int:
        return int(np.prod(self.shape))

    def size(self, dim: int | None = None) -> torch.Size | int:
        return self.shape if dim is None else self.shape[dim]

    def __repr__(self) -> str:
        return f"StreamedArray(shape={tuple(self.shape)}, from {type(self.reader).__name__})"

    def __getitem__(self, index: Any) -> Tensor:
        if isinstance(index, (int, np.integer, Tensor, np.ndarray)) and np.ndim(index) == 0 and not isinstance(index, bool):
            return self.reader.read(self.rows[self.positions([int(index)])])[0]  # one sample, as tensor[i] gives
        return self.reader.read(self.rows[self.positions(index)])

    def positions(self, index: Any) -> np.ndarray:
        """The 0-based rows ``index`` names, as an int64 array; IndexError naming the bad index otherwise."""
        n = len(self)
        if isinstance(index, slice):
            return np.arange(*index.indices(n), dtype=np.int64)
        if isinstance(index, tuple) or index is None or index is Ellipsis:
            raise IndexError(f"streamed data is indexed by rows only, not by {index!r}; take the rows first "
                             "(x[rows]), then index the tensor they come back as")
        if isinstance(index, Tensor):
            index = index.detach().cpu().numpy()
        array = np.asarray(index)
        if array.dtype == np.bool_:
            if array.shape != (n,):
                raise IndexError(f"a boolean mask of shape {array.shape} does not fit streamed data of {n} rows")
            return np.flatnonzero(array)
        if array.size == 0:
            return np.zeros(0, dtype=np.int64)
        if array.ndim != 1 or not np.issubdtype(array.dtype, np.integer):
            raise IndexError(f"streamed data takes an int, a slice, or a 1-d index of rows, not {array.dtype} of "
                             f"shape {array.shape}")
        bad = (array < -n) | (array >= n)
        if bad.any():
            raise IndexError(f"row {int(array[bad][0])} is out of range for streamed data of {n} rows")
        return np.where(array < 0, array + n, array).astype(np.int64)

    @classmethod
    def __torch_function__(cls, func: Callable[..., Any], types: Any, args: Sequence[Any] = (),
                           kwargs: dict[str, Any] | None = None) -> Any:
        if func is torch.isnan and len(args) == 1 and not kwargs and isinstance(args[0], StreamedArray):
            return torch.cat([torch.isnan(chunk) for chunk in iter_chunks(args[0])])  # e.g. eval's observed values
        name = getattr(func, "__name__", str(func))
        raise DataError(f"torch.{name} does not take streamed data (a split over the memory budget, read from disk by "
                        "rows); take rows first (x[:1000]), or raise the budget (--memory-budget, $VAEZOO_MEMORY_BUDGET_MB)")


@dataclass(frozen=True)
class StreamingData(TensorData):
    """One split too large for memory: ``x`` is a :class:`StreamedArray`; ``y`` and ``factors`` are in-memory tensors.

    ``part[index]`` reads those rows into an in-memory :class:`TensorData`; ``to(device)`` leaves it where it
    is (the trainer moves each batch as it is read).
    """

    x: StreamedArray  # type: ignore[assignment]

    def to(self, device: torch.device | str) -> StreamingData:
        return self


def is_streamed(x: object) -> bool:
    """True for the samples of a split read from disk (a :class:`StreamedArray`), False for a tensor."""
    return isinstance(x, StreamedArray)


def iter_chunks(x: Tensor | StreamedArray) -> Iterator[Tensor]:
    """A whole split's samples in row order: a tensor as itself, streamed data ``chunk_rows`` rows at a time
    (read through a :class:`RowLoader`, so that its workers decode the next chunks meanwhile)."""
    if not isinstance(x, StreamedArray):
        yield x
        return
    starts = range(0, len(x), x.chunk_rows)
    yield from RowLoader(x)([np.arange(start, min(start + x.chunk_rows, len(x))) for start in starts])


def data_workers() -> int:
    """Worker processes that read streamed batches: ``$VAEZOO_DATA_WORKERS``, else one per core but one, at most 4."""
    value = os.environ.get(WORKERS_ENV)
    if value is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        return max(0, min(MAX_DEFAULT_WORKERS, cores - 1))
    try:
        workers = int(value)
    except ValueError:
        workers = -1
    if workers < 0:
        raise ConfigError(f"${WORKERS_ENV}={value!r} must be a whole number of worker processes >= 0 (0 reads batches "
                          "in the training process), e.g. 4")
    return workers


@dataclass(frozen=True)
class _Failure:
    """A vaezoo error met in a worker, sent back whole: the DataLoader would wrap it in a multi-line traceback."""

    kind: type[VAEZooError]
    message: str


class _Rows(Dataset):
    """A map-style dataset whose items are whole batches: ``rows[positions]`` for an array of positions."""

    def __init__(self, x: StreamedArray) -> None:
        self.x = x

    def __getitem__(self, positions: np.ndarray) -> Tensor | _Failure:
        try:
            return self.x[positions]
        except VAEZooError as error:
            return _Failure(type(error), str(error))

    def __len__(self) -> int:
        return len(self.x)


class _Batches(Sampler):
    """The batches of the current pass, set before each one (persistent workers keep the same sampler)."""

    def __init__(self) -> None:
        self.batches: list[np.ndarray] = []

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class RowLoader:
    """Reads batches of rows of a :class:`StreamedArray`, in the order given, through a torch DataLoader.

    ``workers`` processes (default :func:`data_workers`) read ahead while the caller uses each batch; with
    ``pin_memory`` (for CUDA) batches arrive in page-locked memory, so the copy to the GPU can overlap.
    A vaezoo error met while reading (an image that no longer decodes) is raised here as the same one line.

    >>> loader = RowLoader(splits.train.x, pin_memory=True)          # doctest: +SKIP
    >>> for xb in loader([np.array([5, 2, 9]), np.array([0, 1, 3])]):  # doctest: +SKIP
    ...     xb = xb.to("cuda", non_blocking=True)
    """

    def __init__(self, x: StreamedArray, pin_memory: bool = False, workers: int | None = None) -> None:
        self.workers = data_workers() if workers is None else workers
        self._batches = _Batches()
        self._loader = DataLoader(
            _Rows(x), batch_size=None, sampler=self._batches, num_workers=self.workers, pin_memory=pin_memory,
            persistent_workers=self.workers > 0, generator=torch.Generator(),  # see the module docstring
        )

    def __call__(self, batches: Sequence[np.ndarray]) -> Iterator[Tensor]:
        """The rows of each index array in ``batches`` (positions in the split), one tensor per array, in order."""
        self._batches.batches = list(batches)
        for batch in self._loader:
            if isinstance(batch, _Failure):
                raise batch.kind(batch.message)
            yield batch
