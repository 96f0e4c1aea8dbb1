"""Folders of PNG/JPEG images as one array, labelled by class subfolder; every image's size is checked from its header first.

Image headers are read before any pixel is decoded, so an image that claims 15000x15000 pixels
in a 14 KB file (a decompression bomb), images of mixed sizes, or a folder that would not fit in
memory are refused in one line naming the file, before the decoding starts.

>>> folder = read_image_folder(Path("photos/"))  # doctest: +SKIP
>>> folder.x.shape, folder.class_names           # doctest: +SKIP
((120, 3, 64, 64), ['cats', 'dogs'])
"""
from __future__ import annotations

import logging
import math
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import DataError, one_line
from .limits import MAX_IMAGE_PIXELS, check_file, check_fits_in_memory, check_folder, os_error

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
GRAY_MODES = ("1", "L", "LA", "La")  # read as one channel, like the 16-bit "I;16" / "I" modes
BYTES_PER_VALUE = 6  # decoded uint8 + its stacked copy + the float32 tensor it becomes
T = TypeVar("T")


@dataclass
class ImageFolder:
    """The images of a folder stacked into one array, with labels from class subfolders."""

    x: np.ndarray  # (N, C, H, W) uint8, or float32 in [0, 1] when some image has more than 8 bits
    y: np.ndarray | None  # (N,) int64 class ids, or None for a flat folder
    class_names: list[str] | None


@dataclass
class FolderScan:
    """What the listing and the image headers of a folder say, before any pixel is decoded."""

    folder: Path
    files: list[Path]  # sorted, class by class
    labels: np.ndarray | None  # (N,) int64 class ids, or None for a flat folder
    class_names: list[str] | None
    sample_shape: tuple[int, int, int]  # (C, H, W) every image is read as: C = 3 if any image is in colour

    @property
    def float32_bytes(self) -> int:
        """Bytes the decoded folder takes as float32 samples in [0, 1]."""
        return len(self.files) * 4 * math.prod(self.sample_shape)


def scan_image_folder(folder: Path) -> FolderScan:
    """List the PNG/JPEG images of ``folder`` and check every header (regular file, not a bomb, one size).

    >>> scan_image_folder(Path("photos/")).sample_shape  # doctest: +SKIP
    (3, 64, 64)
    """
    check_folder(folder)
    try:
        files, labels, class_names = _list_images(folder)
    except OSError as error:
        raise os_error(error, Path(error.filename or folder), "image folder") from None
    channels, (width, height) = _check_headers(folder, files)
    y = np.asarray(labels, dtype=np.int64) if class_names is not None else None
    return FolderScan(folder, files, y, class_names, (channels, height, width))


def read_image_folder(folder: Path, scan: FolderScan | None = None) -> ImageFolder:
    """PNG/JPEG images from ``folder``: loose (unlabelled), or one subfolder per class (labels by sorted name).

    Grayscale images give 1 channel, colour ones 3 (alpha is dropped; a folder mixing both
    is read as colour). All images must have the same size, at most MAX_IMAGE_PIXELS each.
    ``scan`` is :func:`scan_image_folder`'s answer for ``folder``, when it was taken already.
    """
    scan = scan or scan_image_folder(folder)
    channels, height, width = scan.sample_shape
    n_bytes = len(scan.files) * channels * width * height * BYTES_PER_VALUE
    check_fits_in_memory(n_bytes, str(folder), f"{len(scan.files)} images of {width}x{height} pixels")
    images = [_read_image(path) for path in scan.files]  # (C, H, W) each
    return ImageFolder(_stack(images, folder), scan.labels, scan.class_names)


def read_images_at_own_size(folder: Path, channels: int, limit: int) -> tuple[list[Path], list[np.ndarray]]:
    """The first ``limit`` images of ``folder`` (in :func:`read_image_folder`'s order), each at its own size as
    (channels, H, W) float32 in [0, 1], for a model that takes any image size. Headers are checked first, as
    for a folder of one size; a colour image for a 1-channel model is refused.

    >>> paths, images = read_images_at_own_size(Path("photos/"), 3, limit=8)  # doctest: +SKIP
    """
    check_folder(folder)
    try:
        files = _list_images(folder)[0][:limit]
    except OSError as error:
        raise os_error(error, Path(error.filename or folder), "image folder") from None
    for path in files:
        _, mode = _checked_header(path)
        if channels == 1 and not _is_gray(mode):
            raise DataError(f"image {path} is in colour ({mode}) but the model takes 1 channel; convert the images "
                            "to grayscale, or use a model of 3 channels")
    return files, [read_unit_image(path, channels) for path in files]


def read_unit_image(path: Path, channels: int) -> np.ndarray:
    """One image as (channels, H, W) float32 in [0, 1], the values :func:`read_image_folder` and
    ``load_data`` give it (8-bit / 255, 16-bit / 65535; grayscale repeated where the folder is in colour)."""
    image = _read_image(path)
    if image.shape[0] < channels:
        image = np.repeat(image, channels, axis=0)
    if image.dtype == np.uint8:
        values = np.ascontiguousarray(image, dtype=np.float32)
        values /= np.float32(255.0)  # as vaezoo.data.arrays converts uint8 rows
        return values
    return image


