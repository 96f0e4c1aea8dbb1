"""PNG figures from tensors and records: titled, labelled image grids, latent scatter maps and loss curves, written atomically.

Each figure has a builder that returns a matplotlib ``Figure`` (to look at or test) and a ``save_*`` that
writes it as a PNG through :func:`save_figure`, so a kill or a full disk never leaves a torn file:

>>> figure = image_grid_figure(images, nrow=10, title="cvae.digits: samples", col_labels=names)  # doctest: +SKIP
>>> save_figure(figure, "samples.png")  # doctest: +SKIP

Figures are built on ``matplotlib.figure.Figure`` directly, never through pyplot, so drawing one
neither switches the caller's backend (a notebook keeps its own) nor leaves a figure open.
"""
from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from vaezoo.errors import InputError
from vaezoo.io.atomic import atomic_write

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DPI = 100  # figure inches to PNG pixels: a grid's image pixels are drawn one to one
MIN_CELL_PX = 64  # small images (8x8 digits, 28x28 clothes) are enlarged to at least this, pixels kept sharp
GAP_PX = 2  # white gap between the images of a grid
MAX_GRID_PX = 2**15  # longest side of a grid; matplotlib refuses 2**16 and such a PNG is unviewable anyway
LABEL_FONT = 10  # points; 14 px at DPI 100
TITLE_FONT = 11
MAX_LEGEND_CLASSES = 20  # more classes than this get a colour bar instead of a legend


