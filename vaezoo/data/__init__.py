"""The data layer: built-in datasets and user files as fixed, seeded train/val/test tensors in [0, 1].

Whole splits are plain tensors, so a trainer moves them to the device once and takes batches
by index slicing.

>>> from vaezoo.data import load_data, list_datasets, binarize
>>> list_datasets()
['digits', 'fashion-mnist', 'fashion-mnist-binarized', 'mnist', 'shapes2d', 'shapes2d-small']
>>> splits = load_data("digits", seed=0)          # bundled with scikit-learn: always works
>>> splits.train.x.shape, splits.num_classes
(torch.Size([1437, 1, 8, 8]), 10)
>>> splits = load_data("fashion-mnist")            # doctest: +SKIP
>>> splits = load_data("my_images/", data_dir="~/data", seed=3)  # doctest: +SKIP

Built-ins: ``digits`` (scikit-learn, bundled), ``fashion-mnist`` (IDX files from ``data_dir``,
``$VAEZOO_DATA/fashion-mnist`` or Debian's ``/usr/share/datasets/fashion-mnist``), ``mnist``
(IDX files from ``data_dir`` or ``$VAEZOO_DATA/mnist``), ``shapes2d`` and ``shapes2d-small`` (drawn here, with
their generative factors; :func:`ground_truth_data` gives the whole factor grid). User data: ``.npy`` / ``.npz``
(keys ``x`` and optional ``y``), ``.csv`` / ``.tsv`` tables, folders of PNG/JPEG images. A ``.npy`` or image folder
whose float32 samples exceed the memory budget (``memory_budget_mb``, ``$VAEZOO_MEMORY_BUDGET_MB``, default a
quarter of memory) is streamed from disk as :class:`StreamingData` splits, with the same split and values.
"""
from __future__ import annotations

from .budget import MEMORY_BUDGET_ENV
from .factors import GroundTruthData, ground_truth_data, list_ground_truth_data, sample_pairs_sharing_factor
from .idx import read_idx, write_idx
from .sources import DATA_ENV, FASHION_MNIST_CLASSES, describe_datasets, list_datasets, load_data
from .splits import DataSplits, TensorData, binarize, fixed_binarize, split_indices
from .streaming import StreamedArray, StreamingData

__all__ = [
    "load_data",
    "list_datasets",
    "describe_datasets",
    "DataSplits",
    "TensorData",
    "StreamingData",
    "StreamedArray",
    "binarize",
    "fixed_binarize",
    "split_indices",
    "GroundTruthData",
    "ground_truth_data",
    "list_ground_truth_data",
    "sample_pairs_sharing_factor",
    "read_idx",
    "write_idx",
    "DATA_ENV",
    "MEMORY_BUDGET_ENV",
    "FASHION_MNIST_CLASSES",
]
