"""What the application commands do, as functions: load the model (a tag, a run folder or ``hf-hub:ORG/NAME``)
and the data, call :mod:`vaezoo.apps`, and write the result in the format its file extension names:
``.png`` an image grid, ``.npy`` an array, ``.npz`` arrays by name, ``.csv`` a table. Files are written
atomically. The CLI (``vaezoo sample``, ``reconstruct``, ...) only parses and prints.

>>> run_sample("cvae.digits", "sevens.png", n=16, label=7)                        # doctest: +SKIP
>>> run_anomaly("runs/normal", "digits", "scores.csv", normal_classes="1,2,3")   # doctest: +SKIP
"""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from vaezoo import apps
from vaezoo.core.model import VAE
from vaezoo.data import load_data
from vaezoo.data.files import read_array_file
from vaezoo.errors import DataError, InputError
from vaezoo.eval.classifier import has_classifier, load_classifier
from vaezoo.io.atomic import atomic_write, atomic_write_text
from vaezoo.io.figures import interleave_rows, save_image_grid, save_scatter
from vaezoo.zoo.factory import load_model_source

IMAGES = (".png", ".npy", ".npz")
SPLITS = ("train", "val", "test")


# --- outputs -------------------------------------------------------------------------------------
def check_output(path: str | Path, allowed: tuple[str, ...], what: str) -> Path:
    """``path`` as a Path when its extension is one of ``allowed``; else a one-line InputError."""
    path = Path(path)
    if path.suffix.lower() not in allowed:
        raise InputError(f"output {str(path)!r} has extension {path.suffix or '(none)'!r}; {what} writes "
                         + ", ".join(allowed) + f" (e.g. -o {what.split()[0]}{allowed[0]})")
    return path


def _is_image_shape(shape: tuple[int, ...]) -> bool:
    return len(shape) == 3 and shape[0] in (1, 3)


def write_images(path: Path, images: Tensor, *, nrow: int = 8, grid: Tensor | None = None,
                 arrays: dict[str, Any] | None = None) -> Path:
    """Write ``images`` (N, *shape) by extension: a PNG grid of ``grid`` (default ``images``) with ``nrow``
    per row, an .npy of ``images``, or an .npz with ``x`` = images plus ``arrays``."""
    suffix = path.suffix.lower()
    if suffix == ".png":
        shown = images if grid is None else grid
        if not _is_image_shape(tuple(shown.shape[1:])):
            raise InputError(f"cannot draw examples of shape {tuple(shown.shape[1:])} as a PNG grid; write .npy or .npz")
        return save_image_grid(shown, path, nrow=nrow)
    if suffix == ".npy":
        atomic_write(path, lambda tmp: _save_npy(tmp, images.numpy() if isinstance(images, Tensor) else images))
        return path
    named = {"x": images, **(arrays or {})}
    named = {k: (v.numpy() if isinstance(v, Tensor) else np.asarray(v)) for k, v in named.items() if v is not None}
    atomic_write(path, lambda tmp: _save_npz(tmp, named))
    return path


def _save_npy(tmp: str, array: np.ndarray) -> None:
    with open(tmp, "wb") as handle:  # a handle: np.save would append .npy to a bare temp name
        np.save(handle, array, allow_pickle=False)


def _save_npz(tmp: str, arrays: dict[str, np.ndarray]) -> None:
    with open(tmp, "wb") as handle:
        np.savez(handle, **arrays)


