"""Readers for user data files: ``.npy`` / ``.npz`` arrays and CSV tables (image folders: :mod:`.images`).

Each returns raw numpy arrays; :mod:`vaezoo.data.arrays` checks shapes and values afterwards.
Sizes are checked against the file and memory before anything is read (:mod:`.limits`).

>>> x, y = read_array_file("faces.npz")                   # doctest: +SKIP
>>> table = read_table("iris.csv", label_column="species") # doctest: +SKIP
"""
from __future__ import annotations

import csv
import logging
import math
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TextIO

import numpy as np

from ..errors import DataError, did_you_mean, one_line
from .limits import (
    MAX_LINE_CHARS,
    TABLE_BYTES_PER_FILE_BYTE,
    check_file,
    check_fits_in_memory,
    claimed_bytes,
    gib,
    os_error,
)

logger = logging.getLogger(__name__)

ARRAY_SUFFIXES = (".npy", ".npz")
TABLE_SUFFIXES = (".csv", ".tsv")
LABEL_COLUMN_NAMES = ("label", "class", "y")  # looked for, case-insensitively, in this order
ZIP_MAGIC = b"PK"  # an .npz file is a zip archive of .npy members
NPZ_HELP = "save it with numpy.savez(path, x=samples, y=labels) (y is optional)"


# ---------------------------------------------------------------- npy / npz


