"""Checks made before a data file is read: its type, its permissions, and sizes bounded against the file and memory.

A FIFO or a device given as data would block or never end, a tiny compressed file can decode to
gigabytes, and a header can claim more bytes than its file holds. Each is refused here, naming the
file, before a byte of its data is read.

>>> check_fits_in_memory(10**6, "demo.npy", "1 MB of samples")
>>> check_fits_in_memory(10**30, "demo.npy", "(10**24, 784) float32")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
vaezoo.errors.DataError: demo.npy holds (10**24, 784) float32, which needs about ... GiB of memory to load, more than ...
"""
from __future__ import annotations

import errno
import math
import os
import stat
from pathlib import Path

from ..errors import DataError

MAX_IMAGE_PIXELS = 8192 * 8192  # per image; a VAE trains on far smaller ones, and a larger one is most likely a bomb
MAX_LINE_CHARS = 2**20  # per line of a CSV table (about 100k numeric columns)
TABLE_BYTES_PER_FILE_BYTE = 16  # Python's cells and their numpy copies take about this much memory per byte of CSV
MAX_CLASSES = 2**16  # class ids are 0..MAX_CLASSES-1: each class costs a conditional model an embedding row
# A file with fewer of its bytes stored is mostly holes (a sparse file: a bomb of zeros, like a tiny compressed file
# that decodes to gigabytes), never streamed from disk; transparent compression (zstd on btrfs/ZFS) of real
# samples stores far more than this.
MIN_STORED_FRACTION = 1 / 16

_KINDS = {  # what a non-regular file is, for the message
    stat.S_IFIFO: "a named pipe (FIFO), which blocks until something writes to it",
    stat.S_IFCHR: "a character device (like /dev/zero), which may never end",
    stat.S_IFBLK: "a block device, not a data file",
    stat.S_IFSOCK: "a socket, not a data file",
}


def gib(n_bytes: float) -> str:
    """``n_bytes`` in GiB for messages, e.g. ``'12.5 GiB'``."""
    return f"{n_bytes / 2**30:.1f} GiB"


def memory_bytes() -> int:
    """This machine's memory in bytes: physical memory, or the cgroup's limit when it is lower."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not a POSIX system: no bound we can trust
        total = 2**63
    try:
        limit = int(Path("/sys/fs/cgroup/memory.max").read_text().strip())  # "max" when unlimited
    except (OSError, ValueError):
        return total
    return min(total, limit)


def check_fits_in_memory(n_bytes: int, source: str, what: str) -> None:
    """Raise a :class:`DataError` when loading ``what`` from ``source`` needs ``n_bytes``, more than the machine has."""
    available = memory_bytes()
    if n_bytes > available:
        raise DataError(
            f"{source} holds {what}, which needs about {gib(n_bytes)} of memory to load, more than this machine's "
            f"{gib(available)}; use fewer rows or smaller samples (or check that the file is what you meant)"
        )


def stored_fraction(path: Path) -> float:
    """The share of the regular file ``path``'s size that the file system has blocks for: about 1 for a file written
    out, near 0 for a sparse file of holes (which reads as zeros); 1 where the system does not say."""
    info = path.stat()
    blocks = getattr(info, "st_blocks", None)
    return 1.0 if blocks is None or info.st_size == 0 else min(1.0, blocks * 512 / info.st_size)


def check_file(path: Path, what: str = "data file") -> int:
    """The size in bytes of ``path`` if it is a readable, non-empty regular file; a :class:`DataError` naming it otherwise.

    Symbolic links are followed; a loop, a dangling link, a FIFO, a device or a socket is refused
    without being opened (opening a FIFO blocks until someone writes to it).
    """
    info = _stat(path, what)
    if stat.S_ISDIR(info.st_mode):
        raise DataError(f"{what} {path} is a folder, not a file; pass the file itself")
    kind = _KINDS.get(stat.S_IFMT(info.st_mode))
    if kind is not None or not stat.S_ISREG(info.st_mode):
        raise DataError(f"{what} {path} is {kind or 'not a regular file'}; pass a regular file")
    if not os.access(path, os.R_OK):
        raise unreadable(path, what)
    if info.st_size == 0:
        raise DataError(f"cannot read {what} {path}: it is empty (0 bytes); copy it again, or delete it")
    return int(info.st_size)


def check_folder(path: Path, what: str = "data folder") -> None:
    """Raise a :class:`DataError` unless ``path`` is a folder this process may list and enter."""
    info = _stat(path, what)
    if not stat.S_ISDIR(info.st_mode):
        raise DataError(f"{what} {path} is not a folder")
    if not os.access(path, os.R_OK | os.X_OK):
        raise unreadable(path, what)


def check_source(path: Path) -> bool:
    """True if the data path ``path`` is a folder, False if it is a regular file; a :class:`DataError` otherwise."""
    if stat.S_ISDIR(_stat(path, "data path").st_mode):
        check_folder(path)
        return True
    check_file(path)
    return False


def unreadable(path: Path, what: str) -> DataError:
    """The error for a file or folder this process has no permission to read."""
    return DataError(f"cannot read {what} {path}: permission denied; give yourself read access (chmod u+rX) or copy it")


def os_error(error: OSError, path: Path, what: str) -> DataError:
    """An OSError met while reading ``path`` as one line naming it (permission, loop, missing, or the system's words)."""
    if isinstance(error, PermissionError):
        return unreadable(path, what)
    if error.errno == errno.ELOOP:
        return DataError(f"{what} {path} is a symbolic link loop; point the link at a real file or delete it")
    if isinstance(error, FileNotFoundError):
        link = f" (a link to {os.readlink(path)} that does not exist)" if path.is_symlink() else ""
        return DataError(f"{what} {path} does not exist{link}; check the path")
    return DataError(f"cannot read {what} {path}: {error.strerror or error}; check that it is a readable file")


def _stat(path: Path, what: str) -> os.stat_result:
    try:
        return path.stat()  # follows links, so a link to /dev/zero is seen as the device it is
    except OSError as error:
        raise os_error(error, path, what) from None


def claimed_bytes(shape: tuple[int, ...], itemsize: int) -> int:
    """Bytes an array of ``shape`` claims, as an exact Python int (numpy's int64 product overflows)."""
    return math.prod(shape) * itemsize
