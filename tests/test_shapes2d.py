"""The shapes2d datasets (vaezoo/data/shapes2d.py) and the factor API (vaezoo/data/factors.py): drawing, cache, splits.

    OMP_NUM_THREADS=1 python -m pytest tests/test_shapes2d.py -q

The full 737,280-image grid is only drawn here through slices of its rows; the cache, the splits and the
factor API are tested on ``shapes2d-small``.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math

import numpy as np
import pytest
import torch

from vaezoo.data import DataSplits, TensorData, describe_datasets, list_datasets, load_data, shapes2d, sources
from vaezoo.data.factors import GroundTruthData, ground_truth_data, list_ground_truth_data, sample_pairs_sharing_factor
from vaezoo.data.shapes2d import FULL, SMALL, Shapes2D, ShapesSpec, cache_paths, grid_factors, packed_rows, render
from vaezoo.errors import ConfigError, DataError

SQUARE, ELLIPSE, HEART = 0, 1, 2
PIXEL_CENTRES = np.arange(64) + 0.5


@pytest.fixture(autouse=True)
def cache_in_tmp(tmp_path, monkeypatch) -> None:
    """Every cache of this file goes to a fresh $VAEZOO_DATA, never to ~/.cache."""
    monkeypatch.setenv(sources.DATA_ENV, str(tmp_path / "data"))


def draw(*rows: tuple[int, ...]) -> np.ndarray:
    """64x64 images of the full grid's factor rows (shape, scale, orientation, pos_x, pos_y)."""
    return render(FULL, np.array(rows))


def centroid(image: np.ndarray) -> tuple[float, float]:
    """(x, y) of the pixels' mean centre, in pixels from the top-left corner."""
    ys, xs = np.nonzero(image)
    return float(np.mean(xs + 0.5)), float(np.mean(ys + 0.5))


# ---------------------------------------------------------------- what is drawn


@pytest.mark.parametrize("scale", range(6))
def test_a_square_covers_the_pixels_of_its_area(scale) -> None:
    side = 2 * 0.7 * FULL.scales[scale] * FULL.radius  # pixels
    # the 16 sub-pixel phases of the 1.25-pixel position step, upright and turned by 27 degrees
    images = draw(*[(SQUARE, scale, orientation, x, y) for orientation in (0, 3) for x in range(4) for y in range(4)])
    counts = images.sum(axis=(1, 2))
    assert np.all(np.abs(counts - side**2) <= 2 * side + 2)  # at most one pixel row and column more or less
    assert abs(counts.mean() - side**2) <= 0.02 * side**2 + 1  # on average the area itself


@pytest.mark.parametrize(("shape", "unit_area"), [
    (ELLIPSE, math.pi * 1.0 * 0.625),
    # the heart curve (x^2 + y^2 - 1)^3 <= x^2 y^3 integrated on a fine grid, shrunk by the 1.375 zoom
    (HEART, None),
])
def test_the_ellipse_and_the_heart_cover_their_areas(shape, unit_area) -> None:
    if unit_area is None:
        grid = np.linspace(-1.5, 1.5, 2001)
        x, y = np.meshgrid(grid, grid)
        unit_area = ((x * x + y * y - 1) ** 3 <= x * x * y**3).mean() * 3.0**2 / 1.375**2
    for scale in (0, 5):
        images = draw(*[(shape, scale, orientation, x, 8) for orientation in (0, 7, 13) for x in range(4)])
        area = unit_area * (FULL.scales[scale] * FULL.radius) ** 2
        assert abs(images.sum(axis=(1, 2)).mean() - area) <= 0.03 * area


def test_a_square_turned_by_90_degrees_is_the_same_image() -> None:
    quarter = FULL.orientations // 4  # 10 steps of 9 degrees
    rows = [(scale, k, x, y) for scale in range(6) for k in range(quarter) for x, y in ((0, 0), (7, 20), (31, 31))]
    for turns in (1, 2, 3):
        same = draw(*[(SQUARE, s, k, x, y) for s, k, x, y in rows])
        turned = draw(*[(SQUARE, s, k + turns * quarter, x, y) for s, k, x, y in rows])
        assert np.array_equal(same, turned)
    ellipses = draw(*[(ELLIPSE, s, k, x, y) for s, k, x, y in rows])
    assert np.array_equal(ellipses, draw(*[(ELLIPSE, s, k + 2 * quarter, x, y) for s, k, x, y in rows]))  # 180 degrees
    assert not np.array_equal(ellipses, draw(*[(ELLIPSE, s, k + quarter, x, y) for s, k, x, y in rows]))  # not 90
    hearts = draw(*[(HEART, s, k, x, y) for s, k, x, y in rows])
    assert not np.array_equal(hearts, draw(*[(HEART, s, k + 2 * quarter, x, y) for s, k, x, y in rows]))