def write_table(path: Path, header: list[str], rows: list[list[Any]]) -> Path:
    """Write a CSV table atomically."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())
    return path


# --- inputs --------------------------------------------------------------------------------------
def _load_model(source: str, device: str, path: Path) -> VAE:
    """The model, once it is known to fit the output: a PNG grid needs image-shaped examples."""
    model = load_model_source(source, device)
    shape = tuple(model.config.input_shape)
    if path.suffix.lower() == ".png" and not _is_image_shape(shape):
        raise InputError(f"{apps.model_label(model)} makes examples of shape {shape}, not images, so {str(path)!r} "
                         "cannot be a PNG grid; write .npy or .npz")
    return model


def load_splits(model: VAE, data: str, data_dir: str | None = None, split_seed: int = 0) -> Any:
    """``load_data(data)``, checked to fit the model: same example shape, and labels for a conditional model."""
    splits = load_data(data, data_dir=data_dir, seed=split_seed)
    if tuple(splits.input_shape) != tuple(model.config.input_shape):
        raise DataError(f"{data!r} has examples of shape {tuple(splits.input_shape)} but {apps.model_label(model)} "
                        f"takes {tuple(model.config.input_shape)}; use the data the model was trained on")
    if model.is_conditional and splits.train.y is None:
        raise DataError(f"{apps.model_label(model)} is conditional but {data!r} has no labels; use labelled data")
    return splits


def load_split(model: VAE, data: str, split: str = "test", data_dir: str | None = None, split_seed: int = 0) -> Any:
    """One split (TensorData) of ``data``, checked as by :func:`load_splits` and not empty."""
    return _part(load_splits(model, data, data_dir, split_seed), split, data)


def _part(splits: Any, split: str, data: str) -> Any:
    if split not in SPLITS:
        raise InputError(f"split={split!r} is unknown; use one of {', '.join(SPLITS)}")
    part = getattr(splits, split)
    if len(part) == 0:
        raise DataError(f"the {split} split of {data!r} is empty; use another split (--split)")
    return part


def _labels_for(model: VAE, part: Any, index: slice | Tensor) -> Tensor | None:
    return part.y[index] if model.is_conditional else None


def _index(value: int, count: int, option: str, where: str) -> int:
    if not 0 <= value < count:
        raise InputError(f"{option} {value} is out of range: {where} has {count} examples (0..{count - 1})")
    return value


def parse_classes(text: str | None) -> list[int] | None:
    """``"0,1,7"`` -> [0, 1, 7]; None stays None."""
    if text is None:
        return None
    try:
        classes = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise InputError(f"--normal-classes {text!r} must be comma-separated class ids, e.g. 0,1,2") from None
    if not classes:
        raise InputError("--normal-classes is empty; list the normal class ids, e.g. 0,1,2")
    return classes


# --- the commands --------------------------------------------------------------------------------
def run_sample(source: str, out: str | Path, n: int = 64, label: int | None = None, temperature: float = 1.0,
               seed: int = 0, device: str = "auto") -> dict[str, Any]:
    """``vaezoo sample``: n samples (label-conditioned for a cvae) to a PNG grid, .npy or .npz (x, y)."""
    path = check_output(out, IMAGES, "samples")
    model = _load_model(source, device, path)
    if label is not None:
        apps.check_label(model, label, "label")  # so a bad --label is named as the user gave it, not as y
    labels = apps.sample_labels(model, n, y=label)
    samples = apps.generate(model, n, y=labels, temperature=temperature, seed=seed)
    nrow = model.config.num_classes if model.is_conditional and label is None else 8  # a column per class
    write_images(path, samples, nrow=nrow, arrays={"y": labels})
    return {"out": str(path), "n": n, "label": label}


def run_reconstruct(source: str, data: str, out: str | Path, n: int = 32, split: str = "test",
                    data_dir: str | None = None, split_seed: int = 0, device: str = "auto") -> dict[str, Any]:
    """``vaezoo reconstruct``: the first n examples of a split and their reconstructions (originals above)."""
    path = check_output(out, IMAGES, "reconstructions")
    model = _load_model(source, device, path)
    part = load_split(model, data, split, data_dir, split_seed)
    x = part.x[:n]
    recon = apps.reconstruct(model, x, _labels_for(model, part, slice(0, n)))
    write_images(path, recon, grid=interleave_rows(x, recon, 8), arrays={"original": x})
    return {"out": str(path), "n": len(x), "mse": float((recon - x).pow(2).mean())}


def run_interpolate(source: str, data: str, out: str | Path, index_from: int, index_to: int, steps: int = 10,
                    method: str = "lerp", split: str = "test", data_dir: str | None = None, split_seed: int = 0,
                    device: str = "auto") -> dict[str, Any]:
    """``vaezoo interpolate``: decode a lerp or slerp path between examples I and J of a split (one row)."""
    path = check_output(out, IMAGES, "path")
    model = _load_model(source, device, path)
    part = load_split(model, data, split, data_dir, split_seed)
    where = f"the {split} split of {data!r}"
    i, j = _index(index_from, len(part), "--from", where), _index(index_to, len(part), "--to", where)
    y_from = int(part.y[i]) if model.is_conditional else None
    y_to = int(part.y[j]) if model.is_conditional else None
    images = apps.interpolate(model, part.x[i], part.x[j], steps, method, y_from, y_to)
    write_images(path, images, nrow=steps, arrays={"ends": torch.stack([part.x[i], part.x[j]])})
    return {"out": str(path), "steps": steps, "end_mse": (float((images[0] - part.x[i]).pow(2).mean()),
                                                          float((images[-1] - part.x[j]).pow(2).mean()))}


def run_anomaly(source: str, data: str, out: str | Path, normal_classes: str | None = None, method: str = "elbo",
                quantile: float = 0.95, iw_samples: int = 100, split: str = "test", data_dir: str | None = None,
                split_seed: int = 0, seed: int = 0, device: str = "auto") -> apps.AnomalyReport:
    """``vaezoo anomaly``: score a split, threshold at a quantile of the validation split's normal examples,
    and write index, score, flagged (and label, anomaly when known) as CSV."""
    path = check_output(out, (".csv",), "scores")
    classes = parse_classes(normal_classes)
    model = _load_model(source, device, path)
    splits = load_splits(model, data, data_dir, split_seed)
    part, reference = _part(splits, split, data), splits.val
    is_anomaly = None
    if classes is not None:
        if part.y is None or reference.y is None:
            raise DataError(f"--normal-classes needs labels, but {data!r} has none; drop it to score without them")
        known = sorted(set(part.y.tolist()) | set(reference.y.tolist()))
        unknown = [c for c in classes if c not in known]
        if unknown:
            raise InputError(f"--normal-classes {unknown} are not classes of {data!r} (it has {known})")
        normal = torch.tensor(classes)
        reference = reference[torch.isin(reference.y, normal)]
        is_anomaly = ~torch.isin(part.y, normal)
    report = apps.detect_anomalies(model, part.x, reference.x, is_anomaly=is_anomaly, method=method,
                                   quantile=quantile, iw_samples=iw_samples, seed=seed)
    header = ["index", "score", "flagged"] + ["label"] * (part.y is not None) + ["anomaly"] * (is_anomaly is not None)
    rows = []
    for index in range(len(part)):
        row = [index, f"{float(report.scores[index]):.4f}", int(report.flagged[index])]
        row += [int(part.y[index])] if part.y is not None else []
        row += [int(is_anomaly[index])] if is_anomaly is not None else []
        rows.append(row)
    write_table(path, header, rows)
    return report


def _read_array(path: str, what: str) -> tuple[np.ndarray, np.ndarray | None]:
    file = Path(path)
    if not file.is_file():
        raise DataError(f"{what} file {path} does not exist; pass an .npy (or .npz with key x) file")
    if file.suffix.lower() not in (".npy", ".npz"):
        raise DataError(f"{what} file {path} is not .npy or .npz; save it with numpy.save")
    return read_array_file(file)


def _as_model_batch(array: np.ndarray, model: VAE, what: str) -> np.ndarray:
    """(N, *input_shape) view of ``array``: one example, a batch, or rows flattened to (N, prod(input_shape))."""
    shape = tuple(model.config.input_shape)
    if array.shape == shape:
        return array[None]
    if array.shape[1:] == shape:
        return array
    flattened = array.ndim == 2 and array.shape[1] == math.prod(shape)  # (N, D) rows
    if flattened or (shape[0] == 1 and array.shape[1:] == shape[1:]):  # or (N, H, W) for one channel
        return array.reshape(len(array), *shape)
    raise InputError(f"{what} holds shape {array.shape} but {apps.model_label(model)} takes (N, "
                     f"{', '.join(map(str, shape))}) (or (N, {math.prod(shape)}) flattened); reshape it")


def run_impute(source: str, input_path: str, out: str | Path, mask_path: str | None = None,
               labels_path: str | None = None, method: str = "iterate", iterations: int | None = None,
               seed: int = 0, device: str = "auto") -> dict[str, Any]:
    """``vaezoo impute``: fill the NaN (and masked) values of an array with the model; the rest is kept bit for bit.
    Writes the filled array with the input's shape and dtype (.npy), plus the mask (.npz), or a PNG grid."""
    path = check_output(out, IMAGES, "filled")
    model = _load_model(source, device, path)
    array, stored_labels = _read_array(input_path, "--input")
    if not np.issubdtype(array.dtype, np.floating):
        raise InputError(f"--input {input_path} holds {array.dtype} values; store floats scaled as the model's "
                         "training data (e.g. x / 255), with NaN where values are missing")
    batch = _as_model_batch(array, model, f"--input {input_path}")
    hidden = None
    if mask_path is not None:
        mask, _ = _read_array(mask_path, "--mask")
        if mask.shape != array.shape:
            raise InputError(f"--mask {mask_path} has shape {mask.shape} but --input has {array.shape}; "
                             "give one value per input value (True or 1 = missing)")
        if mask.dtype != np.bool_ and not np.isin(mask, (0, 1)).all():
            raise InputError(f"--mask {mask_path} holds values other than 0/1; use bools (True = missing)")
        hidden = torch.from_numpy(mask.astype(bool).reshape(batch.shape))
    labels = _impute_labels(model, labels_path, stored_labels, len(batch))
    x = torch.from_numpy(np.ascontiguousarray(batch))
    filled = apps.impute(model, x, hidden, y=labels, iterations=iterations, method=method, seed=seed)
    missing = torch.isnan(x) if hidden is None else hidden | torch.isnan(x)
    filled_array = filled.numpy().reshape(array.shape)
    shown = torch.where(missing, torch.full_like(x, 0.5), x).float()  # missing drawn grey
    write_images(path, filled_array, grid=interleave_rows(shown[:32], filled[:32].float(), 8),
                 arrays={"missing": missing.numpy().reshape(array.shape)})
    return {"out": str(path), "examples": len(batch), "missing": int(missing.sum()), "method": method}


