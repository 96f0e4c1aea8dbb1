"""Read and write IDX files, the format of MNIST and Fashion-MNIST, gzip-compressed or raw.

An IDX file is a 4-byte magic number (two zero bytes, a dtype code, the number of dims),
one big-endian uint32 per dim, then the values in big-endian C order.

>>> import numpy as np, tempfile, os
>>> path = os.path.join(tempfile.mkdtemp(), "images-idx3-ubyte.gz")
>>> write_idx(path, np.zeros((2, 3, 3), dtype=np.uint8))
>>> read_idx(path).shape
(2, 3, 3)
"""
from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ..errors import DataError, one_line
from .limits import check_file, check_fits_in_memory, claimed_bytes, os_error

# dtype code -> big-endian numpy dtype (the IDX spec's table)
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
GZIP_MAGIC = b"\x1f\x8b"


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """The array stored in the IDX file ``path`` (gzip or raw, told apart by content, not name).

    Raises :class:`DataError` naming the file for a bad magic number or dtype code, a
    truncated or over-long file (expected vs actual bytes), a corrupt gzip stream, or a header
    that claims more than memory holds. Sizes are checked against the header before the values
    are read, and a gzip stream is decompressed only as far as its header says, so a small file
    cannot decode to gigabytes.
    """
    path = Path(path)
    file_size = check_file(path, "IDX file")
    try:
        with _open_stream(path) as (stream, compressed):
            return _read_stream(stream, path, None if compressed else file_size)
    except (EOFError, zlib.error, gzip.BadGzipFile) as error:
        raise DataError(
            f"IDX file {path} is a truncated or corrupt gzip file ({one_line(error)}); download or copy it again"
        ) from None
    except OSError as error:
        raise os_error(error, path, "IDX file") from None


def write_idx(path: str | os.PathLike[str], array: np.ndarray) -> None:
    """Write ``array`` as an IDX file, gzip-compressed when ``path`` ends in ``.gz``."""
    array = np.asarray(array)
    codes = {dtype.newbyteorder("="): code for code, dtype in IDX_DTYPES.items()}
    code = codes.get(array.dtype.newbyteorder("="))
    if code is None:
        raise DataError(f"cannot write {array.dtype} to IDX file {path}; use one of uint8, int8, int16, int32, float32, float64")
    header = struct.pack(">BBBB", 0, 0, code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + np.ascontiguousarray(array, dtype=IDX_DTYPES[code]).tobytes()
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as handle:
        handle.write(payload)


@contextmanager
def _open_stream(path: Path) -> Iterator[tuple[BinaryIO, bool]]:
    """(the decompressed byte stream, whether it is gzip) of ``path``, told apart by the gzip magic."""
    with path.open("rb") as handle:
        compressed = handle.read(2) == GZIP_MAGIC
        handle.seek(0)
        if not compressed:
            yield handle, False
            return
        with gzip.GzipFile(fileobj=handle, mode="rb") as stream:
            yield stream, True  # type: ignore[misc]


def _read_stream(stream: BinaryIO, path: Path, file_size: int | None) -> np.ndarray:
    """The array from an IDX byte stream; ``file_size`` is the raw file's size (None for gzip: unknown until read)."""
    head = stream.read(4)
    ndim = head[3] if len(head) == 4 else 0
    head += stream.read(4 * ndim)
    code, shape, header_size = _parse_header(head, path)
    dtype = IDX_DTYPES[code]
    n_bytes = claimed_bytes(shape, dtype.itemsize)
    expected = header_size + n_bytes
    if file_size is not None and file_size != expected:
        raise _size_mismatch(path, shape, expected, str(file_size))
    check_fits_in_memory(n_bytes + math.prod(shape) * 4, str(path), f"IDX values of shape {shape} ({dtype.name})")
    values = bytearray(n_bytes)  # writable, so torch can share it
    got = _read_into(stream, values)
    if got < n_bytes:
        raise _size_mismatch(path, shape, expected, str(header_size + got))
    if stream.read(1):  # one byte more is enough to know: the rest of a gzip stream is never decompressed
        raise _size_mismatch(path, shape, expected, f"more than {expected}")
    return np.frombuffer(values, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="), copy=False)


def _read_into(stream: BinaryIO, buffer: bytearray) -> int:
    """Fill ``buffer`` from ``stream`` until it is full or the stream ends; the number of bytes read."""
    view, got = memoryview(buffer), 0
    while got < len(buffer):
        n = stream.readinto(view[got:])
        if not n:
            break
        got += n
    return got


def _size_mismatch(path: Path, shape: tuple[int, ...], expected: int, holds: str) -> DataError:
    problem = "has trailing bytes" if holds.startswith("more") or int(holds) > expected else "is truncated"
    return DataError(
        f"IDX file {path} {problem}: its header {shape} needs {expected} bytes but it holds {holds}; "
        "download or copy it again"
    )


def _parse_header(raw: bytes | bytearray, path: Path) -> tuple[int, tuple[int, ...], int]:
    """(dtype code, shape, header size in bytes) from the start of an IDX file."""
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(
            f"{path} is not an IDX file: it starts with {bytes(raw[:4]).hex() or 'nothing'} instead of 0000 "
            "followed by a dtype code and a dim count; pass an IDX file such as train-images-idx3-ubyte.gz"
        )
    code, ndim = raw[2], raw[3]
    if code not in IDX_DTYPES:
        known = ", ".join(f"0x{c:02X}" for c in IDX_DTYPES)
        raise DataError(f"IDX file {path} has unknown dtype code 0x{code:02X}; the format allows {known}")
    if ndim == 0:
        raise DataError(f"IDX file {path} declares 0 dims; an IDX array needs at least one")
    header_size = 4 + 4 * ndim
    if len(raw) < header_size:
        raise DataError(
            f"IDX file {path} is truncated: its header needs {header_size} bytes for {ndim} dims but it holds {len(raw)}; "
            "download or copy it again"
        )
    shape = struct.unpack(f">{ndim}I", bytes(raw[4:header_size]))
    return code, tuple(int(d) for d in shape), header_size
