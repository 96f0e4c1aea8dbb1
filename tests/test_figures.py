"""Figures people can read: titled grids at a readable pixel scale, rows and columns labelled (class names where
known), latent maps coloured and named by class with the legend beside the data, labelled traversals, a PNG map
for table data, and every PNG written atomically."""
from __future__ import annotations

import csv
import errno

import matplotlib
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from matplotlib.figure import Figure
from PIL import Image

import vaezoo
from vaezoo import apps
from vaezoo.bench.figures import save_model_figures
from vaezoo.cli import main
from vaezoo.data import FASHION_MNIST_CLASSES, load_data
from vaezoo.data.sources import dataset_class_names
from vaezoo.errors import InputError, StorageError
from vaezoo.eval.figures import save_sample_grid
from vaezoo.io import figures
from vaezoo.io.figures import (
    MIN_CELL_PX,
    image_grid_figure,
    loss_curve_figure,
    save_image_grid,
    scatter_figure,
    tile_images,
)
from vaezoo.training.runs import train_run

DIGITS = [str(d) for d in range(10)]


@pytest.fixture
def drawn(monkeypatch) -> list[Figure]:
    """Every figure a command saves, in order (still written to disk as usual)."""
    saved: list[Figure] = []
    original = figures.save_figure

    def keep(figure, path):
        saved.append(figure)
        return original(figure, path)

    monkeypatch.setattr(figures, "save_figure", keep)
    return saved


def ok(*args) -> str:
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


def texts(labels) -> list[str]:
    return [label.get_text() for label in labels]


def extent(figure: Figure, artist):
    return artist.get_window_extent(figure.canvas.get_renderer())


def overlaps(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


# --- grids ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("side", [8, 28])
def test_small_images_are_drawn_at_least_64_pixels_a_side(tmp_path, side):
    save_image_grid(torch.rand(16, 1, side, side), tmp_path / "grid.png", nrow=8)
    width, height = Image.open(tmp_path / "grid.png").size
    assert width >= 8 * MIN_CELL_PX and height >= 2 * MIN_CELL_PX  # 8x8 digits used to be 24 px, 28x28 28 px


def test_enlarging_keeps_pixels_sharp():
    """Nearest neighbour: each source pixel becomes a solid block, no blur between them."""
    checker = (torch.arange(8)[:, None] + torch.arange(8)[None, :]) % 2  # (8, 8) of 0 and 1
    canvas = tile_images(checker.float()[None, None], nrow=1)
    assert canvas.shape == (64, 64)
    assert set(np.unique(canvas).tolist()) == {0.0, 1.0}
    assert (canvas[:8, :8] == 0).all() and (canvas[:8, 8:16] == 1).all()


def test_grid_has_its_title_row_and_column_labels():
    figure = image_grid_figure(torch.rand(20, 1, 8, 8), nrow=10, title="samples", row_labels=["first", "second"],
                               col_labels=DIGITS)
    axis = figure.axes[0]
    assert axis.get_title() == "samples"
    assert texts(axis.get_yticklabels()) == ["first", "second"]
    assert texts(axis.get_xticklabels()) == DIGITS


def test_long_column_labels_do_not_run_into_each_other():
    figure = image_grid_figure(torch.rand(10, 1, 8, 8), nrow=10, col_labels=[f"a long class name {i}" for i in range(10)])
    boxes = [extent(figure, label) for label in figure.axes[0].get_xticklabels()]
    assert not any(overlaps(a, b) for a, b in zip(boxes, boxes[1:]))


def test_a_label_count_that_does_not_fit_the_grid_is_refused():
    with pytest.raises(InputError, match="3 row labels for a grid of 2 rows"):
        image_grid_figure(torch.rand(16, 1, 8, 8), nrow=8, row_labels=["a", "b", "c"])


def test_a_grid_too_large_for_a_png_is_refused_in_one_line(tmp_path):
    with pytest.raises(InputError, match=r"write \.npy or \.npz for that many") as error:
        save_image_grid(torch.zeros(10_000, 1, 28, 28), tmp_path / "huge.png", nrow=8)
    assert "\n" not in str(error.value) and not (tmp_path / "huge.png").exists()


def test_figures_are_written_atomically(tmp_path, monkeypatch):
    """A full disk half-way through a PNG leaves the previous file whole and no temporary file."""
    target = tmp_path / "grid.png"
    target.write_bytes(b"previous")

    def disk_full(self, name, **kwargs):
        with open(name, "wb") as handle:
            handle.write(b"\x89PNG half")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Figure, "savefig", disk_full)
    with pytest.raises(StorageError, match="disk is full"):
        save_image_grid(torch.rand(4, 1, 8, 8), target)
    assert target.read_bytes() == b"previous" and [p.name for p in tmp_path.iterdir()] == ["grid.png"]


