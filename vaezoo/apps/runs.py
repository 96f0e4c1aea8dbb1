"""What the application commands do, as functions: load the model (a tag, a run folder or ``hf-hub:ORG/NAME``)
and the data, call :mod:`vaezoo.apps`, and write the result in the format its file extension names:
``.png`` an image grid, ``.npy`` an array, ``.npz`` arrays by name, ``.csv`` a table. Files are written
atomically (:mod:`vaezoo.apps.outputs`), figures titled and labelled with class names where known. The CLI
(``vaezoo sample``, ``reconstruct``, ...) only parses and prints.

>>> run_sample("cvae.digits", "sevens.png", n=16, label=7)                        # doctest: +SKIP
>>> run_anomaly("runs/normal", "digits", "scores.csv", normal_classes="1,2,3")   # doctest: +SKIP
"""
from __future__ import annotations

import math
import shlex
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from vaezoo import apps
from vaezoo.apps.exploration import MAP_NAMES, map_axis_labels
from vaezoo.apps.folder_runs import reconstruct_folder, takes_folder_of_any_size
from vaezoo.apps.outputs import check_output, class_name, class_names_for, is_image_shape, write_images, write_table
from vaezoo.apps.samplers import check_sampler_request, save_with_sampler
from vaezoo.core.model import VAE
from vaezoo.core.validation import MAX_VALUES, check_output_size
from vaezoo.data import load_data
from vaezoo.data.files import read_array_file
from vaezoo.errors import CapabilityError, DataError, InputError
from vaezoo.eval.classifier import has_classifier, load_classifier
from vaezoo.io.figures import grid_scale, interleave_rows, paired_row_labels, save_scatter
from vaezoo.zoo.factory import load_model_source

IMAGES = (".png", ".npy", ".npz")
SPLITS = ("train", "val", "test")


# --- inputs --------------------------------------------------------------------------------------
def _load_model(source: str, device: str, path: Path, png_is_grid: bool = True) -> VAE:
    """The model, once it is known to fit the output: a PNG grid needs image-shaped examples (a PNG map does not)."""
    model = load_model_source(source, device)
    shape = tuple(model.config.input_shape)
    if png_is_grid and path.suffix.lower() == ".png" and not is_image_shape(shape):
        raise InputError(f"{apps.model_label(model)} makes examples of shape {shape}, not images, so {str(path)!r} "
                         "cannot be a PNG grid; write .npy or .npz")
    return model


def _check_output_count(model: VAE, path: Path, count: int, nrow: int, option: str) -> None:
    """Refuse, before any work, an output too large to hold in memory or to draw as one PNG grid of ``nrow``
    per row: one line naming the limit, not an out-of-memory crash minutes later."""
    check_output_size(count, model.config.input_shape, option, hint=" per file")
    if path.suffix.lower() == ".png":
        grid_scale(count, max(1, min(nrow, count)), *model.config.input_shape[1:])


def load_splits(model: VAE, data: str, data_dir: str | None = None, split_seed: int = 0) -> Any:
    """``load_data(data)``, checked to fit the model: same example shape (any H and W of its channels for a variant
    that takes any image size), and labels for a conditional model."""
    splits = load_data(data, data_dir=data_dir, seed=split_seed, allow_missing=model.capabilities.missing_values)
    shape = tuple(splits.input_shape)
    if shape != model.input_shape_for(torch.empty((0, *shape))):  # a variant of any image size takes any H, W
        raise DataError(f"{data!r} has examples of shape {shape} but {apps.model_label(model)} "
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
               seed: int = 0, device: str = "auto", sampler: str | None = None) -> dict[str, Any]:
    """``vaezoo sample``: n samples (label-conditioned for a cvae) to a PNG grid, .npy or .npz (x, y); with
    ``sampler="gmm"`` the latents come from the mixture ``vaezoo fit-sampler`` fitted, not from the prior."""
    path = check_output(out, IMAGES, "samples")
    model = _load_model(source, device, path)
    if sampler is not None:
        model.fitted_sampler(sampler)  # before any work: no fitted sampler is one line naming `vaezoo fit-sampler`
    _check_output_count(model, path, n, model.config.num_classes if model.is_conditional and label is None else 8, "--n")
    if label is not None:
        apps.check_label(model, label, "label")  # so a bad --label is named as the user gave it, not as y
    labels = apps.sample_labels(model, n, y=label)
    samples = apps.generate(model, n, y=labels, temperature=temperature, seed=seed, sampler=sampler)
    per_class_columns = model.is_conditional and label is None
    nrow = model.config.num_classes if per_class_columns else 8  # a column per class
    names = class_names_for(source, model) if model.is_conditional else []
    what = f" of {class_name(names, label)}" if label is not None else ""
    at = ("" if temperature == 1.0 else f" at temperature {temperature:g}") + (f" from its {sampler}" if sampler else "")
    write_images(path, samples, nrow=nrow, arrays={"y": labels}, title=f"{apps.model_label(model)}: {n} samples{what}{at}",
                 col_labels=names[:n] if per_class_columns else None)
    return {"out": str(path), "n": n, "label": label, "sampler": sampler}


