"""Crash-safe writes: a temporary file in the same folder, fsynced, then renamed over the target.

A crash or SIGKILL at any moment leaves either the old file or the new one, never a torn one; a full
disk leaves the old one and raises :class:`~vaezoo.errors.StorageError`.
"""
from __future__ import annotations

import errno
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vaezoo.errors import StorageError

_UMASK = os.umask(0)
os.umask(_UMASK)  # read once at import: os.umask can only be read by setting it


TEMP_SUFFIX = ".tmp"


def atomic_write(path: str | Path, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)``, fsync the result, then rename it to ``path``.

    Any OSError (a full disk, a file-size limit, a read-only folder) becomes a one-line
    :class:`StorageError`; the temporary file is removed and ``path`` keeps its old contents.
    """
    path = Path(path)
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
        os.close(fd)
        write(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the mode open() would have
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError as error:
        _remove_quietly(tmp)
        raise StorageError(f"cannot write {path}: {describe_os_error(error)}; its previous version, if any, is intact") from None
    except BaseException:
        _remove_quietly(tmp)
        raise


def describe_os_error(error: OSError) -> str:
    """A short reason for a failed write, with the usual cure."""
    reason = error.strerror or str(error)
    if error.errno == errno.ENOSPC:
        return f"the disk is full ({reason}); free some space"
    if error.errno == errno.EFBIG:
        return f"the file-size limit was reached ({reason}); raise the limit (ulimit -f) or free space"
    if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"no permission to write there ({reason}); choose a writable folder"
    return reason


def _remove_quietly(tmp: str | None) -> None:
    if tmp is not None:
        try:
            Path(tmp).unlink(missing_ok=True)
        except OSError:
            pass


def remove_stale_temp_files(folder: str | Path) -> list[Path]:
    """Delete the temporary files that a process killed inside :func:`atomic_write` left in ``folder``."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = [p for p in folder.glob(f".*{TEMP_SUFFIX}") if p.is_file()]
    for path in stale:
        _remove_quietly(str(path))
    return stale


def fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_text(path: str | Path, text: str) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)

    atomic_write(path, write)


def atomic_write_json(path: str | Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")