def test_drawing_leaves_the_callers_matplotlib_backend_alone():
    backend = matplotlib.get_backend()
    image_grid_figure(torch.rand(4, 1, 8, 8))
    scatter_figure(np.random.rand(10, 2), None, "map")
    assert matplotlib.get_backend() == backend


# --- maps and curves -----------------------------------------------------------------------------
def test_scatter_names_the_classes_in_a_legend_beside_the_data():
    points = np.random.default_rng(0).normal(size=(300, 2))
    labels = np.arange(300) % 10
    figure = scatter_figure(points, labels, "latent map", FASHION_MNIST_CLASSES, ("PC 1", "PC 2"))
    axis = figure.axes[0]
    legend = axis.get_legend()
    assert texts(legend.get_texts()) == FASHION_MNIST_CLASSES
    assert (axis.get_xlabel(), axis.get_ylabel(), axis.get_title()) == ("PC 1", "PC 2", "latent map")
    assert not overlaps(extent(figure, legend), extent(figure, axis))  # the legend covers no point


def test_scatter_without_names_says_class_and_id():
    figure = scatter_figure(np.random.rand(6, 2), np.array([0, 2, 2, 0, 2, 0]), "map")
    assert texts(figure.axes[0].get_legend().get_texts()) == ["class 0", "class 2"]


def test_loss_curve_legends_cover_no_panel():
    history = [{"stage": stage, "epoch": epoch, "train": {"loss": 10.0 / epoch}, "val": {key: 11.0 / epoch}}
               for stage, key in (("autoencoder", "neg_elbo"), ("prior", "loss")) for epoch in (1, 2, 3)]
    figure = loss_curve_figure(history)
    figure.canvas.draw()
    legends = [axis.get_legend() for axis in figure.axes]
    assert [texts(legend.get_texts()) for legend in legends] == [["train loss", "validation -ELBO"],
                                                                 ["train loss", "validation loss"]]
    assert not any(overlaps(extent(figure, legend), extent(figure, axis)) for legend in legends for axis in figure.axes)


# --- class names ---------------------------------------------------------------------------------
def test_the_built_in_datasets_know_their_class_names():
    assert dataset_class_names("fashion-mnist") == FASHION_MNIST_CLASSES
    assert dataset_class_names("digits") == DIGITS and dataset_class_names("mnist") == DIGITS
    assert dataset_class_names("my_table.csv") is None


def test_a_conditional_sample_grid_labels_each_class_row(tmp_path, drawn):
    model = vaezoo.create_model("cvae", preset="tiny", input_shape=(1, 8, 8), num_classes=3)
    save_sample_grid(model, tmp_path / "samples.png", class_names=["cat", "dog", "emu"])
    assert texts(drawn[0].axes[0].get_yticklabels()) == ["cat", "dog", "emu"]
    assert "samples per class" in drawn[0].axes[0].get_title()


def test_sample_names_the_columns_by_the_tags_dataset(tmp_path, drawn):
    ok("sample", "cvae.fmnist", "--n", 20, "-o", tmp_path / "s.png")
    axis = drawn[0].axes[0]
    assert texts(axis.get_xticklabels()) == FASHION_MNIST_CLASSES and "cvae.fmnist" in axis.get_title()
    ok("sample", "cvae.digits", "--n", 8, "--label", 3, "-o", tmp_path / "threes.png")
    assert "8 samples of class 3" in drawn[1].axes[0].get_title()


