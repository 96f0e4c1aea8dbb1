"""Readers for user data: ``.npy`` / ``.npz`` arrays, CSV tables and folders of images.

Each returns raw numpy arrays; :mod:`vaezoo.data.arrays` checks shapes and values afterwards.

>>> x, y = read_array_file("faces.npz")                   # doctest: +SKIP
>>> table = read_table("iris.csv", label_column="species") # doctest: +SKIP
>>> images = read_image_folder("photos/")                  # doctest: +SKIP
"""
from __future__ import annotations

import csv
import logging
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import DataError, did_you_mean

logger = logging.getLogger(__name__)

ARRAY_SUFFIXES = (".npy", ".npz")
TABLE_SUFFIXES = (".csv", ".tsv")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
LABEL_COLUMN_NAMES = ("label", "class", "y")  # looked for, case-insensitively, in this order
NPZ_HELP = "save it with numpy.savez(path, x=samples, y=labels) (y is optional)"


def one_line(text: object) -> str:
    """``text`` with its line breaks folded, for embedding a library's message in ours."""
    return " ".join(str(text).split())


# ---------------------------------------------------------------- npy / npz


def read_array_file(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """(x, y or None) from a ``.npy`` (x only) or ``.npz`` (keys ``x`` and optional ``y``) file.

    Object arrays are refused: loading them would unpickle, and vaezoo never unpickles.
    """
    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.ndarray):
            return loaded, None
        with loaded:  # an NpzFile keeps the zip open until closed
            return _arrays_from_npz(loaded, path)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        if isinstance(error, DataError):
            raise
        raise DataError(f"cannot read {path}: {one_line(error)}; re-save it with numpy.save or numpy.savez") from None