def read_array_file(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """(x, y or None) from a ``.npy`` (x only) or ``.npz`` (keys ``x`` and optional ``y``) file.

    Each array's header is checked first: its shape times its item size must match the bytes
    the file (or the zip member) holds and fit in memory, so a header that claims 10**12 rows is
    refused before anything is allocated. Object arrays are refused: loading them would unpickle,
    and vaezoo never unpickles.
    """
    size = check_file(path, "array file")
    with _array_errors(path), path.open("rb") as handle:
        if handle.read(len(ZIP_MAGIC)) == ZIP_MAGIC:  # what numpy.load looks at too
            return _read_npz(path)
        handle.seek(0)
        return _read_npy(handle, size, str(path)), None


def npy_layout(path: Path) -> tuple[tuple[int, ...], np.dtype] | None:
    """(shape, dtype) that the header of the ``.npy`` file ``path`` declares, checked as :func:`read_array_file`
    checks it but against the file only, not memory; None for an ``.npz`` archive. No data is read.

    >>> npy_layout(Path("big.npy"))  # doctest: +SKIP
    ((10000000, 784), dtype('uint8'))
    """
    size = check_file(path, "array file")
    with _array_errors(path), path.open("rb") as handle:
        if handle.read(len(ZIP_MAGIC)) == ZIP_MAGIC:
            return None
        handle.seek(0)
        shape, dtype = _npy_header(handle, size, str(path))
        return shape, dtype


def map_npy(path: Path) -> np.ndarray:
    """The ``.npy`` file ``path`` memory-mapped read-only (nothing is read until rows are taken); check it with
    :func:`npy_layout` first."""
    with _array_errors(path):
        return np.load(path, mmap_mode="r", allow_pickle=False)


@contextmanager
def _array_errors(path: Path) -> Iterator[None]:
    """Every way reading an array file fails, as one DataError naming it."""
    try:
        yield
    except OSError as error:
        raise os_error(error, path, "array file") from None
    except (ValueError, EOFError, zipfile.BadZipFile, NotImplementedError) as error:
        if isinstance(error, DataError):
            raise
        raise DataError(f"cannot read {path}: {one_line(error)}; re-save it with numpy.save or numpy.savez") from None


def _read_npz(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    with zipfile.ZipFile(path) as archive:
        members = {name.removesuffix(".npy"): archive.getinfo(name) for name in archive.namelist()}
        keys = list(members)
        if "x" not in members:
            raise DataError(f"{path} has keys {keys} but no 'x'{did_you_mean('x', keys)}; {NPZ_HELP}")
        extra = sorted(set(keys) - {"x", "y"})
        if extra:
            logger.info("%s: ignoring keys %s (only 'x' and 'y' are read)", path, extra)
        arrays = []
        for key in ("x", "y"):
            if key in members:
                with archive.open(members[key]) as member:  # decompresses no further than the member's declared size
                    arrays.append(_read_npy(member, members[key].file_size, f"{path} (key {key!r})"))
    return arrays[0], arrays[1] if len(arrays) > 1 else None


def _read_npy(stream: BinaryIO, size: int, source: str) -> np.ndarray:
    """The array of one .npy stream of ``size`` bytes, after its header is checked against that size and memory."""
    shape, dtype = _npy_header(stream, size, source)
    check_fits_in_memory(size + math.prod(shape) * 4, source, f"an array of shape {shape} ({dtype})")
    stream.seek(0)
    return np.lib.format.read_array(stream, allow_pickle=False)


def _npy_header(stream: BinaryIO, size: int, source: str) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) of one .npy stream of ``size`` bytes; objects, or a shape the bytes do not match, are refused."""
    version = np.lib.format.read_magic(stream)
    read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, _, dtype = read_header(stream)  # version 3.0 differs from 2.0 only in the header's text encoding
    if dtype.hasobject:
        raise DataError(f"cannot read {source}: it holds Python objects ({dtype}), which would need unpickling and vaezoo "
                        "never unpickles; re-save it as numbers with numpy.save")
    expected = stream.tell() + claimed_bytes(shape, dtype.itemsize)
    if expected != size:
        raise DataError(f"cannot read {source}: its header says shape {shape} of {dtype}, which needs {expected} bytes, "
                        f"but it holds {size}; the file is truncated or damaged, re-save it with numpy.save")
    return shape, dtype


# ---------------------------------------------------------------- CSV


@dataclass
class Table:
    """A numeric CSV table split into features and an optional label column."""

    x: np.ndarray  # (N, D) float64 feature columns
    y: np.ndarray | None  # (N,) float64 label column (text labels as their class ids), or None
    feature_columns: list[str]
    label_column: str | None
    lines: np.ndarray  # (N,) the file line of each row, for messages
    class_names: list[str] | None = None  # text labels: the name of class id i, sorted as scikit-learn's LabelEncoder


def read_table(path: Path, label_column: str | None = None) -> Table:
    """A CSV (comma) or TSV (tab) file with a header row and numeric columns.

    The label column is ``label_column`` if given, else the first column named
    label / class / y (any case), else there is none. Blank lines are skipped.
    """
    header, cells, lines = _read_cells(path)
    label = _pick_label_column(path, header, label_column)
    features = [name for name in header if name != label]
    if not features:
        raise DataError(f"{path} has no feature columns besides the label column {label!r}; add numeric feature columns")
    keep = [i for i, name in enumerate(header) if name != label]
    values = _numeric_columns(path, features, cells[:, keep], lines, None)
    if label is None:
        return Table(values, None, features, None, lines)
    y, class_names = _label_column(path, label, cells[:, header.index(label)], lines)
    return Table(values, y, features, label, lines, class_names)


def _label_column(path: Path, name: str, cells: np.ndarray, lines: np.ndarray) -> tuple[np.ndarray, list[str] | None]:
    """Numbers as they are; text labels ("cat", "dog") as ids of their sorted distinct values, with those names.

    The same mapping as scikit-learn's LabelEncoder, so ids agree with a scikit-learn pipeline on the same column.
    """
    if all(_is_number(cell) for cell in cells if cell != ""):
        return _numeric_columns(path, [name], cells[:, None], lines, name)[:, 0], None
    empty = np.flatnonzero(cells == "")
    if empty.size:
        raise DataError(f"label column {name!r} of {path} is empty on line {lines[empty[0]]}; give every row its class")
    class_names, ids = np.unique(cells, return_inverse=True)
    logger.info("%s: column %r holds text labels; classes 0..%d are %s", path, name, len(class_names) - 1,
                list(class_names))
    return ids.astype(np.float64), [str(c) for c in class_names]


def _read_cells(path: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(header, (N, C) stripped cell strings, (N,) line numbers); rows of the wrong length are an error."""
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    size = check_file(path, "table")
    check_fits_in_memory(size * TABLE_BYTES_PER_FILE_BYTE, str(path), f"a {gib(size)} text table")
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(_bounded_lines(handle, path), delimiter=delimiter)
            rows = [(reader.line_num, row) for row in reader if row]
    except OSError as error:
        raise os_error(error, path, "table") from None
    except (UnicodeDecodeError, csv.Error) as error:
        raise DataError(f"cannot read table {path}: {one_line(error)}; save it as UTF-8 text with a header row") from None
    if not rows:
        raise DataError(f"{path} is empty; it needs a header row and at least one data row")
    header = [name.strip() for name in rows[0][1]]
    _check_header(path, header)
    for line, row in rows[1:]:
        if len(row) != len(header):
            raise DataError(
                f"{path} line {line} has {len(row)} cells but the header has {len(header)}; give every row one cell per column"
            )
    if len(rows) == 1:
        raise DataError(f"{path} has a header but zero data rows; add at least one row")
    cells = np.char.strip(np.array([row for _, row in rows[1:]], dtype=str))
    return header, cells, np.array([line for line, _ in rows[1:]])


def _bounded_lines(handle: TextIO, path: Path) -> Iterator[str]:
    """The lines of ``handle``; one longer than MAX_LINE_CHARS is an error before it is held whole in memory."""
    for number, line in enumerate(iter(lambda: handle.readline(MAX_LINE_CHARS + 1), ""), start=1):
        if len(line) > MAX_LINE_CHARS:
            raise DataError(f"{path} line {number} is longer than {MAX_LINE_CHARS} characters; a table needs one row "
                            "per line (save it with line breaks, or save large arrays with numpy.save as .npy)")
        yield line


def _check_header(path: Path, header: list[str]) -> None:
    if all(_is_number(name) for name in header):
        raise DataError(f"{path} has no header row (its first row {header[:4]} is all numbers); add a row naming the columns")
    duplicates = sorted({name for name in header if header.count(name) > 1})
    if duplicates or "" in header:
        raise DataError(f"{path} header has duplicate or empty column names {duplicates or ['']}; give each column its own name")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _numeric_columns(path: Path, header: list[str], cells: np.ndarray, lines: np.ndarray, label: str | None) -> np.ndarray:
    """The cells as float64; an empty cell becomes NaN (reported later); text names its column and line."""
    cells = np.where(cells == "", "nan", cells)
    values = np.empty(cells.shape, dtype=np.float64)
    for column, name in enumerate(header):
        try:
            values[:, column] = cells[:, column].astype(np.float64)
        except ValueError:
            row = next(r for r, cell in enumerate(cells[:, column]) if not _is_number(cell))
            fix = ("encode the classes as integers 0..K-1" if name == label else
                   f"encode it as numbers, drop the column, or read it as the labels (--label-column {name})")
            raise DataError(
                f"column {name!r} of {path} is not numeric (line {lines[row]} holds {cells[row, column]!r}); {fix}"
            ) from None
    return values


def _pick_label_column(path: Path, header: list[str], label_column: str | None) -> str | None:
    if label_column is not None:
        if label_column not in header:
            raise DataError(
                f"label_column={label_column!r} is not a column of {path}{did_you_mean(label_column, header)}; "
                f"its columns are {header}"
            )
        return label_column
    lowered = {name.lower(): name for name in header}
    found = next((lowered[name] for name in LABEL_COLUMN_NAMES if name in lowered), None)
    if found is not None:
        logger.info("%s: using column %r as the labels", path, found)
    return found