def test_comparison_grids_label_their_rows(tmp_path, drawn):
    ok("reconstruct", "vae-mlp.digits", "--data", "digits", "--n", 16, "-o", tmp_path / "r.png")
    assert texts(drawn[0].axes[0].get_yticklabels()) == ["original", "reconstructed"] * 2
    ok("transfer", "cvae.digits", "--data", "digits", "--to-label", 4, "--n", 4, "-o", tmp_path / "t.png")
    assert texts(drawn[1].axes[0].get_yticklabels()) == ["original", "as 4"]
    ok("interpolate", "vae-mlp.digits", "--data", "digits", "--from", 2, "--to", 7, "--steps", 5, "-o", tmp_path / "i.png")
    assert texts(drawn[2].axes[0].get_xticklabels()) == ["#2", "0.25", "0.50", "0.75", "#7"]


# --- exploration ---------------------------------------------------------------------------------
def test_traversal_labels_show_latent_index_and_value(digits_splits):
    model = vaezoo.from_pretrained("vae-mlp.digits")
    grid = apps.traverse(model, digits_splits.test.x, rows=3, steps=5, span=2.0)
    assert grid.column_labels() == ["-2σ", "-1σ", "mean", "+1σ", "+2σ"]
    for label, dim, values in zip(grid.row_labels(), grid.dims, grid.values):
        assert label == f"z{dim}: {float(values[0]):+.2f} to {float(values[-1]):+.2f}"


def test_explore_traversal_png_is_labelled(tmp_path, drawn):
    ok("explore", "vae-mlp.digits", "--data", "digits", "--traverse", "--rows", 3, "--steps", 5, "-o", tmp_path / "t.png")
    axis = drawn[0].axes[0]
    rows = texts(axis.get_yticklabels())
    assert len(rows) == 3 and all(row.startswith("z") and " to " in row for row in rows)
    assert texts(axis.get_xticklabels())[2] == "mean" and "latent traversal" in axis.get_title()
    width, height = Image.open(tmp_path / "t.png").size
    assert width >= 5 * MIN_CELL_PX and height >= 3 * MIN_CELL_PX


def test_traversal_rows_name_the_factor_their_dim_captures(digits_splits):
    """A code that copies factor 1 into dim 0 and factor 0 into dim 1 is labelled so, with the whole entropy shared."""
    from vaezoo.apps.exploration import _captured_factors

    factors = torch.randint(0, 5, (400, 3), generator=torch.Generator().manual_seed(0))
    codes = torch.stack([factors[:, 1].float() * 0.3, factors[:, 0].float() - 7.0, torch.randn(400)], dim=1)
    captured = _captured_factors(codes, factors, ["shape", "scale", "x"])
    assert [name for name, _ in captured[:2]] == ["scale", "shape"]
    assert captured[0][1] == pytest.approx(1.0) and captured[1][1] == pytest.approx(1.0) and captured[2][1] < 0.2
    model = vaezoo.from_pretrained("vae-mlp.digits")
    x = digits_splits.test.x
    grid = apps.traverse(model, x, rows=2, steps=3, factors=torch.randint(0, 4, (len(x), 2)), factor_names=["a", "b"])
    assert all(label.split(" ~ ")[1].split(" (")[0] in ("a", "b") for label in grid.row_labels())
    with pytest.raises(vaezoo.InputError, match="factor_names has 1 names for 2 factors"):
        apps.traverse(model, x, rows=2, factors=torch.zeros(len(x), 2, dtype=torch.long), factor_names=["a"])


def test_explore_traversal_on_shapes2d_labels_rows_by_factor(tmp_path, drawn):
    model = vaezoo.create_model("vae-mlp", preset="tiny", input_shape=(1, 32, 32))
    model.save_pretrained(tmp_path / "m")
    ok("explore", tmp_path / "m", "--data", "shapes2d-small", "--traverse", "--rows", 3, "--steps", 3, "-o", tmp_path / "t.png")
    rows = texts(drawn[0].axes[0].get_yticklabels())
    factor_names = ("shape", "scale", "orientation", "pos_x", "pos_y")
    assert len(rows) == 3 and all(row.split(" ~ ")[1].split(" (")[0] in factor_names for row in rows), rows


