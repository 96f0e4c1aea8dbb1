"""Crash-safe files: atomic writes, and training state (model, optimizer, RNG) in safetensors.

Every file is written to a temporary name in the same folder, fsynced, then renamed over the
target, so a crash or SIGKILL at any moment leaves either the old file or the new one, never a
torn one. Tensors go to safetensors; scalars and structure go to a small JSON beside them.
Nothing here ever unpickles.
"""
from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .errors import VAEZooError


class CheckpointError(VAEZooError):
    """A checkpoint or weights file that is missing, truncated or does not fit the model."""


def atomic_write(path: str | Path, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)``, fsync the result, then rename it to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """Write tensors to safetensors atomically (made contiguous and unshared first)."""
    ready = {name: tensor.detach().contiguous().clone() for name, tensor in tensors.items()}
    atomic_write(path, lambda tmp: save_file(ready, tmp, metadata=metadata))


def load_tensors(path: str | Path, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Read a safetensors file, turning a missing, truncated or corrupted file into one clear error."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file {path} does not exist")
    try:
        return load_file(str(path), device=str(device))
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise CheckpointError(
            f"{path} is not a readable safetensors file ({' '.join(str(error).split())}); "
            "it may be truncated or corrupted: re-download or re-train it"
        ) from None


def load_state_dict_strict(module: torch.nn.Module, tensors: dict[str, torch.Tensor], source: str) -> None:
    """Load weights refusing missing or unexpected keys and shape mismatches, naming them."""
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
