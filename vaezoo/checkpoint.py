"""Crash-safe files: atomic writes, and training state (model, optimizer, RNG) in safetensors.

Every file is written to a temporary name in the same folder, fsynced, then renamed over the
target, so a crash or SIGKILL at any moment leaves either the old file or the new one, never a
torn one; a full disk leaves the old one and raises :class:`StorageError`. Tensors go to
safetensors with a SHA-256 of their contents in the metadata, so a corrupted file is an error
rather than silently different weights. Nothing here ever unpickles.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as serialize_tensors

from .errors import StorageError, VAEZooError

_UMASK = os.umask(0)
os.umask(_UMASK)  # read once at import: os.umask can only be read by setting it
CHECKSUM_KEY = "vaezoo_sha256"  # metadata entry holding the SHA-256 of the tensors (see tensor_checksum)
TEMP_SUFFIX = ".tmp"


class CheckpointError(VAEZooError):
    """A checkpoint or weights file that is missing, truncated, corrupted or does not fit the model."""


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
        _fsync_dir(path.parent)
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


def _fsync_dir(folder: Path) -> None:
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


def tensor_checksum(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over every tensor's name, dtype, shape and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """Write tensors to safetensors atomically (made contiguous and unshared first), with their checksum."""
    ready = {name: tensor.detach().contiguous().clone() for name, tensor in tensors.items()}
    # Serialized in memory and written by Python, so that a full disk is an OSError (safetensors'
    # own writer reports it as a generic SafetensorError).
    data = serialize_tensors(ready, metadata={**(metadata or {}), CHECKSUM_KEY: tensor_checksum(ready)})

    def write(tmp: str) -> None:
        with open(tmp, "wb") as handle:
            handle.write(data)

    atomic_write(path, write)


def read_tensors(path: str | Path, device: str | torch.device = "cpu") -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of a safetensors file; a missing, truncated or corrupted file is one CheckpointError.

    When the metadata holds a checksum (every file vaezoo writes does), the tensors must match it.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError, TypeError) as error:
        raise CheckpointError(
            f"{path} is not a readable safetensors file ({' '.join(str(error).split())}); "
            "it may be truncated or corrupted: re-download or re-train it"
        ) from None
    expected = metadata.get(CHECKSUM_KEY)
    if expected is not None and tensor_checksum(tensors) != expected:
        raise CheckpointError(
            f"{path} is corrupted: its tensors do not match the SHA-256 stored in it; re-download or re-train it"
        )
    return {name: tensor.to(device) for name, tensor in tensors.items()}, metadata


def load_tensors(path: str | Path, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Read a safetensors file, turning a missing, truncated or corrupted file into one clear error."""
    return read_tensors(path, device)[0]


def load_state_dict_strict(module: torch.nn.Module, tensors: dict[str, torch.Tensor], source: str) -> None:
    """Load weights refusing missing or unexpected keys, shape mismatches and NaN/Inf values, naming them."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    mismatched = [
        f"{key} {tuple(tensors[key].shape)} vs model {tuple(expected[key].shape)}"
        for key in expected
        if key in tensors and tensors[key].shape != expected[key].shape
    ]
    problems = []
    if missing:
        problems.append(f"missing keys {_few(missing)}")
    if unexpected:
        problems.append(f"unexpected keys {_few(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatches {_few(mismatched)}")
    if problems:
        raise CheckpointError(
            f"weights in {source} do not fit {type(module).__name__}: {'; '.join(problems)}; "
            "check that config.json matches the weights (same variant and config)"
        )
    non_finite = [key for key in expected if tensors[key].is_floating_point() and not bool(torch.isfinite(tensors[key]).all())]
    if non_finite:
        raise CheckpointError(
            f"weights in {source} hold NaN or Inf values in {_few(non_finite)}; they come from a diverged or "
            "corrupted run: use another checkpoint or re-train"
        )
    module.load_state_dict({key: tensors[key].to(expected[key].dtype) for key in expected})


def _few(items: list[str], n: int = 4) -> str:
    shown = ", ".join(items[:n])
    return shown + (f" and {len(items) - n} more" if len(items) > n else "")


def optimizer_to_tensors(optimizer: torch.optim.Optimizer, prefix: str) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimizer's state_dict into tensors (for safetensors) and JSON structure."""
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    layout: dict[str, dict[str, Any]] = {}
    for index, slots in state["state"].items():
        layout[str(index)] = {}
        for slot, value in slots.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{prefix}.{index}.{slot}"] = value
                layout[str(index)][slot] = "tensor"
            else:
                layout[str(index)][slot] = value
    return tensors, {"param_groups": state["param_groups"], "layout": layout}


def optimizer_from_tensors(
    optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], structure: dict, prefix: str
) -> None:
    state: dict[int, dict[str, Any]] = {}
    for index, slots in structure["layout"].items():
        state[int(index)] = {
            slot: tensors[f"{prefix}.{index}.{slot}"] if kind == "tensor" else kind for slot, kind in slots.items()
        }
    optimizer.load_state_dict({"state": state, "param_groups": structure["param_groups"]})


def rng_to_tensors(generator: torch.Generator) -> dict[str, torch.Tensor]:
    """The global CPU (and CUDA) RNG states and the data-order generator's, as uint8 tensors."""
    tensors = {"rng.torch": torch.get_rng_state(), "rng.data": generator.get_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    return tensors


def rng_from_tensors(tensors: dict[str, torch.Tensor], generator: torch.Generator) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    generator.set_state(tensors["rng.data"])
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])