def _impute_labels(model: VAE, labels_path: str | None, stored: np.ndarray | None, count: int) -> Tensor | None:
    if not model.is_conditional:
        if labels_path is not None:
            raise InputError(f"{apps.model_label(model)} is not conditional; drop --labels")
        return None
    if labels_path is not None:
        stored, _ = _read_array(labels_path, "--labels")
    if stored is None:
        raise InputError(f"{apps.model_label(model)} is conditional: pass --labels y.npy (one class id per example)")
    if stored.shape != (count,) or not np.issubdtype(stored.dtype, np.integer):
        raise InputError(f"--labels holds {stored.dtype} of shape {stored.shape}; pass {count} integer class ids")
    return torch.from_numpy(stored.astype(np.int64))


def run_transfer(source: str, data: str, out: str | Path, to_label: int, n: int = 8, split: str = "test",
                 data_dir: str | None = None, split_seed: int = 0, device: str = "auto") -> dict[str, Any]:
    """``vaezoo transfer``: the first n examples not already of class ``to_label``, re-rendered as it with a cvae
    (originals above). Reports how many the dataset's shipped classifier reads as ``to_label``, when there is one."""
    path = check_output(out, IMAGES, "transferred")
    model = _load_model(source, device, path)
    apps.require_conditional(model, "style transfer (encode with the true label, decode with another)")
    apps.check_label(model, to_label, "--to-label")  # before the data is read
    part = load_split(model, data, split, data_dir, split_seed)
    chosen = torch.nonzero(part.y != to_label).flatten()[:n]
    if len(chosen) == 0:
        raise DataError(f"every example of the {split} split of {data!r} is already of class {to_label}")
    x, y = part.x[chosen], part.y[chosen]
    transferred = apps.transfer(model, x, y, to_label)
    write_images(path, transferred, nrow=min(len(x), 16), grid=interleave_rows(x, transferred, min(len(x), 16)),
                 arrays={"original": x, "y": y})
    return {"out": str(path), "n": len(x), "to_label": to_label,
            "classifier_accuracy": _read_as(data, transferred, to_label)}