def _arrays_from_npz(loaded: np.lib.npyio.NpzFile, path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    keys = list(loaded.keys())
    if "x" not in keys:
        raise DataError(f"{path} has keys {keys} but no 'x'{did_you_mean('x', keys)}; {NPZ_HELP}")
    extra = sorted(set(keys) - {"x", "y"})
    if extra:
        logger.info("%s: ignoring keys %s (only 'x' and 'y' are read)", path, extra)
    return loaded["x"], loaded["y"] if "y" in keys else None


# ---------------------------------------------------------------- CSV


@dataclass
class Table:
    """A numeric CSV table split into features and an optional label column."""

    x: np.ndarray  # (N, D) float64 feature columns
    y: np.ndarray | None  # (N,) float64 label column, or None
    feature_columns: list[str]
    label_column: str | None
    lines: np.ndarray  # (N,) the file line of each row, for messages


def read_table(path: Path, label_column: str | None = None) -> Table:
    """A CSV (comma) or TSV (tab) file with a header row and numeric columns.

    The label column is ``label_column`` if given, else the first column named
    label / class / y (any case), else there is none. Blank lines are skipped.
    """
    header, cells, lines = _read_cells(path)
    label = _pick_label_column(path, header, label_column)
    values = _numeric_columns(path, header, cells, lines, label)
    features = [name for name in header if name != label]
    if not features:
        raise DataError(f"{path} has no feature columns besides the label column {label!r}; add numeric feature columns")
    keep = [i for i, name in enumerate(header) if name != label]
    y = values[:, header.index(label)] if label is not None else None
    return Table(values[:, keep], y, features, label, lines)


def _read_cells(path: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(header, (N, C) stripped cell strings, (N,) line numbers); rows of the wrong length are an error."""
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle, delimiter=delimiter)
            rows = [(reader.line_num, row) for row in reader if row]
    except (OSError, UnicodeDecodeError, csv.Error) as error:
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
            fix = "encode the classes as integers 0..K-1" if name == label else "encode it as numbers or drop the column"
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


# ---------------------------------------------------------------- image folders


@dataclass
class ImageFolder:
    """The images of a folder stacked into one array, with labels from class subfolders."""

    x: np.ndarray  # (N, C, H, W) uint8, or float32 in [0, 1] when some image has more than 8 bits
    y: np.ndarray | None  # (N,) int64 class ids, or None for a flat folder
    class_names: list[str] | None


def read_image_folder(folder: Path) -> ImageFolder:
    """PNG/JPEG images from ``folder``: loose (unlabelled), or one subfolder per class (labels by sorted name).

    Grayscale images give 1 channel, colour ones 3 (alpha is dropped; a folder mixing both
    is read as colour). All images must have the same size.
    """
    files, labels, class_names = _list_images(folder)
    images: list[np.ndarray] = []
    first_of_size: dict[tuple[int, int], Path] = {}
    for path in files:
        image = _read_image(path)  # (C, H, W)
        size = (image.shape[2], image.shape[1])
        first_of_size.setdefault(size, path)
        if len(first_of_size) > 1:
            (size_a, path_a), (size_b, path_b) = list(first_of_size.items())[:2]
            raise DataError(
                f"images in {folder} have different sizes: {path_a} is {size_a[0]}x{size_a[1]} but {path_b} is "
                f"{size_b[0]}x{size_b[1]}; resize them all to one size"
            )
        images.append(image)
    y = np.asarray(labels, dtype=np.int64) if class_names is not None else None
    return ImageFolder(_stack(images, folder), y, class_names)


def _list_images(folder: Path) -> tuple[list[Path], list[int], list[str] | None]:
    """(image paths, their labels, class names or None); an empty folder is an error."""
    loose = _images_in(folder, recursive=False)
    class_dirs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    per_class = [_images_in(d, recursive=True) for d in class_dirs]
    if not any(per_class):
        if not loose:
            raise DataError(
                f"{folder} holds no images ({', '.join(IMAGE_SUFFIXES)}); add images, in one subfolder per class for labels"
            )
        return loose, [], None
    if loose:
        raise DataError(
            f"{folder} mixes {len(loose)} loose images (e.g. {loose[0].name}) with class subfolders; "
            "move them into a class subfolder or delete them"
        )
    for class_dir, paths in zip(class_dirs, per_class):
        if not paths:
            logger.warning("%s: class folder %r holds no images", folder, class_dir.name)
    files = [path for paths in per_class for path in paths]
    labels = [label for label, paths in enumerate(per_class) for _ in paths]
    return files, labels, [d.name for d in class_dirs]


def _images_in(folder: Path, recursive: bool) -> list[Path]:
    candidates = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(
        path for path in candidates
        if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file() and not _is_hidden(path.relative_to(folder))
    )


def _is_hidden(relative: Path) -> bool:
    return any(part.startswith(".") for part in relative.parts)


def _read_image(path: Path) -> np.ndarray:
    """(C, H, W): uint8 for 8-bit images, float32 in [0, 1] for 16-bit ones."""
    try:
        with Image.open(path) as image:
            image.load()
            return _image_to_array(image)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
        raise DataError(f"cannot read image {path}: {one_line(error)}; re-save it as PNG or JPEG, or delete it") from None


def _image_to_array(image: Image.Image) -> np.ndarray:
    if image.mode.startswith("I"):  # 16-bit grayscale PNGs open as I;16 or I
        return (np.asarray(image, dtype=np.float32) / 65535.0).clip(0.0, 1.0)[None]
    if image.mode in ("1", "L", "LA", "La"):
        return np.asarray(image.convert("L"))[None]
    return np.asarray(image.convert("RGB")).transpose(2, 0, 1)  # (H, W, 3) -> (3, H, W)


def _stack(images: list[np.ndarray], folder: Path) -> np.ndarray:
    """One (N, C, H, W) array: grayscale promoted to RGB if the folder mixes them, uint8 -> float if bit depths mix."""
    if len({image.shape[0] for image in images}) > 1:
        logger.info("%s mixes grayscale and colour images; reading all as colour (3 channels)", folder)
        images = [np.repeat(image, 3, axis=0) if image.shape[0] == 1 else image for image in images]
    if len({image.dtype for image in images}) > 1:
        images = [image / np.float32(255.0) if image.dtype == np.uint8 else image for image in images]
    return np.stack(images)