def _list_images(folder: Path) -> tuple[list[Path], list[int], list[str] | None]:
    """(image paths, their labels, class names or None); an empty folder is an error."""
    loose = _images_in(folder, recursive=False)
    class_dirs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    for class_dir in class_dirs:
        check_folder(class_dir, "class folder")  # an unreadable one would look empty to rglob
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
    """Everything named like an image that is not a folder: a FIFO, device or broken link named a.png is refused later."""
    candidates = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(
        path for path in candidates
        if path.suffix.lower() in IMAGE_SUFFIXES and not path.is_dir() and not _is_hidden(path.relative_to(folder))
    )


def _is_hidden(relative: Path) -> bool:
    return any(part.startswith(".") for part in relative.parts)


def _check_headers(folder: Path, files: list[Path]) -> tuple[int, tuple[int, int]]:
    """(channels, (width, height)) from the headers alone; a file that is not a regular image, a bomb, or mixed
    sizes is refused."""
    first_of_size: dict[tuple[int, int], Path] = {}
    channels = 1
    for path in files:
        size, mode = _checked_header(path)
        first_of_size.setdefault(size, path)
        if len(first_of_size) > 1:
            (size_a, path_a), (size_b, path_b) = list(first_of_size.items())[:2]
            raise DataError(
                f"images in {folder} have different sizes: {path_a} is {size_a[0]}x{size_a[1]} but {path_b} is "
                f"{size_b[0]}x{size_b[1]}; resize them all to one size"
            )
        channels = max(channels, 1 if _is_gray(mode) else 3)
    (width, height), = first_of_size
    return channels, (width, height)


def _checked_header(path: Path) -> tuple[tuple[int, int], str]:
    """((width, height), mode) from the header alone; a file that is not a regular image, or a bomb, is refused."""
    size, mode = _with_image(path, lambda image: (image.size, image.mode))
    if size[0] * size[1] > MAX_IMAGE_PIXELS:
        raise _too_large(path, f"{size[0]}x{size[1]} pixels")
    return size, mode


def _is_gray(mode: str) -> bool:
    return mode in GRAY_MODES or mode.startswith("I")  # 16-bit grayscale PNGs open as I;16 or I


def _read_image(path: Path) -> np.ndarray:
    """(C, H, W): uint8 for 8-bit images, float32 in [0, 1] for 16-bit ones."""
    return _with_image(path, _decode)


def _decode(image: Image.Image) -> np.ndarray:
    image.load()
    if image.mode.startswith("I"):  # 16-bit grayscale PNGs open as I;16 or I
        return (np.asarray(image, dtype=np.float32) / 65535.0).clip(0.0, 1.0)[None]
    if image.mode in GRAY_MODES:
        return np.asarray(image.convert("L"))[None]
    return np.asarray(image.convert("RGB")).transpose(2, 0, 1)  # (H, W, 3) -> (3, H, W)


def _with_image(path: Path, use: Callable[[Image.Image], T]) -> T:
    """``use(image)`` on the opened image at ``path``, with every way of failing turned into one DataError naming it.

    Pillow's own decompression-bomb warning and error become our "too large" error.
    """
    check_file(path, "image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                return use(image)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        pixels = re.search(r"\((\d+) pixels\)", str(error))
        raise _too_large(path, f"{pixels.group(1) if pixels else 'too many'} pixels") from None
    except UnidentifiedImageError as error:
        raise _unreadable(path, error) from None
    except OSError as error:
        raise (os_error(error, path, "image") if error.errno is not None else _unreadable(path, error)) from None
    except (ValueError, SyntaxError, EOFError) as error:
        raise _unreadable(path, error) from None


def _unreadable(path: Path, error: Exception) -> DataError:
    return DataError(f"cannot read image {path}: {one_line(error)}; re-save it as PNG or JPEG, or delete it")


def _too_large(path: Path, size: str) -> DataError:
    side = int(MAX_IMAGE_PIXELS**0.5)
    return DataError(
        f"image {path} has {size}, too large to decode safely (the limit is {MAX_IMAGE_PIXELS} pixels, e.g. "
        f"{side}x{side}; a small file that claims a huge image is a decompression bomb); resize it, or delete it"
    )


def _stack(images: list[np.ndarray], folder: Path) -> np.ndarray:
    """One (N, C, H, W) array: grayscale promoted to RGB if the folder mixes them, uint8 -> float if bit depths mix."""
    if len({image.shape[0] for image in images}) > 1:
        logger.info("%s mixes grayscale and colour images; reading all as colour (3 channels)", folder)
        images = [np.repeat(image, 3, axis=0) if image.shape[0] == 1 else image for image in images]
    if len({image.dtype for image in images}) > 1:
        images = [image / np.float32(255.0) if image.dtype == np.uint8 else image for image in images]
    return np.stack(images)