def test_the_heart_is_mirror_symmetric_about_its_axis_and_upright_at_orientation_0() -> None:
    last = FULL.positions - 1
    for scale in range(6):
        for x in range(FULL.positions // 2):
            left, right = draw((HEART, scale, 0, x, 9), (HEART, scale, 0, last - x, 9))
            assert np.array_equal(left[:, ::-1], right)  # mirrored about the vertical axis: the mirrored position
            turned, back = draw((HEART, scale, 3, x, 9), (HEART, scale, FULL.orientations - 3, last - x, 9))
            assert np.array_equal(turned[:, ::-1], back)  # a mirror turns +27 degrees into -27
            assert not np.array_equal(turned[:, ::-1], draw((HEART, scale, 3, last - x, 9))[0])
    heart = draw((HEART, 5, 0, 15, 15))[0]
    centre = int(FULL.centres()[15])  # a pixel edge: rows above it are the top half
    assert heart[:centre].sum() > 1.2 * heart[centre:].sum()  # the lobes are on top, the tip below
    upside_down = draw((HEART, 5, FULL.orientations // 2, 16, 16))[0]  # 180 degrees, centre mirrored through (32, 32)
    assert np.array_equal(heart[::-1, ::-1], upside_down)


@pytest.mark.parametrize("orientation", [0, 3, 5])
def test_positions_move_the_centroid_by_the_position_step(orientation) -> None:
    expected = 64 / 2 + (np.arange(32) - 15.5) * 1.25  # 12.625 .. 51.375 pixels, 1.25 apart
    along_x = draw(*[(SQUARE, 2, orientation, k, 16) for k in range(32)])
    along_y = draw(*[(SQUARE, 2, orientation, 16, k) for k in range(32)])
    for k in range(32):  # sampling on the pixel grid moves an edge by at most half a pixel
        assert centroid(along_x[k]) == pytest.approx((expected[k], expected[16]), abs=0.5)
        assert centroid(along_y[k]) == pytest.approx((expected[16], expected[k]), abs=0.5)  # pos_y grows downwards
    for k in range(28):  # 4 steps are 5 whole pixels: the same sub-pixel phase, so exactly the image shifted
        assert np.array_equal(np.roll(along_x[k], 5, axis=1), along_x[k + 4])
        assert np.array_equal(np.roll(along_y[k], 5, axis=0), along_y[k + 4])
    errors = [centroid(image)[0] - expected[k] for k, image in enumerate(along_x)]
    assert abs(np.mean(errors)) < 0.1  # over the four phases the grid's rounding cancels


def test_every_shape_stays_inside_the_image() -> None:
    corners = [(shape, 5, o, x, y) for shape in range(3) for o in range(0, 40, 3) for x in (0, 31) for y in (0, 31)]
    images = draw(*corners)
    assert images.sum(axis=(1, 2)).min() > 200  # nothing cut off at the extreme positions
    border = images[:, 0].sum() + images[:, -1].sum() + images[:, :, 0].sum() + images[:, :, -1].sum()
    assert border == 0


# ---------------------------------------------------------------- the full grid, through slices


def test_the_full_grid_is_dsprites_size_in_dsprites_order() -> None:
    assert FULL.factor_sizes == (3, 6, 40, 32, 32) and FULL.size == 737_280 == 3 * 6 * 40 * 32 * 32
    assert grid_factors(FULL, np.array([0, 1, 32, 1024, 40 * 1024, FULL.size - 1])).tolist() == [
        [0, 0, 0, 0, 0], [0, 0, 0, 0, 1], [0, 0, 0, 1, 0], [0, 0, 1, 0, 0], [0, 1, 0, 0, 0], [2, 5, 39, 31, 31]]
    for start in (0, 400_000, FULL.size - 300):
        packed = packed_rows(FULL, start, start + 300)  # what the cache writer writes, 512 bytes an image
        assert packed.shape == (300, 64, 8) and packed.dtype == np.uint8
        drawn = render(FULL, grid_factors(FULL, np.arange(start, start + 300)))
        assert np.array_equal(np.unpackbits(packed, axis=-1).astype(bool), drawn)
        assert len({image.tobytes() for image in drawn}) > 250  # neighbouring rows differ (a square repeats at 90 deg)


def test_a_spec_whose_shapes_leave_the_image_is_refused() -> None:
    with pytest.raises(ConfigError, match="leave"):
        ShapesSpec("too-big", 32, (1.0,), 8, 8, 2.0, 12.0, subset=None)
    with pytest.raises(ConfigError, match="multiples"):
        ShapesSpec("odd", 30, (1.0,), 6, 4, 1.0, 4.0, subset=None)


# ---------------------------------------------------------------- the cache


def test_drawing_is_deterministic_and_the_cache_holds_the_same_bits(tmp_path, monkeypatch) -> None:
    first = load_data("shapes2d-small", seed=3)
    bits, meta = cache_paths(SMALL, tmp_path / "data" / "shapes2d")
    written = bits.read_bytes()
    assert written == packed_rows(SMALL, 0, SMALL.size).tobytes() == packed_rows(SMALL, 0, SMALL.size).tobytes()
    assert json.loads(meta.read_text())["bytes"] == len(written) == SMALL.size * 32 * 4
    monkeypatch.setattr(shapes2d, "_VERIFIED", set())  # as in a new process: the sha256 is checked again
    monkeypatch.setattr(shapes2d, "_write_cache", lambda *args: pytest.fail("a sound cache was drawn again"))
    again = load_data("shapes2d-small", seed=3)
    for part, other in zip((first.train, first.val, first.test), (again.train, again.val, again.test)):
        assert torch.equal(part.x, other.x) and torch.equal(part.factors, other.factors)
        assert torch.equal(part.x.bool(), torch.from_numpy(render(SMALL, part.factors.numpy())).unsqueeze(1))
    assert bits.read_bytes() == written


@pytest.mark.parametrize("damage", ["flip a byte", "truncate", "delete the json", "garble the json", "another spec"])
def test_a_damaged_cache_is_detected_and_drawn_again(tmp_path, monkeypatch, caplog, damage) -> None:
    before = load_data("shapes2d-small")
    bits, meta = cache_paths(SMALL, tmp_path / "data" / "shapes2d")
    good = bits.read_bytes()
    if damage == "flip a byte":
        bits.write_bytes(good[:1000] + bytes([good[1000] ^ 0x10]) + good[1001:])
    elif damage == "truncate":
        bits.write_bytes(good[: len(good) // 2])
    elif damage == "delete the json":
        meta.unlink()
    elif damage == "garble the json":
        meta.write_text("{not json")
    else:
        record = json.loads(meta.read_text())
        meta.write_text(json.dumps({**record, "spec": {**record["spec"], "radius": 6.0}}))
    monkeypatch.setattr(shapes2d, "_VERIFIED", set())
    with caplog.at_level(logging.WARNING, logger="vaezoo.data.shapes2d"):
        after = load_data("shapes2d-small")
    assert bits.read_bytes() == good and json.loads(meta.read_text())["spec"]["radius"] == SMALL.radius
    assert torch.equal(before.train.x, after.train.x)
    if damage != "delete the json":  # a missing cache is simply written, without a warning
        assert "drawing it again" in caplog.text
    assert not list(bits.parent.glob("*.tmp"))  # no temporary file left behind


def test_an_unwritable_cache_folder_falls_back_to_drawing(monkeypatch, caplog) -> None:
    def refuse(spec, folder):
        raise PermissionError(13, "Permission denied", str(folder))

    monkeypatch.setattr(shapes2d, "_write_cache", refuse)
    with caplog.at_level(logging.WARNING, logger="vaezoo.data.shapes2d"):
        splits = load_data("shapes2d-small")
    assert "drawing images on demand" in caplog.text
    assert torch.equal(splits.test.x.bool(), torch.from_numpy(render(SMALL, splits.test.factors.numpy())).unsqueeze(1))


def test_the_cache_folder_follows_data_dir_then_vaezoo_data(tmp_path, monkeypatch) -> None:
    assert shapes2d.cache_folder() == tmp_path / "data" / "shapes2d"
    assert shapes2d.cache_folder(tmp_path / "mine") == tmp_path / "mine" / "shapes2d"
    load_data("shapes2d-small", data_dir=tmp_path)
    assert cache_paths(SMALL, tmp_path / "shapes2d")[0].exists()
    monkeypatch.delenv(sources.DATA_ENV)
    assert shapes2d.cache_folder() == shapes2d.CACHE_HOME.expanduser() / "shapes2d"
    assert shapes2d.DATA_ENV == sources.DATA_ENV


# ---------------------------------------------------------------- load_data and the factor table


def test_load_data_shapes2d_small() -> None:
    assert {"shapes2d", "shapes2d-small"} <= set(list_datasets())
    assert "737,280" in describe_datasets()["shapes2d"]
    splits = load_data("shapes2d-small", seed=0)
    assert splits.summary() == (
        "shapes2d-small: train 3686, val 461, test 461, shape (1, 32, 32), 3 classes, "
        "factors shape=3 scale=3 orientation=8 pos_x=8 pos_y=8 (from vaezoo.data.shapes2d, drawing v1)")
    assert splits.class_names == ["square", "ellipse", "heart"] and splits.num_classes == 3
    assert splits.factor_names == ("shape", "scale", "orientation", "pos_x", "pos_y")
    assert splits.factor_sizes == (3, 3, 8, 8, 8) and SMALL.size == 4608
    assert splits.train.x.dtype == torch.float32 and set(splits.train.x.unique().tolist()) == {0.0, 1.0}


def test_the_factors_stay_row_aligned_with_the_images_through_splits_and_slices() -> None:
    splits = load_data("shapes2d-small", seed=5)
    flat = []
    for part in (splits.train, splits.val, splits.test):
        assert torch.equal(part.x.bool().squeeze(1), torch.from_numpy(render(SMALL, part.factors.numpy())))
        assert torch.equal(part.y, part.factors[:, 0])
        flat.append(np.ravel_multi_index(tuple(part.factors.numpy().T), SMALL.factor_sizes))
    assert sorted(np.concatenate(flat).tolist()) == list(range(SMALL.size))  # disjoint, and the whole grid
    order = torch.randperm(len(splits.train))[:50]
    for piece in (splits.train[order], splits.train[10:40], splits.to("cpu").train[order]):
        assert torch.equal(piece.x.bool().squeeze(1), torch.from_numpy(render(SMALL, piece.factors.numpy())))
        assert torch.equal(piece.y, piece.factors[:, 0])
    with pytest.raises(DataError, match="factors"):
        dataclasses.replace(splits.train, x=splits.train.x[:10], y=splits.train.y[:10])  # factors left at full length
    with pytest.raises(DataError, match="factors"):
        TensorData(torch.rand(3, 2), None, torch.zeros(3, 5))  # float factors
    with pytest.raises(DataError, match="factor"):
        dataclasses.replace(splits, factor_names=("shape",))
    assert load_data("digits").factor_names is None and load_data("digits").train.factors is None


def test_the_first_rows_of_every_split_are_a_fair_sample_of_the_factors() -> None:
    """The bench's probe and NLL take a split's first N rows; in the grid's own order (shape slowest) the first
    third of a split was all squares, and the probe's logistic regression failed with one class."""
    splits = load_data("shapes2d-small", seed=0)
    for part in (splits.train, splits.val, splits.test):
        first = part.factors[:150]
        for factor, size in enumerate(SMALL.factor_sizes):
            assert len(first[:, factor].unique()) == size, (factor, first[:, factor].tolist())
        shares = torch.bincount(first[:, 0], minlength=3) / len(first)
        assert shares.min() > 0.2  # about a third each
    assert torch.equal(load_data("shapes2d-small", seed=0).train.factors, splits.train.factors)  # still fixed


def test_the_full_dataset_draws_a_fixed_subset() -> None:
    order = torch.randperm(FULL.size, generator=torch.Generator().manual_seed(shapes2d.SUBSET_SEED))
    rows = order[: FULL.subset].numpy()
    assert FULL.subset == 70_000 and len(np.unique(rows)) == 70_000
    # every factor value appears in the subset (2,000 draws or more of each pos_x / pos_y value)
    assert all(len(np.unique(column)) == size for column, size in zip(grid_factors(FULL, rows).T, FULL.factor_sizes))


# ---------------------------------------------------------------- the factor API


class CountingFactors:
    """A GroundTruthData whose 'image' is its factor row: what sample_pairs_sharing_factor drew can be read back."""

    factor_names = ("a", "b", "c")
    factor_sizes = (2, 5, 7)
    observation_shape = (3,)

    def sample_factors(self, n: int, generator: np.random.Generator) -> np.ndarray:
        return generator.integers(0, np.asarray(self.factor_sizes), size=(n, 3), dtype=np.int64)

    def observations(self, factors: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(factors / np.asarray(self.factor_sizes, dtype=np.float64)).float()


@pytest.mark.parametrize("factor", [0, 1, 2])
def test_pairs_share_exactly_the_chosen_factor(factor) -> None:
    data = CountingFactors()
    assert isinstance(data, GroundTruthData)
    first, second = sample_pairs_sharing_factor(data, 6000, factor, np.random.default_rng(1))
    assert torch.equal(first[:, factor], second[:, factor])
    for other in {0, 1, 2} - {factor}:  # independent: equal only by chance, 1 / size of the time
        agree = (first[:, other] == second[:, other]).float().mean().item()
        assert agree == pytest.approx(1 / data.factor_sizes[other], abs=0.03)
    again = sample_pairs_sharing_factor(data, 6000, factor, np.random.default_rng(1))
    assert torch.equal(again[0], first) and torch.equal(again[1], second)


def test_pairs_of_shapes2d_images_share_the_factor(monkeypatch) -> None:
    data = ground_truth_data("shapes2d-small")
    assert isinstance(data, GroundTruthData) and data.observation_shape == (1, 32, 32)
    asked: list[np.ndarray] = []
    observations = data.observations
    monkeypatch.setattr(data, "observations", lambda factors: asked.append(factors.copy()) or observations(factors))
    first, second = sample_pairs_sharing_factor(data, 200, 2, np.random.default_rng(0))
    assert np.array_equal(asked[0][:, 2], asked[1][:, 2]) and (asked[0][:, 0] != asked[1][:, 0]).any()
    assert torch.equal(first.bool().squeeze(1), torch.from_numpy(render(SMALL, asked[0])))
    assert torch.equal(second.bool().squeeze(1), torch.from_numpy(render(SMALL, asked[1])))
    with pytest.raises(ConfigError, match="factor=5"):
        sample_pairs_sharing_factor(data, 4, 5, np.random.default_rng(0))
    with pytest.raises(ConfigError, match="n=0"):
        sample_pairs_sharing_factor(data, 0, 1, np.random.default_rng(0))


def test_ground_truth_data_draws_any_combination_of_the_whole_grid() -> None:
    assert list_ground_truth_data() == ["shapes2d", "shapes2d-small"]
    data = ground_truth_data("shapes2d-small")
    factors = data.sample_factors(20_000, np.random.default_rng(0))
    assert factors.dtype == np.int64 and factors.shape == (20_000, 5)
    for column, size in zip(factors.T, data.factor_sizes):  # uniform over each factor's values
        assert np.bincount(column, minlength=size) / 20_000 == pytest.approx(np.full(size, 1 / size), abs=0.02)
    images = data.observations(factors[:500])
    assert images.shape == (500, 1, 32, 32) and images.dtype == torch.float32
    assert torch.equal(images, Shapes2D(SMALL).observations(factors[:500]))  # the cache holds what is drawn
    with pytest.raises(ConfigError, match="orientation=8"):
        data.observations(np.array([[0, 0, 8, 0, 0]]))
    with pytest.raises(DataError, match="did you mean 'shapes2d'"):
        ground_truth_data("shapes2")
    assert isinstance(load_data("shapes2d-small"), DataSplits)
