"""Training speed with the data streamed from disk against the data in memory, on Fashion-MNIST, side by side.

    python benchmarks/streaming.py                                        # all 60,000 training images, 3 rounds
    python benchmarks/streaming.py --threads 1 --rows 12000 --rounds 2    # a quick look

Writes Fashion-MNIST's official training images (IDX files, /usr/share/datasets/fashion-mnist or --data-dir) to
a temporary .npy and loads it twice with the same split seed (val 10%, no test split: with all 60,000 rows this is
``load_data("fashion-mnist")``'s train/val split): within the memory budget (tensors on the device, batches by index
slicing) and with a budget below its size (memory-mapped, batches read by a DataLoader with workers and pinned
memory on CUDA). Each round trains vae-mlp from the same seed on each, alternating which goes first; the figure is
the trainer's own samples/s of each epoch (training only, validation left out), the median over all epochs.
The two runs see the same batches in the same order, so the script also says whether their losses and weights
agreed bit for bit. The file was just written, so it is read from the page cache: this measures what streaming
costs the trainer, not the disk.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import positive_int, print_header  # noqa: E402

import vaezoo  # noqa: E402
from vaezoo.data import DataSplits, StreamingData, load_data, read_idx  # noqa: E402
from vaezoo.data.streaming import WORKERS_ENV, data_workers  # noqa: E402
from vaezoo.errors import VAEZooError  # noqa: E402

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=FASHION_MNIST_DIR, help="folder of Fashion-MNIST's IDX files")
    parser.add_argument("--rows", type=positive_int, default=60000, help="training images to use (the first N of the file)")
    parser.add_argument("--rounds", type=positive_int, default=3, help="alternating runs of each path")
    parser.add_argument("--epochs", type=positive_int, default=1, help="epochs per run")
    parser.add_argument("--batch-size", type=positive_int, default=128)
    parser.add_argument("--model", default="vae-mlp", help="any registered model (its default config)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--workers", type=int, help="loader worker processes of the streamed side (default: "
                                                    "$VAEZOO_DATA_WORKERS, else one per core but one, at most 4)")
    args = parser.parse_args(argv)
    if args.threads < 0 or (args.workers is not None and args.workers < 0):
        parser.error("--threads and --workers must be >= 0")
    return args


def fashion_mnist_npy(data_dir: Path, rows: int, folder: Path) -> Path:
    """The first ``rows`` official training images as an (N, 28, 28) uint8 .npy in ``folder``."""
    files = [data_dir / name for name in ("train-images-idx3-ubyte.gz", "train-images-idx3-ubyte")]
    found = next((path for path in files if path.exists()), None)
    if found is None:
        raise SystemExit(f"error: no Fashion-MNIST training images in {data_dir} (train-images-idx3-ubyte[.gz]); "
                         "install them with `apt-get install dataset-fashion-mnist` or pass --data-dir DIR")
    images = read_idx(found)[:rows]
    path = folder / "fashion-mnist-train.npy"
    np.save(path, images)
    return path


def train_once(splits: DataSplits, args: argparse.Namespace) -> tuple[list[float], list[dict], dict[str, torch.Tensor]]:
    """(samples/s of each epoch, each epoch's train terms, final weights) of one seeded run."""
    torch.manual_seed(0)
    model = vaezoo.create_model(args.model, input_shape=splits.input_shape)
    result = vaezoo.train(model, splits, epochs=args.epochs, batch_size=args.batch_size, device=args.device,
                          progress=False, seed=0)
    weights = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    return [r["samples_per_s"] for r in result.history], [r["train"] for r in result.history], weights


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.workers is not None:
        os.environ[WORKERS_ENV] = str(args.workers)
    print_header("streaming vs in-memory training on Fashion-MNIST")
    with tempfile.TemporaryDirectory() as folder:
        path = fashion_mnist_npy(args.data_dir, args.rows, Path(folder))
        float32_mib = path.stat().st_size * 4 / 2**20  # uint8 on disk, 4 bytes a value in memory
        split = {"val_fraction": 0.1, "test_fraction": 0.0, "seed": 0}
        in_memory = load_data(path, memory_budget_mb=2 * float32_mib + 1, **split)
        streamed = load_data(path, memory_budget_mb=float32_mib / 2, **split)
        assert not isinstance(in_memory.train, StreamingData) and isinstance(streamed.train, StreamingData)
        print(f"data: {len(in_memory.train):,} training images of {in_memory.input_shape} ({float32_mib:,.1f} MiB as "
              f"float32); streamed with a budget of {float32_mib / 2:,.1f} MiB, loader workers: {data_workers()}"
              f"{', pinned memory' if torch.cuda.is_available() else ''}")
        print(f"model: {args.model} (default config), batch {args.batch_size}, {args.epochs} epoch(s) a run, "
              f"{args.rounds} rounds, device {args.device}")
        speeds: dict[str, list[float]] = {"in memory": [], "streamed": []}
        identical = True
        for round_index in range(args.rounds):
            order = [("in memory", in_memory), ("streamed", streamed)]
            runs = {name: train_once(splits, args) for name, splits in (order if round_index % 2 == 0 else order[::-1])}
            for name, (per_epoch, _, _) in runs.items():
                speeds[name] += per_epoch
            (_, terms_a, weights_a), (_, terms_b, weights_b) = runs["in memory"], runs["streamed"]
            identical &= terms_a == terms_b and all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)
    print()
    print(f"{'path':<10}  {'samples/s':>10}  (median of {len(speeds['streamed'])} epochs; each epoch's figures)")
    for name, values in speeds.items():
        print(f"{name:<10}  {statistics.median(values):>10,.0f}  ({', '.join(f'{v:,.0f}' for v in values)})")
    ratio = statistics.median(speeds["streamed"]) / statistics.median(speeds["in memory"])
    print(f"ratio streamed / in memory: {ratio:.2f}")
    print(f"same losses and weights on both paths: {'yes' if identical else 'NO'}")


if __name__ == "__main__":
    try:
        main()
    except VAEZooError as error:
        raise SystemExit(f"error: {error}") from None