def new_figure(width: float, height: float, **kwargs: Any) -> Figure:
    """An empty figure of ``width`` x ``height`` inches at :data:`DPI`, with an Agg canvas and no pyplot state."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # imported here: matplotlib is slow to import
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=DPI, **kwargs)
    FigureCanvasAgg(figure)
    return figure


def save_figure(figure: Figure, path: str | Path) -> Path:
    """Write ``figure`` as a PNG, grown to hold every title, label and legend outside its axes, atomically."""
    path = Path(path)
    atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight", pad_inches=0.08))
    return path


# --- image grids ---------------------------------------------------------------------------------
def grid_scale(count: int, nrow: int, height: int, width: int) -> int:
    """The nearest-neighbour enlargement of each image: to :data:`MIN_CELL_PX` on its short side, less when
    the grid would pass :data:`MAX_GRID_PX`; an InputError when even unenlarged it would."""
    rows, columns = math.ceil(count / nrow), min(count, nrow)
    scale = max(1, math.ceil(MIN_CELL_PX / min(height, width)))
    while scale > 1 and max(rows * (height * scale + GAP_PX), columns * (width * scale + GAP_PX)) > MAX_GRID_PX:
        scale -= 1
    tall, wide = rows * (height * scale + GAP_PX) - GAP_PX, columns * (width * scale + GAP_PX) - GAP_PX
    if max(tall, wide) > MAX_GRID_PX:
        raise InputError(f"a PNG grid of {count} images of {height}x{width} pixels, {nrow} per row, would be {wide}x{tall} "
                         f"pixels (at most {MAX_GRID_PX} a side); write .npy or .npz for that many, or draw fewer")
    return scale


def tile_images(images: Tensor, nrow: int) -> np.ndarray:
    """(N, C, H, W) in [0, 1], C = 1 or 3, as one (h, w) or (h, w, 3) array: ``nrow`` per row, each image enlarged
    by :func:`grid_scale` (nearest neighbour), white gaps between them."""
    count, channels, height, width = images.shape
    scale = grid_scale(count, nrow, height, width)
    pixels = images.detach().float().clamp(0, 1).cpu().numpy()
    pixels = pixels.repeat(scale, axis=2).repeat(scale, axis=3)  # (N, C, H * scale, W * scale)
    cell_h, cell_w = height * scale + GAP_PX, width * scale + GAP_PX
    rows, columns = math.ceil(count / nrow), min(count, nrow)
    canvas = np.ones((channels, rows * cell_h - GAP_PX, columns * cell_w - GAP_PX), dtype=np.float32)
    for index in range(count):
        top, left = (index // nrow) * cell_h, (index % nrow) * cell_w
        canvas[:, top:top + height * scale, left:left + width * scale] = pixels[index]
    return canvas[0] if channels == 1 else canvas.transpose(1, 2, 0)


def image_grid_figure(images: Tensor, nrow: int = 8, *, title: str | None = None,
                      row_labels: Sequence[str] | None = None, col_labels: Sequence[str] | None = None) -> Figure:
    """(N, C, H, W) images in [0, 1] (C = 1 or 3) as a grid of ``nrow`` per row, each at least
    :data:`MIN_CELL_PX` pixels, with a title above, ``col_labels`` over the columns and ``row_labels`` left of the rows.

    >>> figure = image_grid_figure(torch.rand(20, 1, 8, 8), nrow=10, row_labels=["a", "b"])
    >>> [t.get_text() for t in figure.axes[0].get_yticklabels()]
    ['a', 'b']
    """
    if images.ndim != 4 or images.shape[1] not in (1, 3) or images.shape[0] == 0:
        raise InputError(f"cannot draw shape {tuple(images.shape)} as an image grid; pass (N, C, H, W) with C = 1 or 3, N >= 1")
    nrow = max(1, min(nrow, images.shape[0]))
    rows, columns = math.ceil(images.shape[0] / nrow), nrow
    _check_label_count(row_labels, rows, "row")
    _check_label_count(col_labels, columns, "column")
    canvas = tile_images(images, nrow)
    figure = new_figure(canvas.shape[1] / DPI, canvas.shape[0] / DPI)
    axis = figure.add_axes((0, 0, 1, 1))
    axis.imshow(canvas, cmap="gray", vmin=0, vmax=1, interpolation="nearest", aspect="equal")
    cell_h, cell_w = (canvas.shape[0] + GAP_PX) / rows, (canvas.shape[1] + GAP_PX) / columns
    axis.set_yticks([(r + 0.5) * cell_h - 0.5 - GAP_PX / 2 for r in range(rows)] if row_labels else [],
                    list(row_labels or []), fontsize=LABEL_FONT)
    axis.xaxis.tick_top()
    axis.set_xticks([(c + 0.5) * cell_w - 0.5 - GAP_PX / 2 for c in range(columns)] if col_labels else [],
                    list(col_labels or []), fontsize=LABEL_FONT)
    if col_labels and _widest_text(figure, axis.get_xticklabels()) > cell_w - GAP_PX * 2:
        for label in axis.get_xticklabels():  # too wide to sit side by side: stand them up, each over its column
            label.set(rotation=90, horizontalalignment="center", verticalalignment="bottom")
    axis.tick_params(length=0, pad=4)
    for spine in axis.spines.values():
        spine.set_visible(False)
    if title:  # wrapped to about the grid's width, so that a narrow grid is not drawn in a wide empty canvas
        axis.set_title(textwrap.fill(title, max(30, int(canvas.shape[1] / (0.55 * TITLE_FONT * DPI / 72)))),
                       fontsize=TITLE_FONT, pad=8)
    return figure


def _widest_text(figure: Figure, texts: Sequence[Any]) -> float:
    renderer = figure.canvas.get_renderer()
    return max(text.get_window_extent(renderer).width for text in texts)


def _check_label_count(labels: Sequence[str] | None, expected: int, what: str) -> None:
    if labels is not None and len(labels) != expected:
        raise InputError(f"{len(labels)} {what} labels for a grid of {expected} {what}s; give one per {what}")


def save_image_grid(images: Tensor, path: str | Path, nrow: int = 8, *, title: str | None = None,
                    row_labels: Sequence[str] | None = None, col_labels: Sequence[str] | None = None) -> Path:
    """Write (N, C, H, W) images in [0, 1] (C = 1 or 3) as one labelled PNG grid (see :func:`image_grid_figure`), atomically."""
    return save_figure(image_grid_figure(images, nrow, title=title, row_labels=row_labels, col_labels=col_labels), path)


def interleave_rows(top: Tensor, bottom: Tensor, nrow: int) -> Tensor:
    """Grid order for a comparison figure: a row of ``nrow`` from ``top`` above the matching row of ``bottom``, and so
    on; a short last row is filled with blank (white) cells, so that each example stays above its own counterpart."""
    rows = []
    for i in range(0, len(top), nrow):
        for part in (top[i:i + nrow], bottom[i:i + nrow]):
            blanks = torch.ones(nrow - len(part), *part.shape[1:], dtype=part.dtype)
            rows += [part, blanks]
    return torch.cat(rows)


def paired_row_labels(count: int, nrow: int, top: str, bottom: str) -> list[str]:
    """Row labels of an :func:`interleave_rows` grid of ``count`` pairs: ``top``, ``bottom``, ``top``, ..."""
    return [top, bottom] * math.ceil(count / nrow)


# --- scatter maps and loss curves ----------------------------------------------------------------
def class_colours(count: int) -> list[tuple[float, float, float, float]]:
    """One distinct colour per class id 0..count-1 (tab10, tab20 past ten classes)."""
    from matplotlib import colormaps  # imported here: matplotlib is slow to import

    palette = colormaps["tab10" if count <= 10 else "tab20"]
    return [palette(index % palette.N) for index in range(count)]


def scatter_figure(points: Any, labels: Any, title: str, class_names: Sequence[str] | None = None,
                   axis_labels: tuple[str, str] = ("", "")) -> Figure:
    """(N, 2) points coloured by integer ``labels`` (None: one colour), with a legend of ``class_names`` (default
    "class 0", ...) outside the axes so that it covers no point; more than 20 classes get a colour bar.

    >>> figure = scatter_figure(np.random.rand(9, 2), np.arange(9) % 3, "map", ["cat", "dog", "emu"])
    >>> [t.get_text() for t in figure.axes[0].get_legend().get_texts()]
    ['cat', 'dog', 'emu']
    """
    points = np.asarray(points, dtype=np.float64)
    figure = new_figure(6.0, 5.0)
    axis = figure.add_subplot()
    order = np.random.default_rng(0).permutation(len(points))  # no class is drawn over all the others
    if labels is None:
        axis.scatter(points[order, 0], points[order, 1], s=10, alpha=0.8, linewidths=0)
    else:
        labels = np.asarray(labels).astype(np.int64)
        count = max(int(labels.max()) + 1 if labels.size else 0, len(class_names or ()))
        if count > MAX_LEGEND_CLASSES:
            drawn = axis.scatter(points[order, 0], points[order, 1], c=labels[order], cmap="viridis", s=10, linewidths=0)
            figure.colorbar(drawn, ax=axis, label="class")
        else:
            _scatter_with_legend(axis, points[order], labels[order], count, class_names)
    axis.set_title(title, fontsize=TITLE_FONT)
    axis.set_xlabel(axis_labels[0], fontsize=LABEL_FONT)
    axis.set_ylabel(axis_labels[1], fontsize=LABEL_FONT)
    axis.set_xticks([])
    axis.set_yticks([])
    return figure


def _scatter_with_legend(axis: Any, points: np.ndarray, labels: np.ndarray, count: int,
                         class_names: Sequence[str] | None) -> None:
    from matplotlib.lines import Line2D  # imported here: matplotlib is slow to import

    colours = class_colours(count)
    axis.scatter(points[:, 0], points[:, 1], c=[colours[label] for label in labels], s=10, alpha=0.85, linewidths=0)
    present = sorted(set(labels.tolist()))
    names = [class_names[c] if class_names and c < len(class_names) else f"class {c}" for c in present]
    handles = [Line2D([], [], marker="o", linestyle="", markersize=7, color=colours[c]) for c in present]
    axis.legend(handles, names, title="class", loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0,
                fontsize=LABEL_FONT - 1, title_fontsize=LABEL_FONT, frameon=False)


def save_scatter(points: Any, labels: Any, path: str | Path, title: str, class_names: Sequence[str] | None = None,
                 axis_labels: tuple[str, str] = ("", "")) -> Path:
    """Write (N, 2) points as a PNG scatter map (see :func:`scatter_figure`), atomically."""
    return save_figure(scatter_figure(points, labels, title, class_names, axis_labels), path)


def loss_curve_figure(history: list[dict[str, Any]]) -> Figure | None:
    """Train loss and the validation figure per epoch, one panel per training stage, legends beside the panels."""
    if not history:
        return None
    from matplotlib.ticker import MaxNLocator  # imported here: matplotlib is slow to import

    stages = list(dict.fromkeys(record["stage"] for record in history))
    figure = new_figure(6.5 * len(stages), 3.8, layout="constrained")
    for axis, stage in zip(figure.subplots(1, len(stages), squeeze=False)[0], stages):
        records = [r for r in history if r["stage"] == stage]
        epochs = [r["epoch"] for r in records]
        val_key = "neg_elbo" if "neg_elbo" in records[0]["val"] else "loss"
        axis.plot(epochs, [r["train"].get("loss", float("nan")) for r in records], "o-", markersize=3, label="train loss")
        axis.plot(epochs, [r["val"].get(val_key, float("nan")) for r in records], "s-", markersize=3,
                  label=f"validation {'-ELBO' if val_key == 'neg_elbo' else 'loss'}")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set_xlabel("epoch", fontsize=LABEL_FONT)
        axis.set_ylabel("nats per example", fontsize=LABEL_FONT)
        axis.set_title(f"stage {stage!r}: loss per epoch", fontsize=TITLE_FONT)
        axis.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0, fontsize=LABEL_FONT - 1, frameon=False)
    return figure


def save_loss_curve(history: list[dict[str, Any]], path: str | Path) -> Path | None:
    """Write :func:`loss_curve_figure` as a PNG, atomically (a kill or a full disk leaves no torn file); None without history."""
    figure = loss_curve_figure(history)
    return None if figure is None else save_figure(figure, path)
