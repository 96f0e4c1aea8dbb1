"""What the application commands write: each output in the format its extension names (PNG grids titled and
labelled with class names where known, .npy, .npz, CSV), atomically, and the class names those figures use."""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from vaezoo.core.model import VAE
from vaezoo.data.sources import dataset_class_names
from vaezoo.errors import InputError
from vaezoo.eval.figures import class_labels
from vaezoo.io.atomic import atomic_write, atomic_write_text
from vaezoo.io.figures import save_image_grid
from vaezoo.io.model_dir import read_config_json
from vaezoo.zoo.pretrained import pretrained_tag
from vaezoo.zoo.registry import is_model


def check_output(path: str | Path, allowed: tuple[str, ...], what: str) -> Path:
    """``path`` as a Path when its extension is one of ``allowed``; else a one-line InputError."""
    path = Path(path)
    if path.suffix.lower() not in allowed:
        raise InputError(f"output {str(path)!r} has extension {path.suffix or '(none)'!r}; {what} writes "
                         + ", ".join(allowed) + f" (e.g. -o {what.split()[0]}{allowed[0]})")
    return path


def is_image_shape(shape: tuple[int, ...]) -> bool:
    """Whether examples of ``shape`` can be drawn as images: (C, H, W) with C = 1 or 3."""
    return len(shape) == 3 and shape[0] in (1, 3)


def write_images(path: Path, images: Tensor, *, nrow: int = 8, grid: Tensor | None = None,
                 arrays: dict[str, Any] | None = None, title: str | None = None,
                 row_labels: list[str] | None = None, col_labels: list[str] | None = None) -> Path:
    """Write ``images`` (N, *shape) by extension: a PNG grid of ``grid`` (default ``images``) with ``nrow``
    per row under ``title``, with ``row_labels`` and ``col_labels``; an .npy of ``images``; or an .npz with
    ``x`` = images plus ``arrays``."""
    suffix = path.suffix.lower()
    if suffix == ".png":
        shown = images if grid is None else grid
        if not is_image_shape(tuple(shown.shape[1:])):
            raise InputError(f"cannot draw examples of shape {tuple(shown.shape[1:])} as a PNG grid; write .npy or .npz")
        return save_image_grid(shown, path, nrow=nrow, title=title, row_labels=row_labels, col_labels=col_labels)
    if suffix == ".npy":
        atomic_write(path, lambda tmp: _save_npy(tmp, images.numpy() if isinstance(images, Tensor) else images))
        return path
    named = {"x": images, **(arrays or {})}
    named = {k: (v.numpy() if isinstance(v, Tensor) else np.asarray(v)) for k, v in named.items() if v is not None}
    write_npz(path, named)
    return path


def _save_npy(tmp: str, array: np.ndarray) -> None:
    with open(tmp, "wb") as handle:  # a handle: np.save would append .npy to a bare temp name
        np.save(handle, array, allow_pickle=False)


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    """``arrays`` as one .npz at ``path``, written atomically (a kill leaves the old file or the new one)."""
    def save(tmp: str) -> None:
        with open(tmp, "wb") as handle:  # a handle: np.savez would append .npz to a bare temp name
            np.savez(handle, **arrays)

    atomic_write(path, save)
    return path


def write_table(path: Path, header: list[str], rows: list[list[Any]]) -> Path:
    """Write a CSV table atomically."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())
    return path


def class_names_for(source: str, model: VAE, splits: Any = None) -> list[str]:
    """Readable names of the model's classes, for figure labels: the data's own names when it is loaded, else
    those of the built-in dataset a tag or run folder was trained on, else "class 0", "class 1", ..."""
    names = splits.class_names if splits is not None else None
    if names is None and Path(source).is_dir():  # as load_model_source looks: a folder first, then a tag
        recorded = read_config_json(source).get("data")
        if isinstance(recorded, dict):  # the names the run recorded (a CSV's text labels), else its dataset's
            names = recorded.get("class_names") or dataset_class_names(recorded.get("data"))
    elif names is None and is_model(source):
        names = dataset_class_names(pretrained_tag(source).dataset)
    count = max(model.config.num_classes, splits.num_classes if splits is not None else 0)
    return class_labels(count, names)


def class_name(names: list[str], label: int) -> str:
    """``label`` for a title: ``class 7 (Sneaker)``, or ``class 7`` when the name says no more than the id."""
    plain = names[label] in (str(label), f"class {label}")
    return f"class {label}" if plain else f"class {label} ({names[label]})"