def test_explore_map_is_named_by_class(tmp_path, drawn):
    ok("explore", "vae-mlp.digits", "--data", "digits", "-o", tmp_path / "map.png")
    legend = drawn[0].axes[0].get_legend()
    assert texts(legend.get_texts()) == DIGITS and drawn[0].axes[0].get_xlabel() == "PC 1"


def test_explore_writes_a_png_map_for_table_data(tmp_path, drawn, digits):
    """Rows of numbers in a CSV (here the digits as 64 columns plus a label): the map is a scatter, not a grid."""
    x, y = digits
    with open(tmp_path / "table.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([f"f{i}" for i in range(64)] + ["label"])
        writer.writerows([*map(float, row), int(label)] for row, label in zip(x[:300].reshape(300, 64), y[:300]))
    vaezoo.create_model("vae-mlp", preset="tiny", input_shape=(64,)).save_pretrained(tmp_path / "model")
    output = ok("explore", tmp_path / "model", "--data", tmp_path / "table.csv", "-o", tmp_path / "map.png")
    assert "wrote a pca map of 30 examples" in output
    assert Image.open(tmp_path / "map.png").size[0] > 300
    present = sorted(set(load_data(str(tmp_path / "table.csv")).test.y.tolist()))
    assert texts(drawn[0].axes[0].get_legend().get_texts()) == [f"class {c}" for c in present]


# --- a run's and a benchmark's figures -----------------------------------------------------------
def test_a_runs_samples_are_labelled_by_the_class_names_of_its_data(tmp_path, drawn):
    """The trainer's samples.png, and `vaezoo sample RUN` later, name the rows and columns by the digits."""
    small = {"hidden_dims": [16], "latent_dim": 2, "encoder": "mlp", "decoder": "mlp"}
    train_run("cvae", "digits", tmp_path / "run", overrides=small, train_flags={"epochs": 1}, progress=False)
    grids = [f for f in drawn if f.axes[0].get_images()]
    assert texts(grids[0].axes[0].get_yticklabels()) == DIGITS
    loss_curve = [f for f in drawn if not f.axes[0].get_images()][0]
    assert loss_curve.axes[0].get_xlabel() == "epoch" and loss_curve.axes[0].get_legend() is not None
    ok("sample", tmp_path / "run", "--n", 10, "-o", tmp_path / "s.png")
    assert texts(drawn[-1].axes[0].get_xticklabels()) == DIGITS


def test_a_benchmarks_figures_are_titled_and_named_by_class(tmp_path, drawn, digits_splits):
    save_model_figures("vae-mlp", vaezoo.from_pretrained("vae-mlp.digits"), digits_splits, [], tmp_path)
    samples, reconstructions, latent_map = (figure.axes[0] for figure in drawn)
    assert "samples" in samples.get_title()
    assert texts(reconstructions.get_yticklabels())[:2] == ["original", "reconstructed"]
    assert texts(latent_map.get_legend().get_texts()) == DIGITS and latent_map.get_xlabel() == "PC 1"
    assert not overlaps(extent(drawn[2], latent_map.get_legend()), extent(drawn[2], latent_map))


def test_a_benchmark_on_data_with_factors_draws_a_traversal_labelled_by_factor(tmp_path, drawn):
    """bench's per-model figures add traversal.png on shapes2d, one row per latent dim named by the factor it shares
    the most information with; a model with discrete codes has no traversal and gets none (no error)."""
    shapes = load_data("shapes2d-small")
    model = vaezoo.create_model("vae-mlp", preset="tiny", input_shape=shapes.input_shape)
    save_model_figures("vae-mlp", model, shapes, [], tmp_path)
    assert (tmp_path / "vae-mlp" / "traversal.png").exists()
    traversal = drawn[-1].axes[0]
    factor_names = set(shapes.factor_names)
    rows = texts(traversal.get_yticklabels())
    assert len(rows) == model.config.latent_dim and all(row.split(" ~ ")[1].split(" (")[0] in factor_names for row in rows)
    codes = vaezoo.create_model("vq-vae", preset="tiny", input_shape=shapes.input_shape)
    save_model_figures("vq-vae", codes, shapes, [], tmp_path)
    assert (tmp_path / "vq-vae" / "samples.png").exists() and not (tmp_path / "vq-vae" / "traversal.png").exists()
