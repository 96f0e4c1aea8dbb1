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
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from ..errors import DataError

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
    truncated or over-long file (expected vs actual bytes), or a corrupt gzip stream.
    """
    path = Path(path)
    raw = _read_bytes(path)
    code, shape, header_size = _parse_header(raw, path)
    dtype = IDX_DTYPES[code]
    expected = header_size + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        problem = "is truncated" if len(raw) < expected else "has trailing bytes"
        raise DataError(
            f"IDX file {path} {problem}: its header {shape} needs {expected} bytes but it holds {len(raw)}; "
            "download or copy it again"
        )
    values = np.frombuffer(raw, dtype=dtype, offset=header_size).reshape(shape)
    return values.astype(dtype.newbyteorder("="), copy=False)


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


def _read_bytes(path: Path) -> bytearray:
    """The file's bytes, decompressed when it starts with the gzip magic; writable, so torch can share them."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise DataError(f"cannot read IDX file {path}: {error.strerror or error}; check that it exists and is readable") from None
    if not data.startswith(GZIP_MAGIC):
        return bytearray(data)
    try:
        return bytearray(zlib.decompress(data, wbits=zlib.MAX_WBITS | 16))
    except zlib.error as error:
        raise DataError(
            f"IDX file {path} is a truncated or corrupt gzip file ({error}); download or copy it again"
        ) from None


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