def _read_as(data: str, images: Tensor, label: int) -> float | None:
    """Fraction of ``images`` the shipped classifier for ``data`` assigns to ``label`` (None without one)."""
    if not has_classifier(data):
        return None
    classifier = load_classifier(data)
    if tuple(classifier.input_shape) != tuple(images.shape[1:]):
        return None
    with torch.no_grad():
        return float((classifier(images).argmax(1) == label).float().mean())


def run_explore(source: str, data: str, out: str | Path, method: str = "pca", traverse: bool = False,
                n: int = 2000, rows: int = 10, steps: int = 9, span: float = 3.0, split: str = "test",
                data_dir: str | None = None, split_seed: int = 0, seed: int = 0, device: str = "auto") -> dict[str, Any]:
    """``vaezoo explore``: a 2-D map of the latent means of n examples coloured by class (.png, or the
    coordinates as .csv/.npy), or with ``traverse`` a latent traversal grid, one row per latent dim."""
    allowed = IMAGES if traverse else (".png", ".csv", ".npy")
    path = check_output(out, allowed, "traversal" if traverse else "latent map")
    model = _load_model(source, device, path)
    part = load_split(model, data, split, data_dir, split_seed)[:n]
    labels = _labels_for(model, part, slice(None))
    if traverse:
        grid = apps.traverse(model, part.x, labels, rows=rows, steps=steps, span=span)
        write_images(path, grid.images, nrow=steps, arrays={"dims": np.array(grid.dims), "values": grid.values})
        return {"out": str(path), "dims": grid.dims, "spread": [round(float(s), 3) for s in grid.spread]}
    points = apps.latent_map(model, part.x, labels, method=method, seed=seed)
    classes = None if part.y is None else part.y.numpy()
    if path.suffix.lower() == ".png":
        save_scatter(points, classes, path, f"{apps.model_label(model)}: {method.upper()} of {len(points)} "
                                            f"{split} latent means")
    elif path.suffix.lower() == ".npy":
        write_images(path, points)
    else:
        header = ["x", "y"] + ["label"] * (classes is not None)
        rows_out = [[f"{a:.5f}", f"{b:.5f}"] + ([int(classes[i])] if classes is not None else [])
                    for i, (a, b) in enumerate(points)]
        write_table(path, header, rows_out)
    return {"out": str(path), "examples": len(points), "method": method}


def run_augment(source: str, out: str | Path, n: int, per_class: bool = False, temperature: float = 1.0,
                seed: int = 0, device: str = "auto") -> dict[str, Any]:
    """``vaezoo augment``: synthetic examples as .npz (x, and y for a conditional model), .npy (x) or a PNG grid."""
    path = check_output(out, (".npz", ".npy", ".png"), "synth")
    model = _load_model(source, device, path)
    x, y = apps.augment(model, n, per_class=per_class, temperature=temperature, seed=seed)
    nrow = n if per_class and n <= 16 else 8
    write_images(path, x, nrow=nrow, grid=x[:256] if nrow == 8 else None, arrays={"y": y})
    return {"out": str(path), "examples": len(x), "labelled": y is not None}
