"""The shapes2d datasets: dSprites-like images of a square, an ellipse and a heart with known factors, drawn and cached here.

dSprites (Matthey, Higgins, Hassabis and Lerchner 2017, github.com/deepmind/dsprites-dataset; its README is mirrored
in tensorflow/datasets ``tensorflow_datasets/datasets/dsprites/README.md``) holds every combination of 3 shapes,
6 scales in [0.5, 1], 40 orientations, 32 x and 32 y positions once: 737,280 binary 64x64 images. It cannot be
downloaded here, so ``shapes2d`` draws the same grid itself. The factor order and the flat image index
``np.ravel_multi_index(factors.T, sizes)`` (pos_y varies fastest) follow disentanglement_lib
(google-research/disentanglement_lib, ``data/ground_truth/dsprites.py``: ``factor_bases``, and ``util.py``:
uniform ``sample_latent_factors``), without dSprites' constant colour factor.

Drawing: each pixel centre ``p`` (pixel units, y up) is mapped to shape coordinates
``(u, v) = R(-theta) (p - c) / (scale * radius)`` and tested against an implicit inside-test, batched over images:
square ``max(|u|, |v|) <= 0.7``; ellipse ``u^2 + (v / 0.625)^2 <= 1``; heart ``(a^2 + b^2 - 1)^3 <= a^2 b^3`` with
``(a, b) = 1.375 (u, v) + (0, 0.125)`` (the classic implicit heart curve, upright at orientation 0). All three fit in
the unit disc and cover about 1.96 units^2. Only the window of ``2 * radius + 2`` pixels around each centre is
evaluated. Positions are exact binary fractions and the rotation table is built by exact quarter turns, so a
square turned by 90 degrees and a heart mirrored about its axis give the very same bits. Deviations from
dSprites: orientations are ``2 pi k / n`` for k < n (dSprites' 40 values include both 0 and 2 pi, one image twice),
and the shapes are drawn from these formulas, not dSprites' sprites. As in dSprites, a square repeats every
90 degrees and an ellipse every 180: orientation is only partly identifiable from the image.

The whole grid is cached once, bit-packed (``np.packbits``: 512 bytes a 64x64 image, 377 MB for ``shapes2d``),
in ``data_dir/shapes2d``, ``$VAEZOO_DATA/shapes2d`` or ``~/.cache/vaezoo/shapes2d``, written through a temporary
file and ``os.replace``; a json beside it records its size and sha256, and a cache that does not match is drawn
again. Where no folder can be written, the images are drawn on demand instead (the same bits).

>>> from vaezoo.data import load_data
>>> load_data("shapes2d-small").summary()  # doctest: +ELLIPSIS
'shapes2d-small: train 3686, val 461, test 461, shape (1, 32, 32), 3 classes, factors shape=3 scale=3 ...'
>>> images = render(SMALL, np.array([[2, 2, 0, 3, 4]]))   # (1, 32, 32) bool: a heart at scale 1, upright
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError
from .splits import DataSplits, TensorData, split_indices

logger = logging.getLogger(__name__)

DATA_ENV = "VAEZOO_DATA"  # the same variable as sources.DATA_ENV (sources imports this module, not the reverse)
CACHE_HOME = Path("~/.cache/vaezoo")  # where the cache goes when neither data_dir nor $VAEZOO_DATA is given
FOLDER = "shapes2d"  # the cache subfolder of both variants
RENDER_VERSION = 1  # bump whenever the drawing changes: older caches are then drawn again
FACTOR_NAMES = ("shape", "scale", "orientation", "pos_x", "pos_y")
SHAPE_NAMES = ("square", "ellipse", "heart")  # class ids 0, 1, 2 = factor "shape"
SUBSET_SEED = 0  # fixes which grid rows load_data("shapes2d") uses, whatever the split seed
CHUNK = 8192  # images drawn at once: about 100 MB of temporaries at 64x64
SQUARE_HALF_SIDE = 0.7  # corners at radius 0.99
ELLIPSE_MINOR = 0.625  # semi-axes (1, 0.625): area 1.96 like the square's
HEART_ZOOM, HEART_SHIFT = 1.375, 0.125  # the heart curve spans x in [-1.14, 1.14], y in [-1, 1.24]: centred, radius 0.97


@dataclass(frozen=True)
class ShapesSpec:
    """The factor grid of one variant and how big it is drawn.

    >>> FULL.factor_sizes, FULL.size
    ((3, 6, 40, 32, 32), 737280)
    """

    name: str  # the load_data name
    resolution: int  # images are (1, resolution, resolution); a multiple of 8 (rows pack into bytes)
    scales: tuple[float, ...]  # multipliers of ``radius``
    orientations: int  # angles 2 pi k / orientations, counter-clockwise as displayed; a multiple of 4 (quarter turns)
    positions: int  # values of pos_x and of pos_y
    position_step: float  # pixels between neighbouring positions; a multiple of 1/8 keeps centres exact
    radius: float  # pixels: a shape at scale 1 fits in a disc of this radius
    subset: int | None  # rows load_data draws from the grid (None: the whole grid)

    def __post_init__(self) -> None:
        centres = self.centres()
        if self.resolution % 8 or self.orientations % 4 or self.position_step * 8 != round(self.position_step * 8):
            raise ConfigError(f"{self.name}: resolution {self.resolution} and orientations {self.orientations} must be "
                              f"multiples of 8 and 4, position_step {self.position_step} a multiple of 1/8")
        if centres[0] - self.radius < 0 or centres[-1] + self.radius > self.resolution:
            raise ConfigError(f"{self.name}: shapes of radius {self.radius} at centres {centres[0]}..{centres[-1]} leave "
                              f"the {self.resolution}-pixel image; lower radius, positions or position_step")

    @property
    def factor_sizes(self) -> tuple[int, ...]:
        return (len(SHAPE_NAMES), len(self.scales), self.orientations, self.positions, self.positions)

    @property
    def size(self) -> int:
        return math.prod(self.factor_sizes)

    def centres(self) -> np.ndarray:
        """Pixel coordinates of the position values, symmetric about the image centre: (positions,) float64."""
        return self.resolution / 2 + (np.arange(self.positions) - (self.positions - 1) / 2) * self.position_step


# 70,000 rows (as many as MNIST): 1.15 GB as float32, where the 737,280 would take 12 GB; each row still has close
# neighbours in every factor. 56k/7k/7k with load_data's default fractions.
FULL = ShapesSpec("shapes2d", 64, (0.5, 0.6, 0.7, 0.8, 0.9, 1.0), 40, 32, 1.25, 12.0, subset=70_000)
# 4,608 rows at 32x32 for tests and --quick: drawn and cached in about 0.1 s.
SMALL = ShapesSpec("shapes2d-small", 32, (0.5, 0.75, 1.0), 8, 8, 2.0, 7.0, subset=None)
SPECS = {spec.name: spec for spec in (FULL, SMALL)}


# ---------------------------------------------------------------- drawing


def rotation_table(orientations: int) -> np.ndarray:
    """(orientations, 2) float32 (cos, sin) of 2 pi k / n; entries a quarter turn apart are exact (-sin, cos) of each other."""
    quarter = orientations // 4
    table = np.empty((orientations, 2))
    for k in range(orientations):
        cos, sin = math.cos(2 * math.pi * (k % quarter) / orientations), math.sin(2 * math.pi * (k % quarter) / orientations)
        for _ in range(k // quarter):
            cos, sin = -sin, cos
        table[k] = cos, sin
    return table.astype(np.float32)


def render(spec: ShapesSpec, factors: np.ndarray) -> np.ndarray:
    """The images of ``factors`` ((n, 5) int indices in ``spec``'s grid): (n, resolution, resolution) bool, row 0 on top.

    >>> int(render(SMALL, np.array([[0, 2, 0, 3, 3]])).sum())   # a square of side 1.4 * 7 pixels: about 96
    100
    """
    factors = check_factors(spec, factors)
    side = spec.resolution
    out = np.zeros((len(factors), side, side), dtype=bool)
    for begin in range(0, len(factors), CHUNK):
        _render_into(spec, factors[begin:begin + CHUNK], out[begin:begin + CHUNK])
    return out


def _render_into(spec: ShapesSpec, factors: np.ndarray, out: np.ndarray) -> None:
    side, window = spec.resolution, math.ceil(2 * spec.radius) + 2
    shape, scale, orientation, pos_x, pos_y = factors.T
    centres = spec.centres()
    cx, cy = centres[pos_x], centres[pos_y]  # (n,) pixel coordinates, exact binary fractions
    left = np.clip(np.floor(cx - spec.radius).astype(np.int64), 0, side - window)  # window origins, inside the image
    top = np.clip(np.floor(cy - spec.radius).astype(np.int64), 0, side - window)
    steps = np.arange(window)
    dx = ((left[:, None] + steps) + 0.5 - cx[:, None]).astype(np.float32)  # (n, W) pixel centre - centre, exact
    dy = (cy[:, None] - ((top[:, None] + steps) + 0.5)).astype(np.float32)  # (n, W), y up
    inverse = (1.0 / (np.asarray(spec.scales)[scale] * spec.radius)).astype(np.float32)
    cos_sin = rotation_table(spec.orientations)[orientation] * inverse[:, None]  # (n, 2)
    cos, sin = cos_sin[:, 0, None, None], cos_sin[:, 1, None, None]
    u = cos * dx[:, None, :] + sin * dy[:, :, None]  # (n, W, W): R(-theta) (p - c) / (scale * radius)
    v = cos * dy[:, :, None] - sin * dx[:, None, :]
    inside = np.empty(u.shape, dtype=bool)
    for shape_id, test in enumerate((_square, _ellipse, _heart)):
        rows = shape == shape_id
        if rows.any():
            inside[rows] = test(u[rows], v[rows])
    image_rows = np.arange(len(factors))[:, None, None]
    out[image_rows, top[:, None, None] + steps[:, None], left[:, None, None] + steps] = inside


def _square(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.maximum(np.abs(u), np.abs(v)) <= SQUARE_HALF_SIDE


def _ellipse(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    w = v / np.float32(ELLIPSE_MINOR)
    return u * u + w * w <= 1


def _heart(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    a, b = u * np.float32(HEART_ZOOM), v * np.float32(HEART_ZOOM) + np.float32(HEART_SHIFT)
    c = a * a + b * b - 1
    return c * c * c <= a * a * b * b * b  # products only: the same bits on every machine


def check_factors(spec: ShapesSpec, factors: np.ndarray) -> np.ndarray:
    """``factors`` as (n, 5) int64, or ConfigError naming the first value outside ``spec``'s grid."""
    array = np.asarray(factors)
    sizes = np.asarray(spec.factor_sizes)
    if array.ndim != 2 or array.shape[1] != len(sizes) or (array.size and not np.issubdtype(array.dtype, np.integer)):
        raise ConfigError(f"factors of {spec.name} must be (n, {len(sizes)}) integer indices ({', '.join(FACTOR_NAMES)}); "
                          f"got {array.dtype} {array.shape}")
    bad = np.argwhere((array < 0) | (array >= sizes))
    if len(bad):
        row, column = bad[0]
        raise ConfigError(f"factor {FACTOR_NAMES[column]}={array[row, column]} (row {row}) is outside 0..{sizes[column] - 1} "
                          f"of {spec.name}")
    return array.astype(np.int64)


def grid_factors(spec: ShapesSpec, index: np.ndarray) -> np.ndarray:
    """The factors (n, 5) int64 of flat grid rows ``index`` (pos_y varies fastest, as in dSprites)."""
    return np.stack(np.unravel_index(np.asarray(index, dtype=np.int64), spec.factor_sizes), axis=1)


def packed_rows(spec: ShapesSpec, start: int, stop: int) -> np.ndarray:
    """Grid rows ``start..stop-1`` drawn and bit-packed: (n, resolution, resolution // 8) uint8, the cache's layout."""
    return np.packbits(render(spec, grid_factors(spec, np.arange(start, stop))), axis=-1)


def unpack(packed: np.ndarray, spec: ShapesSpec) -> torch.Tensor:
    """Packed rows (n, R, R // 8) as a (n, 1, R, R) float32 tensor of 0 and 1."""
    bits = np.unpackbits(np.asarray(packed), axis=-1)  # (n, R, R) uint8
    return torch.from_numpy(bits).to(torch.float32).unsqueeze(1)


# ---------------------------------------------------------------- the cache


def cache_folder(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where the cache lives: ``data_dir`` (or its ``shapes2d/``), else ``$VAEZOO_DATA/shapes2d``, else ``~/.cache/vaezoo/shapes2d``."""
    if data_dir is not None:
        folder = Path(data_dir).expanduser()
        return folder if any(folder.glob(f"{FOLDER}*.json")) else folder / FOLDER
    root = Path(os.environ[DATA_ENV]).expanduser() if os.environ.get(DATA_ENV) else CACHE_HOME.expanduser()
    return root / FOLDER


def cache_paths(spec: ShapesSpec, folder: Path) -> tuple[Path, Path]:
    """(bits file, json) of ``spec`` in ``folder``."""
    stem = f"{spec.name}-{spec.resolution}px-v{RENDER_VERSION}"
    return folder / f"{stem}.bits", folder / f"{stem}.json"


_VERIFIED: set[tuple[str, int, int, int]] = set()  # (path, size, mtime_ns, inode) hashed once per process


def open_cache(spec: ShapesSpec, folder: Path) -> np.ndarray | None:
    """The cached grid of ``spec`` as a read-only memory map (size, R, R // 8), drawing and writing it first when it is
    missing or does not match its json; None when ``folder`` cannot be written (then draw on demand)."""
    bits, meta = cache_paths(spec, folder)
    problem = _cache_problem(spec, bits, meta)
    if problem is not None:
        if problem != "missing":
            logger.warning("%s: the cache %s is %s; drawing it again", spec.name, bits, problem)
        try:
            _write_cache(spec, folder)
        except OSError as error:
            logger.warning("%s: cannot write a cache in %s (%s); drawing images on demand", spec.name, folder, error)
            return None
    return np.memmap(bits, dtype=np.uint8, mode="r", shape=(spec.size, spec.resolution, spec.resolution // 8))


def _cache_problem(spec: ShapesSpec, bits: Path, meta: Path) -> str | None:
    """Why the cache cannot be used ("missing", "truncated", ...), or None when its size and sha256 match its json."""
    try:
        record = json.loads(meta.read_text(encoding="utf-8"))
        stat = bits.stat()
    except FileNotFoundError:
        return "missing"
    except (OSError, ValueError) as error:
        return f"unreadable ({error})"
    if not isinstance(record, dict) or record.get("spec") != _spec_record(spec):
        return "from another version or spec"
    if stat.st_size != _expected_bytes(spec) or record.get("bytes") != stat.st_size:
        return f"{stat.st_size} bytes where {_expected_bytes(spec)} are expected (truncated or partial)"
    key = (str(bits), stat.st_size, stat.st_mtime_ns, stat.st_ino)
    if key not in _VERIFIED:
        if _sha256(bits) != record.get("sha256"):
            return "corrupted (its sha256 differs from the one recorded)"
        _VERIFIED.add(key)
    return None


def _write_cache(spec: ShapesSpec, folder: Path) -> None:
    """Draw the whole grid into a temporary file, then move it and its json into place with ``os.replace``."""
    folder.mkdir(parents=True, exist_ok=True)
    bits, meta = cache_paths(spec, folder)
    started, digest = time.perf_counter(), hashlib.sha256()
    with tempfile.NamedTemporaryFile(dir=folder, prefix=bits.name, suffix=".tmp", delete=False) as handle:
        try:
            for begin in range(0, spec.size, CHUNK):
                block = packed_rows(spec, begin, min(begin + CHUNK, spec.size)).tobytes()
                digest.update(block)
                handle.write(block)
            handle.flush()
            os.fsync(handle.fileno())
        except BaseException:
            Path(handle.name).unlink(missing_ok=True)
            raise
    os.chmod(handle.name, 0o644)  # readable by others sharing $VAEZOO_DATA (a temporary file starts at 0600)
    os.replace(handle.name, bits)
    record = {"format": "vaezoo shapes2d cache: uint8 rows of np.packbits(image, axis=-1), flat grid order",
              "spec": _spec_record(spec), "shape": [spec.size, spec.resolution, spec.resolution // 8],
              "bytes": _expected_bytes(spec), "sha256": digest.hexdigest()}
    with tempfile.NamedTemporaryFile("w", dir=folder, prefix=meta.name, suffix=".tmp", delete=False) as handle:
        json.dump(record, handle, indent=1)
    os.chmod(handle.name, 0o644)
    os.replace(handle.name, meta)
    stat = bits.stat()
    _VERIFIED.add((str(bits), stat.st_size, stat.st_mtime_ns, stat.st_ino))
    logger.info("%s: drew %d images in %.1f s into %s", spec.name, spec.size, time.perf_counter() - started, bits)


def _spec_record(spec: ShapesSpec) -> dict[str, object]:
    return json.loads(json.dumps({**asdict(spec), "render_version": RENDER_VERSION}))  # tuples as lists, like the file


def _expected_bytes(spec: ShapesSpec) -> int:
    return spec.size * spec.resolution * spec.resolution // 8


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(2**23):
            digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------- the factor grid and load_data


class Shapes2D:
    """The whole factor grid of ``spec`` as ground-truth data (vaezoo.data.factors.GroundTruthData).

    >>> data = Shapes2D(SMALL)                                 # no folder: images drawn on demand
    >>> factors = data.sample_factors(4, np.random.default_rng(0))
    >>> data.observations(factors).shape
    torch.Size([4, 1, 32, 32])
    """

    def __init__(self, spec: ShapesSpec, folder: Path | None = None) -> None:
        self.spec = spec
        self.factor_names = FACTOR_NAMES
        self.factor_sizes = spec.factor_sizes
        self.observation_shape = (1, spec.resolution, spec.resolution)
        self._cache = None if folder is None else open_cache(spec, folder)

    def sample_factors(self, n: int, generator: np.random.Generator) -> np.ndarray:
        """(n, 5) int64 factor indices, each factor uniform over its values and independent of the others."""
        return generator.integers(0, np.asarray(self.factor_sizes), size=(n, len(self.factor_sizes)), dtype=np.int64)

    def observations(self, factors: np.ndarray) -> torch.Tensor:
        """The images of ``factors``: (n, 1, R, R) float32 of 0 and 1."""
        return unpack(self.packed(check_factors(self.spec, factors)), self.spec)

    def packed(self, factors: np.ndarray) -> np.ndarray:
        """Bit-packed images (n, R, R // 8) of ``factors``: read from the cache when there is one, else drawn."""
        if self._cache is None:
            return np.packbits(render(self.spec, factors), axis=-1)
        index = np.ravel_multi_index(tuple(factors.T), self.factor_sizes)
        order = np.argsort(index, kind="stable")  # a memory map reads sorted rows fastest
        rows = np.empty((len(index), *self._cache.shape[1:]), dtype=np.uint8)
        rows[order] = self._cache[index[order]]
        return rows


def load_splits(spec: ShapesSpec, data_dir: str | os.PathLike[str] | None, seed: int, val_fraction: float,
                test_fraction: float) -> DataSplits:
    """``spec``'s images (its fixed subset, or the whole grid) split with ``seed``; y = shape id, factors per row."""
    data = Shapes2D(spec, cache_folder(data_dir))
    # Grid rows in a fixed random order, not the grid's (shape varies slowest): a split keeps its rows in this
    # order, so its first rows (the bench's probe and NLL take the first N) are a fair sample of every factor.
    order = torch.randperm(spec.size, generator=torch.Generator().manual_seed(SUBSET_SEED))
    rows = order[:spec.subset or spec.size].numpy()
    source = f"vaezoo.data.shapes2d, drawing v{RENDER_VERSION}"
    parts = []
    for index in split_indices(len(rows), val_fraction, test_fraction, seed, source):
        factors = grid_factors(spec, rows[index.numpy()])
        x = unpack(data.packed(factors), spec)
        parts.append(TensorData(x, torch.from_numpy(factors[:, 0].copy()), torch.from_numpy(factors)))
    return DataSplits(train=parts[0], val=parts[1], test=parts[2], name=spec.name, input_shape=data.observation_shape,
                      num_classes=len(SHAPE_NAMES), class_names=list(SHAPE_NAMES), source=source,
                      factor_names=FACTOR_NAMES, factor_sizes=spec.factor_sizes)


def load_shapes2d(data_dir: str | os.PathLike[str] | None, seed: int, val_fraction: float,
                  test_fraction: float) -> DataSplits:
    """``shapes2d``: 70,000 fixed rows of the 737,280-image 64x64 grid (drawn and cached on first use)."""
    return load_splits(FULL, data_dir, seed, val_fraction, test_fraction)


def load_shapes2d_small(data_dir: str | os.PathLike[str] | None, seed: int, val_fraction: float,
                        test_fraction: float) -> DataSplits:
    """``shapes2d-small``: the whole 4,608-image 32x32 grid (3 scales, 8 orientations, 8 x 8 positions)."""
    return load_splits(SMALL, data_dir, seed, val_fraction, test_fraction)