def run_fit_sampler(source: str, data: str, out: str | Path, components: int = 10, kind: str = "gmm",
                    split: str = "train", data_dir: str | None = None, split_seed: int = 0, seed: int = 0,
                    device: str = "auto", fit_on: str = "sample") -> dict[str, Any]:
    """``vaezoo fit-sampler``: fit a latent sampler on the latent codes of a split (the training data) and
    write the model with it as a model folder (config.json, model.safetensors, README.md)."""
    model = load_model_source(source, device)
    check_sampler_request(model, kind, components, seed)  # before the data is read
    part = load_split(model, data, split, data_dir, split_seed)
    apps.fit_sampler(model, part.x, _labels_for(model, part, slice(None)), kind=kind, components=components, seed=seed,
                     fit_on=fit_on)
    fitted_on = {"data": data, "data_dir": data_dir, "split": split, "split_seed": split_seed, "examples": len(part),
                 "fit_on": fit_on, "seed": seed}
    command = shlex.join(["vaezoo", "fit-sampler", source, "--data", data, "--components", str(components), "--split",
                          split, "--split-seed", str(split_seed), "--fit-on", fit_on, "--seed", str(seed), "--out", str(out)]
                         + (["--data-dir", data_dir] if data_dir else []))
    folder = save_with_sampler(model, out, source, fitted_on, command)
    return {"out": str(folder), "examples": len(part), "components": components, "kind": kind}


def run_reconstruct(source: str, data: str, out: str | Path, n: int = 32, split: str = "test",
                    data_dir: str | None = None, split_seed: int = 0, device: str = "auto",
                    tile: int | None = None) -> dict[str, Any]:
    """``vaezoo reconstruct``: the first n examples of a split and their reconstructions (originals above); for a
    model that takes any image size and a folder of images, each image at its own size (apps.folder_runs); with
    ``tile``, in overlapping tiles of that many pixels where the model codes in tiles (``enable_tiling``)."""
    path = Path(out) if Path(out).suffix == "" else check_output(out, IMAGES, "reconstructions")
    model = _load_model(source, device, path)
    if tile is not None:
        if not callable(getattr(model, "enable_tiling", None)):
            raise CapabilityError(f"{apps.model_label(model)} does not code in tiles (it has no enable_tiling); drop --tile")
        model.enable_tiling(tile)
    if takes_folder_of_any_size(model, data):
        return reconstruct_folder(model, Path(data), path, n)
    check_output(path, IMAGES, "reconstructions")  # a folder output (no extension) is for images of any size only
    part = load_split(model, data, split, data_dir, split_seed)
    x = part.x[:n]
    recon = apps.reconstruct(model, x, _labels_for(model, part, slice(0, n)))
    nrow = min(8, len(x))
    write_images(path, recon, grid=interleave_rows(x, recon, nrow), arrays={"original": x}, nrow=nrow,
                 title=f"{apps.model_label(model)}: the first {len(x)} {split} examples of {data} and their reconstructions",
                 row_labels=paired_row_labels(len(x), nrow, "original", "reconstructed"))
    return {"out": str(path), "n": len(x), "mse": float((recon - x).pow(2).mean())}


