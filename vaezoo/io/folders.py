"""Replacing a whole folder at once: build the new one beside it, then swap the two in one atomic rename.

A model folder's config.json and model.safetensors must fit each other, so rewriting them one by one
in place is not enough: a kill between the two writes leaves new weights beside the old config. Here
the new folder is built as a hidden sibling, then exchanged with the old one by
``renameat2(RENAME_EXCHANGE)`` (Linux 3.15+), so a crash or SIGKILL at any moment leaves the old
folder or the new one, never a mix. Files of the old folder that the new one does not replace (a
run's metrics, checkpoints, a hand-written card) are carried over as hard links, at no cost.

>>> replace_folder("my-vae", lambda tmp: write_model_files(tmp))  # doctest: +SKIP
"""
from __future__ import annotations

import ctypes
import errno
import os
import shutil
import tempfile
from collections.abc import Callable, Collection
from pathlib import Path

from vaezoo.errors import StorageError
from vaezoo.io.atomic import describe_os_error, fsync_dir

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2
STAGING_MARK = ".staging-"  # hidden siblings named .<folder>.staging-XXXX


def replace_folder(target: str | Path, fill: Callable[[Path], None], replaced: Collection[str] = ()) -> Path:
    """Make ``target`` the folder that ``fill(staging)`` writes, atomically.

    Entries of an existing ``target`` are carried over (hard links; copies across filesystems) except the
    names in ``replaced``, which ``fill`` writes anew. A failure inside ``fill`` leaves ``target`` untouched.
    """
    target = Path(target)
    if target.exists() and not target.is_dir():
        raise StorageError(f"{target} is a file, not a folder; choose a folder path")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_staging(target)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}{STAGING_MARK}", dir=target.parent))
    except OSError as error:
        raise StorageError(f"cannot write {target}: {describe_os_error(error)}") from None
    try:
        if target.is_dir():
            _carry_over(target, staging, set(replaced))
        fill(staging)
        _swap_in(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)  # the old folder, or the new one if the swap happened, stays
        raise
    shutil.rmtree(staging, ignore_errors=True)  # after an exchange: the old folder's contents
    return target


def remove_stale_staging(target: Path) -> None:
    """Delete the staging folders that a process killed inside :func:`replace_folder` left beside ``target``."""
    for stale in target.parent.glob(f".{target.name}{STAGING_MARK}*"):
        shutil.rmtree(stale, ignore_errors=True)


def _carry_over(source: Path, staging: Path, replaced: set[str]) -> None:
    for entry in source.iterdir():
        if entry.name in replaced:
            continue
        destination = staging / entry.name
        if entry.is_dir() and not entry.is_symlink():
            shutil.copytree(entry, destination, symlinks=True, copy_function=_link_or_copy)
        else:
            _link_or_copy(str(entry), str(destination))


def _link_or_copy(source: str, destination: str) -> None:
    try:
        os.link(source, destination, follow_symlinks=False)
    except OSError:
        shutil.copy2(source, destination, follow_symlinks=False)


def _swap_in(staging: Path, target: Path) -> None:
    """Rename ``staging`` to ``target``: a plain rename when target is absent, else an atomic exchange."""
    try:
        if not target.exists():
            os.rename(staging, target)
        elif not _exchange(staging, target):
            # No renameat2 here (not Linux, or an old kernel or filesystem): two renames, with a short window
            # in which a kill leaves the new folder at its staging name and the old one at target.
            old = staging.with_name(staging.name + "-old")
            os.rename(target, old)
            os.rename(staging, target)
            os.rename(old, staging)
        fsync_dir(target.parent)
    except OSError as error:
        raise StorageError(f"cannot replace {target}: {describe_os_error(error)}; its previous version is intact") from None


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one atomic step (renameat2 RENAME_EXCHANGE); False where the system has no such call."""
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(b))
