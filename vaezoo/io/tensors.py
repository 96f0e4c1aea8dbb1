"""Tensors in safetensors with a SHA-256 of their contents, strict state-dict loading, optimizer and RNG state.

A corrupted file is an error rather than silently different weights. Nothing here ever unpickles.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as serialize_tensors

from vaezoo.errors import CheckpointError
from vaezoo.io.atomic import atomic_write

CHECKSUM_KEY = "vaezoo_sha256"  # metadata entry holding the SHA-256 of the tensors (see tensor_checksum)


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


def header_shapes(path: str | Path) -> dict[str, tuple[int, ...]] | None:
    """Each tensor's shape as a safetensors file's header gives it, without reading the tensors; None when the
    header cannot be read (then :func:`read_tensors` says what is wrong with the file)."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            return {name: tuple(handle.get_slice(name).get_shape()) for name in handle.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError, TypeError):
        return None


def check_shapes_fit(expected: dict[str, tuple[int, ...]], given: dict[str, tuple[int, ...]], source: str,
                     owner: str) -> None:
    """CheckpointError naming the missing and unexpected keys and the shape mismatches of ``given`` against ``expected``."""
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    mismatched = [f"{key} {given[key]} vs model {expected[key]}"
                  for key in expected if key in given and tuple(given[key]) != tuple(expected[key])]
    problems = []
    if missing:
        problems.append(f"missing keys {_few(missing)}")
    if unexpected:
        problems.append(f"unexpected keys {_few(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatches {_few(mismatched)}")
    if problems:
        raise CheckpointError(
            f"weights in {source} do not fit {owner}: {'; '.join(problems)}; "
            "check that config.json matches the weights (same variant and config)"
        )


def load_state_dict_strict(module: torch.nn.Module, tensors: dict[str, torch.Tensor], source: str) -> None:
    """Load weights refusing missing or unexpected keys, shape mismatches and NaN/Inf values, naming them."""
    expected = module.state_dict()
    check_shapes_fit({k: tuple(v.shape) for k, v in expected.items()}, {k: tuple(v.shape) for k, v in tensors.items()},
                     source, type(module).__name__)
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