def run_interpolate(source: str, data: str, out: str | Path, index_from: int, index_to: int, steps: int = 10,
                    method: str = "lerp", split: str = "test", data_dir: str | None = None, split_seed: int = 0,
                    device: str = "auto") -> dict[str, Any]:
    """``vaezoo interpolate``: decode a lerp or slerp path between examples I and J of a split (one row)."""
    path = check_output(out, IMAGES, "path")
    model = _load_model(source, device, path)
    _check_output_count(model, path, steps, steps, "--steps")  # one row of them
    part = load_split(model, data, split, data_dir, split_seed)
    where = f"the {split} split of {data!r}"
    i, j = _index(index_from, len(part), "--from", where), _index(index_to, len(part), "--to", where)
    y_from = int(part.y[i]) if model.is_conditional else None
    y_to = int(part.y[j]) if model.is_conditional else None
    images = apps.interpolate(model, part.x[i], part.x[j], steps, method, y_from, y_to)
    fractions = [f"{k / (steps - 1):.2f}" for k in range(steps)]
    write_images(path, images, nrow=steps, arrays={"ends": torch.stack([part.x[i], part.x[j]])},
                 title=f"{apps.model_label(model)}: {method} from {split} example {i} to {j}",
                 col_labels=[f"#{i}"] + fractions[1:-1] + [f"#{j}"])
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
               labels_path: str | None = None, method: str | None = None, iterations: int | None = None,
               seed: int = 0, device: str = "auto", iw_samples: int | None = None) -> dict[str, Any]:
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
    method = apps.default_imputation_method(model) if method is None else method
    filled = apps.impute(model, x, hidden, y=labels, iterations=iterations, method=method, seed=seed, iw_samples=iw_samples)
    missing = torch.isnan(x) if hidden is None else hidden | torch.isnan(x)
    filled_array = filled.numpy().reshape(array.shape)
    shown = torch.where(missing, torch.full_like(x, 0.5), x).float()  # missing drawn grey
    write_images(path, filled_array, grid=interleave_rows(shown[:32], filled[:32].float(), 8),
                 arrays={"missing": missing.numpy().reshape(array.shape)},
                 title=f"{apps.model_label(model)}: {method} imputation (missing values grey above, filled below)",
                 row_labels=paired_row_labels(min(len(batch), 32), 8, "input", "filled"))
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
    splits = load_splits(model, data, data_dir, split_seed)
    part = _part(splits, split, data)
    chosen = torch.nonzero(part.y != to_label).flatten()[:n]
    if len(chosen) == 0:
        raise DataError(f"every example of the {split} split of {data!r} is already of class {to_label}")
    x, y = part.x[chosen], part.y[chosen]
    transferred = apps.transfer(model, x, y, to_label)
    names, nrow = class_names_for(source, model, splits), min(len(x), 16)
    write_images(path, transferred, nrow=nrow, grid=interleave_rows(x, transferred, nrow), arrays={"original": x, "y": y},
                 title=f"{apps.model_label(model)}: {split} examples re-rendered as {class_name(names, to_label)}",
                 row_labels=paired_row_labels(len(x), nrow, "original", f"as {names[to_label]}"))
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
    model = _load_model(source, device, path, png_is_grid=traverse)  # a map is a scatter plot, for any data
    if traverse:
        _check_output_count(model, path, steps, steps, "--steps")  # each row's width
    splits = load_splits(model, data, data_dir, split_seed)
    part = _part(splits, split, data)[:n]
    labels = _labels_for(model, part, slice(None))
    if traverse:
        grid = apps.traverse(model, part.x, labels, rows=rows, steps=steps, span=span, factors=part.factors,
                             factor_names=splits.factor_names)  # rows labelled by the factor they capture (shapes2d)
        write_images(path, grid.images, nrow=steps, arrays={"dims": np.array(grid.dims), "values": grid.values},
                     title=f"{apps.model_label(model)}: latent traversal of {split} example 0; each row moves one latent "
                           f"dim by ±{span:g}σ about its mean over {len(part)} examples",
                     row_labels=grid.row_labels(), col_labels=grid.column_labels())
        return {"out": str(path), "dims": grid.dims, "spread": [round(float(s), 3) for s in grid.spread]}
    points = apps.latent_map(model, part.x, labels, method=method, seed=seed)
    classes = None if part.y is None else part.y.numpy()
    if path.suffix.lower() == ".png":
        save_scatter(points, classes, path, f"{apps.model_label(model)}: {MAP_NAMES[method]} of the latent means of "
                     f"{len(points)} {split} examples of {data}", class_names=class_names_for(source, model, splits),
                     axis_labels=map_axis_labels(method))
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
    classes = model.config.num_classes if per_class else 1
    most = MAX_VALUES // math.prod(model.config.input_shape) // classes
    check_output_size(n * classes, model.config.input_shape, f"--n {n} x {classes} classes" if per_class else "--n",
                      hint=f" per file (--n {most:,} with --per-class)" if per_class else " per file")
    x, y = apps.augment(model, n, per_class=per_class, temperature=temperature, seed=seed)
    nrow = n if per_class and n <= 16 else 8
    shown = x[:256] if nrow == 8 else x
    rows = class_names_for(source, model) if per_class and nrow == n else None  # then each row is one class
    write_images(path, x, nrow=nrow, grid=shown, arrays={"y": y}, row_labels=rows,
                 title=f"{apps.model_label(model)}: {len(shown)} of {len(x)} synthetic examples" if len(shown) < len(x)
                 else f"{apps.model_label(model)}: {len(x)} synthetic examples")
    return {"out": str(path), "examples": len(x), "labelled": y is not None}
