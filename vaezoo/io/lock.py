"""An exclusive OS lock on a folder, held while one process writes a run into it; a second process is refused.

The lock is ``flock`` on ``<folder>/.vaezoo.lock``, which holds the owner's process id. The kernel
releases it when the owner exits, however it exits (a crash or SIGKILL included), so a stale lock
file never blocks a later run.

>>> with hold_folder_lock("runs/vae"):  # doctest: +SKIP
...     train_into("runs/vae")
"""
from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from vaezoo.errors import ConfigError, FolderInUseError, StorageError
from vaezoo.io.atomic import describe_os_error

LOCK_NAME = ".vaezoo.lock"


@contextlib.contextmanager
def hold_folder_lock(folder: str | Path, action: str = "training into it") -> Iterator[None]:
    """Hold ``folder``'s lock for the block; FolderInUseError naming the live owner when another process holds it."""
    path = Path(folder) / LOCK_NAME
    if path.parent.exists() and not path.parent.is_dir():
        raise ConfigError(f"{path.parent} is a file, not a folder; choose another --out (a folder, new or a run's)")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a+", encoding="utf-8")  # noqa: SIM115 (held open for the whole block)
    except OSError as error:
        raise StorageError(f"cannot lock {path.parent}: {describe_os_error(error)}") from None
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip() or "unknown"
            raise FolderInUseError(
                f"{path.parent} is in use by another vaezoo process (pid {owner}) that is {action}; wait for it to "
                "finish or stop it, or choose another --out"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield
    finally:
        handle.close()  # closing releases the lock
